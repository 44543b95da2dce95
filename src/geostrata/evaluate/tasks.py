"""The evaluation tasks: which ones an evaluation split holds, which to run, how long answers are.

A record's task is its `task` field (the record convention: "vqa" when absent; caption records
of older loaders are known by their qtype). "cls" is scene classification of the split's images
that have a scene label; the others score the records of that task:

- vqa: exact match per type and level (AA / OA) beside the question-only prior
- caption, region: BLEU / METEOR / ROUGE-L / CIDEr against the references (captioning.py)
- ground: Acc@0.5 / Acc@0.25 / mean IoU of the written box, by object size (grounding.py)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from geostrata.errors import InputError
from geostrata.textio import check_known_keys

TASKS = ("vqa", "cls", "caption", "ground", "region")
TEXT_TASKS = ("caption", "region")  # scored by the caption metrics (Java)
# greedy generation budget per task (tokens); generation stops earlier at </s>. A box
# "{<12><34><56><78>}" is 20 tokens with </s> (24 at most) with the tiny local tokenizer when
# no training answer held a box (a token per character); a synthetic caption about 25. For the
# open-ended tasks the budget grows to fit the split's longest reference (VRSBench captions run
# to ~100 words), up to MAX_BUDGET.
MAX_NEW_TOKENS = {"vqa": 8, "cls": 8, "caption": 64, "region": 64, "ground": 32}
MAX_BUDGET = 256
FREE_TEXT_TYPES = ("caption", "instruct")  # qtypes of free-text turns: no exact-match accuracy


def record_task(record: dict[str, Any]) -> str:
    """The task a record belongs to ("vqa" when it names none)."""
    task = record.get("task")
    if task:
        return str(task)
    return "caption" if record.get("qtype") == "caption" else "vqa"


def records_of(records: Iterable[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The records scored by `task` (for "vqa": the question records with a short answer)."""
    if task == "vqa":
        return [r for r in records if record_task(r) == "vqa" and r["qtype"] not in FREE_TEXT_TYPES]
    return [r for r in records if record_task(r) == task]


def token_budget(task: str, records: Sequence[dict[str, Any]], tokenizer: Any) -> int:
    """Generation budget for `task`: its MAX_NEW_TOKENS, for caption / region / ground raised
    to fit the longest answer or reference of `records` (+ 4 tokens), at most MAX_BUDGET."""
    floor = MAX_NEW_TOKENS[task]
    if task in ("vqa", "cls") or not records:
        return floor
    texts = [t for r in records for t in (r.get("references") or [r.get("answer", "")])]
    longest = max(len(tokenizer(str(t), add_special_tokens=False)["input_ids"]) for t in texts)
    return min(MAX_BUDGET, max(floor, longest + 4))


def unique_images(records: Sequence[dict[str, Any]]) -> list[str]:
    """Image paths in first-seen order."""
    return list(dict.fromkeys(r["image_path"] for r in records))


def scene_images(data: Any) -> list[str]:
    """The evaluation images (of a TaskData) that have a scene label, for classification."""
    if not data.scene_classes:
        return []
    truths = data.truths
    return [p for p in unique_images(data.eval) if p in truths and truths[p].scene]


def tasks_in(data: Any) -> list[str]:
    """The tasks a TaskData's evaluation split can be scored on, in TASKS order."""
    found = {t for t in TASKS if t != "cls" and records_of(data.eval, t)}
    if scene_images(data):
        found.add("cls")
    return [t for t in TASKS if t in found]


def parse_tasks(text: str) -> list[str]:
    """Comma-separated task names -> the list ("caption,ground"); unknown ones: ConfigError."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        raise InputError(f"--task {text!r}: name one or more of {', '.join(TASKS)}")
    check_known_keys(dict.fromkeys(names), TASKS, "--task")
    return list(dict.fromkeys(names))


def select_tasks(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The tasks to run: `requested` (all must be in the data), else every available one."""
    if requested is None:
        return list(available)
    check_known_keys(dict.fromkeys(requested), TASKS, "the evaluation tasks")
    missing = [t for t in requested if t not in available]
    if missing:
        held = ", ".join(available) or "none of them"
        raise InputError(
            f"the evaluation split holds no {' / '.join(missing)} data (it holds: {held}); "
            f"tasks are {', '.join(TASKS)}"
        )
    return [t for t in TASKS if t in requested]
