"""Instruction data in the LLaVA / GeoChat conversation JSON and GeoChat-Bench JSONL formats.

Conversation JSON: a list of `{"id", "image", "conversations": [{"from": "human", "value":
"<image>\\nQuestion"}, {"from": "gpt", "value": "Answer"}, ...]}`. Each (human, gpt) pair becomes
one sample, so a multi-turn record trains every turn; the `<image>` placeholder is removed from
the question because the model's processor places the image itself. Records without an
"image" (text-only chat in LLaVA mixes) are skipped with a warning.

GeoChat-Bench JSONL: one `{"question_id", "image", "text", "ground_truth"}` per line (plus an
optional "category" / "type" naming the question type, as in its RSVQA-derived files); its
referring and region-captioning lines (`image_id`, `question`) become ground / region records
(`geochat.py`).

Images are checked only when read (an ImageError naming the file), since stat-ing tens of
thousands of files up front is slow; `check_images()` lists every missing one at once.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from geostrata.data.geochat import is_task_line, task_record
from geostrata.data.images import BandPolicy, ImageRecords
from geostrata.data.problems import Problems, attempt
from geostrata.data.rsvqa import (
    DEFAULT_LEVELS,
    is_answer_text,
    load_json,
    require_key,
    resolve_level,
)
from geostrata.errors import AnnotationError, DatasetNotFoundError
from geostrata.textio import read_utf8

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
HUMAN_ROLES = ("human", "user")
GPT_ROLES = ("gpt", "assistant")
SKIPPED_ROLES = ("system",)
INSTRUCT_TYPE = "instruct"
INSTRUCT_LEVEL = "scene"  # free-form chat is about the whole image unless told otherwise
BENCH_TYPE_KEYS = ("category", "type")

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


def strip_image_token(text: str) -> str:
    """Remove every `<image>` placeholder and the whitespace/newlines around it."""
    return re.sub(rf"\s*{re.escape(IMAGE_TOKEN)}\s*", " ", text).strip()


class InstructionDataset(ImageRecords, Dataset[Sample]):
    """LLaVA / GeoChat conversations, one sample per (human, gpt) turn pair.

    Sample keys: image, image_path, id, turn, question, answer, qtype ("instruct"), level
    ("scene"), plus image_id (the image's relative path) and question_id ("{id}:{turn}") so
    VQA code can treat it like any other VQA set.
    """

    def __init__(
        self,
        json_path: str | Path,
        image_root: str | Path,
        bands: BandPolicy | None = None,
        transform: Transform | None = None,
        problems: Problems | None = None,
    ) -> None:
        self.json_path = Path(json_path)
        self.image_root = _existing_dir(image_root)
        self.bands = bands
        self.transform = transform
        if not self.json_path.is_file():
            raise DatasetNotFoundError(f"{self.json_path}: instruction file not found")
        document = load_json(self.json_path)
        if not isinstance(document, list):
            raise AnnotationError(f"{self.json_path}: expected a list of conversation records")
        self.records = []
        text_only = 0
        for index, entry in enumerate(document):
            pairs = attempt(problems, self._parse, index, entry)
            text_only += isinstance(entry, dict) and "image" not in entry
            self.records.extend(pairs or [])
        if text_only:
            logger.warning("%s: skipped %d records without an image", self.json_path, text_only)

    def _parse(self, index: int, entry: Any) -> list[Sample] | None:
        """The samples of one record; None for a text-only record."""
        where = f"{self.json_path}: entry {index}"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: expected an object, got {entry!r:.80}")
        if "image" not in entry:
            return None
        record_id = require_key(entry, "id", _is_id, "a string or integer", where)
        image = require_key(entry, "image", _is_text, "a relative path string", where)
        turns = require_key(entry, "conversations", _is_list, "a list of turns", where)
        base = {
            "image_path": str(self.image_root / image),
            "image_id": image,
            "id": str(record_id),
            "qtype": INSTRUCT_TYPE,
            "level": INSTRUCT_LEVEL,
        }
        pairs = enumerate(_turn_pairs(turns, where))
        return [
            {**base, "turn": turn, "question_id": f"{record_id}:{turn}", "question": q, "answer": a}
            for turn, (q, a) in pairs
        ]


def _turn_pairs(turns: list[Any], where: str) -> list[tuple[str, str]]:
    """(question, answer) per human turn followed by a gpt turn; system turns are skipped."""
    pairs, question = [], None
    for number, turn in enumerate(turns):
        here = f"{where}, turn {number}"
        if not isinstance(turn, dict):
            raise AnnotationError(f"{here}: expected an object, got {turn!r:.80}")
        role = require_key(turn, "from", _is_text, "a string", here).lower()
        value = require_key(turn, "value", _is_text, "a string", here)
        if role in SKIPPED_ROLES:
            continue
        if role in HUMAN_ROLES:
            if question is not None:
                raise AnnotationError(f"{here}: two human turns in a row (no gpt answer between)")
            question = strip_image_token(value)
        elif role in GPT_ROLES:
            if question is None:
                raise AnnotationError(f"{here}: gpt turn without a preceding human turn")
            pairs.append((question, value.strip()))
            question = None
        else:
            raise AnnotationError(f"{here}: unknown speaker {role!r} (expected human or gpt)")
    if question is not None:
        raise AnnotationError(f"{where}: the last human turn has no gpt answer")
    return pairs


class GeoChatBenchDataset(ImageRecords, Dataset[Sample]):
    """GeoChat-Bench JSONL: VQA sample dicts, one per line.

    qtype is the line's "category" (or "type") when present, else "instruct"; level is the
    line's "level", else the type's default level, else "scene". Referring / region-captioning
    lines give ground / region records (see `geochat.py`). With `problems`, a bad line is
    listed there (file and line) and skipped instead of raised.
    """

    def __init__(
        self,
        jsonl_path: str | Path,
        image_root: str | Path,
        levels: Mapping[str, str] | None = None,
        bands: BandPolicy | None = None,
        transform: Transform | None = None,
        problems: Problems | None = None,
    ) -> None:
        self.jsonl_path = Path(jsonl_path)
        self.image_root = _existing_dir(image_root)
        self.levels = {**DEFAULT_LEVELS, **(levels or {})}
        self.bands = bands
        self.transform = transform
        records = [
            attempt(problems, self._record, number, line)
            for number, line in enumerate(self._lines(), start=1)
            if line.strip()
        ]
        self.records = [record for record in records if record is not None]

    def _lines(self) -> list[str]:
        if not self.jsonl_path.is_file():
            raise DatasetNotFoundError(f"{self.jsonl_path}: JSONL file not found")
        # split on "\n" only: JSON strings may hold U+2028, which splitlines() would cut
        return read_utf8(self.jsonl_path, AnnotationError).split("\n")

    def _record(self, number: int, line: str) -> Sample:
        where = f"{self.jsonl_path}: line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{where}, column {err.colno}: invalid JSON: {err.msg}") from err
        except (ValueError, RecursionError) as err:
            raise AnnotationError(f"{where}: unreadable JSON: {err}") from err
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: expected a JSON object, got {entry!r:.80}")
        if is_task_line(entry):
            return task_record(entry, where, self.image_root)
        question_id = require_key(entry, "question_id", _is_id, "a string or integer", where)
        image = require_key(entry, "image", _is_text, "a relative path string", where)
        text = require_key(entry, "text", _is_text, "a string", where)
        truth = require_key(entry, "ground_truth", is_answer_text, "a string or number", where)
        qtype = next((entry[k] for k in BENCH_TYPE_KEYS if isinstance(entry.get(k), str)), None)
        qtype = qtype or INSTRUCT_TYPE
        level = entry.get("level")
        if level is None and qtype not in self.levels:
            level = INSTRUCT_LEVEL
        return {
            "image_path": str(self.image_root / image),
            "image_id": image,
            "question_id": str(question_id),
            "question": strip_image_token(text),
            "answer": str(truth).strip(),
            "qtype": qtype,
            "level": resolve_level(qtype, level, self.levels, where),
        }


def _existing_dir(path: str | Path) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: image folder not found")
    return root


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) or type(value) is int
