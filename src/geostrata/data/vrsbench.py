"""VRSBench evaluation files: captions, referring expressions and VQA over `Images_val/`.

The release's three JSON lists (written by its `prepare_eval_all.ipynb`), each entry naming its
image by file name (`image_id`, e.g. "P0003_0004.png"):

- `VRSBench_EVAL_Cap.json`: `{"image_id", "question", "ground_truth" (the caption),
  "question_id", "type": "caption"}` -> task "caption" (the file's question is kept);
- `VRSBench_EVAL_referring.json`: `{"image_id", "question" (the expression), "ground_truth"
  ("{<x1><y1><x2><y2>}", 0-100), "question_id", "type": "ref", "unique", "obj_cls",
  "obj_corner", "obj_ids", "size_group"}` -> task "ground"; `ground_truth` may also be four
  numbers on the same 0-100 scale. `unique` and `size_group` are kept (VRSBench reports
  unique / non-unique separately);
- `VRSBench_EVAL_vqa.json`: `{"image_id", "question", "ground_truth", "question_id", "type"}`
  -> task "vqa", qtype the type ("object existence", ...), level by the table below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from torch.utils.data import Dataset

from geostrata.data.fields import image_file, is_id, is_relative_name, is_text
from geostrata.data.images import BandPolicy, ImageRecords
from geostrata.data.problems import Problems, attempt
from geostrata.data.regions import scale_box, text_boxes
from geostrata.data.rsvqa import is_answer_text, load_json, require_key, resolve_level
from geostrata.errors import AnnotationError, ConfigError, DatasetNotFoundError

IMAGE_DIR = "Images_val"
FILES: Mapping[str, str] = MappingProxyType(
    {
        "caption": "VRSBench_EVAL_Cap.json",
        "ground": "VRSBench_EVAL_referring.json",
        "vqa": "VRSBench_EVAL_vqa.json",
    }
)
# VRSBench's twelve VQA types (its notebook asserts these) -> the semantic level asked about
VQA_LEVELS: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(
            ("object existence", "object position", "object quantity", "object category",
             "object color", "object shape", "object size", "object direction"),
            "object",
        ),
        **dict.fromkeys(("scene type", "rural or urban", "image", "reasoning"), "scene"),
    }
)  # fmt: skip

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


class VRSBenchDataset(ImageRecords, Dataset[Sample]):
    """The VRSBench EVAL files in `root` (every one present, or those of `tasks`), one record per
    entry; question_id is "vrsbench:{task}:{question_id}". A bad entry is an AnnotationError
    naming the file and entry index; with `problems` it is listed there and skipped."""

    def __init__(
        self,
        root: str | Path,
        tasks: tuple[str, ...] | None = None,
        image_dir: str | None = None,
        bands: BandPolicy | None = None,
        transform: Transform | None = None,
        problems: Problems | None = None,
    ) -> None:
        self.root = Path(root)
        self.image_root = self.root / (image_dir or IMAGE_DIR)
        self.bands = bands
        self.transform = transform
        self.paths = self._paths(tasks)
        self.records = []
        for task, path in self.paths.items():
            parse = _PARSERS[task]
            for index, entry in enumerate(_entries(path)):
                where = f"{path}: entry {index}"
                record = attempt(problems, self._record, parse, task, entry, where)
                if record is not None:
                    self.records.append(record)

    def _paths(self, tasks: tuple[str, ...] | None) -> dict[str, Path]:
        unknown = set(tasks or ()) - set(FILES)
        if unknown:
            raise ConfigError(f"VRSBench tasks {sorted(unknown)} unknown; known: {list(FILES)}")
        wanted = {t: self.root / FILES[t] for t in (tasks or FILES)}
        found = {t: p for t, p in wanted.items() if p.is_file()}
        if not found or (tasks is not None and len(found) < len(wanted)):
            missing = ", ".join(str(p) for t, p in wanted.items() if t not in found)
            raise DatasetNotFoundError(f"VRSBench evaluation file(s) not found: {missing}")
        return found

    def _record(self, parse: Callable[..., Sample], task: str, entry: Any, where: str) -> Sample:
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: expected an object, got {entry!r:.80}")
        image = image_file(
            require_key(entry, "image_id", is_relative_name, "an image file name", where), ".png"
        )
        qid = require_key(entry, "question_id", is_id, "an integer or string", where)
        base = {
            "image_path": str(self.image_root / image),
            "image_id": image,
            "question_id": f"vrsbench:{task}:{qid}",
            "task": task,
        }
        return {**base, **parse(entry, where)}


def _caption(entry: dict[str, Any], where: str) -> Sample:
    caption = require_key(entry, "ground_truth", is_text, "a caption string", where).strip()
    question = entry.get("question")
    return {
        **({"question": question.strip()} if is_text(question) else {}),
        "answer": caption,
        "references": [caption],
        "qtype": "caption",
        "level": "scene",
    }


def _ground(entry: dict[str, Any], where: str) -> Sample:
    expression = require_key(entry, "question", is_text, "a referring expression", where)
    truth = require_key(entry, "ground_truth", _is_box, "box text or 4 numbers", where)
    boxes = text_boxes(truth, where) if isinstance(truth, str) else [scale_box(truth, where)]
    if len(boxes) != 1:
        raise AnnotationError(f"{where}: expected one box, got {len(boxes)} in {truth!r:.80}")
    extra = {k: entry[k] for k in ("unique", "size_group") if k in entry}
    if isinstance(entry.get("obj_cls"), str):
        extra["object_class"] = entry["obj_cls"]
    return {
        "box": boxes[0].as_list(),
        "answer": boxes[0].text(),
        "expression": expression.strip(),
        "qtype": "ground",
        "level": "object",
        **extra,
    }


def _vqa(entry: dict[str, Any], where: str) -> Sample:
    question = require_key(entry, "question", is_text, "a question string", where)
    answer = require_key(entry, "ground_truth", is_answer_text, "a string or number", where)
    qtype = require_key(entry, "type", is_text, "a question type string", where).strip().lower()
    return {
        "question": question.strip(),
        "answer": str(answer).strip(),
        "qtype": qtype,
        "level": resolve_level(qtype, entry.get("level"), VQA_LEVELS, where),
    }


_PARSERS: Mapping[str, Callable[[dict[str, Any], str], Sample]] = MappingProxyType(
    {"caption": _caption, "ground": _ground, "vqa": _vqa}
)


def _entries(path: Path) -> list[Any]:
    document = load_json(path)
    if not isinstance(document, list):
        raise AnnotationError(f"{path}: expected a JSON list of entries")
    return document


def _is_box(value: Any) -> bool:
    return isinstance(value, str | list)
