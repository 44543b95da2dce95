"""RSVQA (LR / HR) question answering in its released JSON format.

Three files per split, `{prefix}_split_{split}_{questions,answers,images}.json`, linked by ids:
an image lists its question ids, a question names its image (`img_id`) and answer ids. Only
entries marked `active` belong to the split (the release keeps inactive ones so that ids stay
dense). The real prefixes are `LR` (Sentinel-2, `Images_LR/{id}.tif`) and `USGS` (the HR set,
`Data/{id}.tif`); the synthetic generator writes `SYN` with `images/{id}.png` and its JSON in
`rsvqa/`, so the JSON files are looked for in `root` and then in `root/rsvqa`.

Each question gets a semantic level (scene / region / object): its own `level` key when present
(our extension), else the type's default, so the model's level experts can be evaluated per level.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from torch.utils.data import Dataset

from geostrata.data.images import BandPolicy, ImageRecords
from geostrata.data.problems import Problems, attempt
from geostrata.errors import AnnotationError, ConfigError, DatasetNotFoundError
from geostrata.levels import VISUAL_LEVELS
from geostrata.textio import read_utf8

logger = logging.getLogger(__name__)

LEVELS = VISUAL_LEVELS
DEFAULT_LEVELS: Mapping[str, str] = MappingProxyType(
    {
        "presence": "object",
        "count": "object",
        "comp": "object",
        "rural_urban": "scene",
        "scene": "scene",
        "area": "region",
        "land_cover": "region",
    }
)
IMAGE_DIRS: Mapping[str, str] = MappingProxyType(
    {"LR": "Images_LR", "USGS": "Data", "SYN": "images"}
)
IMAGE_EXTS: Mapping[str, str] = MappingProxyType({"LR": ".tif", "USGS": ".tif", "SYN": ".png"})
JSON_DIRS = (".", "rsvqa")  # the release keeps the JSON beside the images; `synth` in rsvqa/
FILE_KINDS = ("questions", "answers", "images")

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


def load_json(path: Path) -> Any:
    """Parse a JSON file; bad bytes or syntax become an AnnotationError with line and column."""
    try:
        text = read_utf8(path, AnnotationError)
    except OSError as err:
        raise DatasetNotFoundError(f"{path}: cannot read file: {err}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationError(
            f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from err
    except (ValueError, RecursionError) as err:  # 4300+ digit integers, absurd nesting
        raise AnnotationError(f"{path}: unreadable JSON: {err}") from err


def resolve_level(qtype: str, level: Any, levels: Mapping[str, str], where: str) -> str:
    """The question's own level if given, else the type's default; must be one of LEVELS."""
    if level is None:
        if qtype not in levels:
            raise AnnotationError(
                f"{where}: question type {qtype!r} has no 'level' key and no default level; "
                f"pass levels={{{qtype!r}: 'scene' | 'region' | 'object'}}"
            )
        level = levels[qtype]
    if level not in LEVELS:
        raise AnnotationError(f"{where}: level must be one of {LEVELS}, got {level!r}")
    return str(level)


@dataclass
class _Table:
    """One RSVQA file: active entries by id (with their index in the file), inactive ids."""

    path: Path
    active: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    inactive: set[int] = field(default_factory=set)


def _is_int(value: Any) -> bool:
    return type(value) is int  # bool is an int subclass; True is not an id


def require_key(
    entry: dict[str, Any], key: str, ok: Callable[[Any], bool], expected: str, where: str
) -> Any:
    """entry[key] if present and accepted by `ok`; else an error naming the key and entry."""
    if key not in entry:
        raise AnnotationError(f"{where}: missing key {key!r}")
    value = entry[key]
    if not ok(value):
        raise AnnotationError(f"{where}: key {key!r} must be {expected}, got {value!r:.80}")
    return value


def _read_table(path: Path, key: str, problems: Problems | None = None) -> _Table:
    document = load_json(path)
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise AnnotationError(f"{path}: expected an object with a list under key {key!r}")
    table = _Table(path)
    for index, entry in enumerate(document[key]):
        attempt(problems, _add_entry, table, index, entry)
    return table


def _add_entry(table: _Table, index: int, entry: Any) -> None:
    where = f"{table.path}: entry {index}"
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where}: expected an object, got {entry!r:.80}")
    active = entry.get("active", True)  # absent = active: RSVQA-like sets without the flag
    if not isinstance(active, bool):
        raise AnnotationError(f"{where}: key 'active' must be true or false, got {active!r:.80}")
    if not active:
        if _is_int(entry.get("id")):
            table.inactive.add(entry["id"])
        return
    entry_id = require_key(entry, "id", _is_int, "an integer", where)
    if entry_id in table.active:
        first = table.active[entry_id][0]
        raise AnnotationError(f"{where}: duplicate id {entry_id} (also entry {first})")
    table.active[entry_id] = (index, entry)


class RSVQADataset(ImageRecords, Dataset[Sample]):
    """RSVQA questions of one split: VQA sample dicts (see the package's data contract).

    `types` keeps only those question types (None keeps every type present); `levels` adds to
    or overrides the default type -> level map. Dangling ids and malformed entries raise an
    AnnotationError naming the file, the entry and the id; with `problems`, each is listed
    there and its entry skipped.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        prefix: str = "LR",
        image_dir: str | None = None,
        image_ext: str | None = None,
        types: Sequence[str] | None = None,
        levels: Mapping[str, str] | None = None,
        bands: BandPolicy | None = None,
        transform: Transform | None = None,
        problems: Problems | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.prefix = prefix
        self.image_dir = self.root / _prefix_default(IMAGE_DIRS, prefix, image_dir, "image_dir")
        self.image_ext = _prefix_default(IMAGE_EXTS, prefix, image_ext, "image_ext")
        self.types = None if types is None else {types} if isinstance(types, str) else set(types)
        self.levels = {**DEFAULT_LEVELS, **(levels or {})}
        self.bands = bands
        self.transform = transform
        paths = self._paths()
        tables = {kind: _read_table(paths[kind], kind, problems) for kind in FILE_KINDS}
        self.records = self._link(
            tables["questions"], tables["answers"], tables["images"], problems
        )

    def _paths(self) -> dict[str, Path]:
        """The three JSON files, in `root` or `root/rsvqa` (where all three exist)."""
        names = {kind: f"{self.prefix}_split_{self.split}_{kind}.json" for kind in FILE_KINDS}
        for folder in JSON_DIRS:
            paths = {kind: self.root / folder / name for kind, name in names.items()}
            if all(path.is_file() for path in paths.values()):
                return paths
        expected = "\n  ".join(
            str(self.root / folder / name) for folder in JSON_DIRS for name in names.values()
        )
        raise DatasetNotFoundError(
            f"RSVQA {self.prefix!r} split {self.split!r} not found: need all three of "
            f"{', '.join(names.values())} in one of:\n  {expected}"
        )

    def _link(
        self, questions: _Table, answers: _Table, images: _Table, problems: Problems | None
    ) -> list[Sample]:
        records, unanswered = [], 0
        for qid, (index, entry) in questions.active.items():
            where = f"{questions.path}: entry {index} (question id {qid})"
            qtype = attempt(problems, require_key, entry, "type", _is_str, "a string", where)
            if qtype is None or (self.types is not None and qtype not in self.types):
                continue
            known = len(problems) if problems is not None else 0
            record = attempt(problems, self._record, qid, qtype, entry, where, answers, images)
            if record is not None:
                records.append(record)
            elif problems is None or len(problems) == known:  # inactive, not a bad entry
                unanswered += 1
        if unanswered:
            logger.warning(
                "%s: skipped %d active questions whose image or answers are all inactive",
                questions.path, unanswered,
            )
        if not records:
            logger.warning("%s: no questions selected (types=%s)", questions.path, self.types)
        return records

    def _record(
        self, qid: int, qtype: str, entry: dict[str, Any], where: str, answers: _Table,
        images: _Table,
    ) -> Sample | None:
        """One question's record; None when its image or every answer is inactive."""
        img_id = require_key(entry, "img_id", _is_int, "an integer", where)
        question = require_key(entry, "question", _is_str, "a string", where)
        answer_ids = require_key(entry, "answers_ids", _is_int_list, "a list of integers", where)
        level = resolve_level(qtype, entry.get("level"), self.levels, where)
        if img_id not in images.active:
            if img_id in images.inactive:
                return None
            raise AnnotationError(f"{where}: img_id {img_id} does not exist in {images.path}")
        answer = _first_active_answer(answer_ids, answers, where)
        if answer is None:
            return None
        return {
            "image_path": str(self.image_dir / f"{img_id}{self.image_ext}"),
            "image_id": str(img_id),
            "question_id": str(qid),
            "question": question,
            "answer": answer,
            "qtype": qtype,
            "level": level,
        }


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_int(item) for item in value)


def is_answer_text(value: Any) -> bool:
    """Answers are strings; numbers ("count" answers in some exports) are accepted as text."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str) or number


def _first_active_answer(answer_ids: list[int], answers: _Table, where: str) -> str | None:
    """The text of the first active answer; an id missing from the answers file is an error."""
    for answer_id in answer_ids:
        if answer_id in answers.active:
            index, entry = answers.active[answer_id]
            where_answer = f"{answers.path}: entry {index} (answer id {answer_id})"
            text = require_key(entry, "answer", is_answer_text, "a string", where_answer)
            return str(text)
        if answer_id not in answers.inactive:
            raise AnnotationError(
                f"{where}: answer id {answer_id} does not exist in {answers.path}"
            )
    return None


def _prefix_default(defaults: Mapping[str, str], prefix: str, given: str | None, name: str) -> str:
    if given is not None:
        return given
    if prefix not in defaults:
        raise ConfigError(
            f"RSVQA prefix {prefix!r} has no default {name} (known prefixes: "
            f"{', '.join(defaults)}); pass {name}= explicitly"
        )
    return defaults[prefix]
