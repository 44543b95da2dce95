"""Follow-up accuracy of multi-turn dialogues: does the model use the earlier turns?

A follow-up is a chat record with earlier turns (`history`, the record convention). Its answer
is scored three ways with the same model: with the true earlier turns as history, without any
history (the question alone, as a single-turn model would read it), and with the model's own
earlier answers as history (as in a live chat). The follow-ups are built so that the question
alone does not determine the answer ("How many are there?"), so "with" above "without" is what
using the conversation buys. A box answer is right at IoU >= 0.5 with the true box, any other
answer by exact match after normalisation (evaluate/metrics.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from geostrata.boxes import iou, parse_box
from geostrata.evaluate.metrics import normalize_answer
from geostrata.evaluate.runner import generate_answers

BOX_IOU = 0.5
MAX_NEW_TOKENS = 8  # follow-up answers are short: a count, a name, a box (6 tokens)
Generate = Callable[[Sequence[dict[str, Any]]], list[str]]


@dataclass(frozen=True)
class FollowupScore:
    with_history: float  # the true earlier turns
    without_history: float  # the question alone
    own_history: float  # the model's own earlier answers
    n: int


@dataclass
class DialogueMetrics:
    overall: FollowupScore
    per_kind: dict[str, FollowupScore] = field(default_factory=dict)  # "count", "colour", ...

    def summary(self) -> dict[str, float]:
        o = self.overall
        return {"followup_with_history": o.with_history,
                "followup_without_history": o.without_history,
                "followup_own_history": o.own_history}  # fmt: skip


def answer_correct(answer: str, truth: str) -> bool:
    """IoU >= BOX_IOU for a box truth, exact match after normalisation otherwise."""
    true_box = parse_box(truth)
    if true_box is not None:
        found = parse_box(answer)
        return found is not None and iou(found, true_box) >= BOX_IOU
    return normalize_answer(answer) == normalize_answer(truth)


def is_followup(record: dict[str, Any]) -> bool:
    return record.get("task") == "chat" and bool(record.get("history"))


def own_history_answers(records: Sequence[dict[str, Any]], generate: Generate) -> list[str]:
    """Answers to every chat record, turn by turn, each asked with the model's own answers to
    the earlier turns of its dialogue as history (a dialogue's turns share its `dialogue`)."""
    answers: dict[tuple[str, int], str] = {}
    turns = sorted({int(r.get("turn", 0)) for r in records})
    for turn in turns:
        batch = [r for r in records if int(r.get("turn", 0)) == turn]
        asked = []
        for r in batch:
            earlier = [[q, answers.get((r["dialogue"], k), "")]
                       for k, (q, _) in enumerate(r.get("history") or [])]  # fmt: skip
            asked.append({**r, "history": earlier})
        for r, a in zip(batch, generate(asked), strict=True):
            answers[(r["dialogue"], turn)] = a
    return [answers[(r["dialogue"], int(r.get("turn", 0)))] for r in records]


def score_followups(
    records: Sequence[dict[str, Any]], generate: Generate
) -> DialogueMetrics | None:
    """Follow-up accuracy of the chat `records` (all turns of their dialogues, so the model's
    own earlier answers can be made) with `generate` (records -> answers); None when there are
    no follow-ups."""
    chats = [r for r in records if r.get("task") == "chat"]
    follow = [r for r in chats if is_followup(r)]
    if not follow:
        return None
    with_history = generate(follow)
    alone = generate([{**r, "history": []} for r in follow])
    own = dict(zip((r["question_id"] for r in chats), own_history_answers(chats, generate),
                   strict=True))  # fmt: skip
    rows = [(r, answer_correct(w, r["answer"]), answer_correct(a, r["answer"]),
             answer_correct(own[r["question_id"]], r["answer"]))
            for r, w, a in zip(follow, with_history, alone, strict=True)]  # fmt: skip
    by_kind: dict[str, list[tuple[bool, bool, bool]]] = defaultdict(list)
    for r, *marks in rows:
        by_kind[str(r.get("kind", "chat"))].append(tuple(marks))
    every = [tuple(marks) for _, *marks in rows]
    return DialogueMetrics(_score(every), {k: _score(v) for k, v in sorted(by_kind.items())})


def _score(marks: list[tuple[bool, ...]]) -> FollowupScore:
    n = len(marks)
    return FollowupScore(*(sum(m[i] for m in marks) / n for i in range(3)), n)


def dialogue_metrics(session: Any, show_progress: bool = True) -> DialogueMetrics | None:
    """Follow-up accuracy on a Session's evaluation split (None without chat records)."""

    def generate(records: Sequence[dict[str, Any]]) -> list[str]:
        return generate_answers(
            session.model,
            session.processor.tokenizer,
            session.collator(False),
            records,
            session.cfg.eval_batch_size,
            MAX_NEW_TOKENS,
            show_progress,
            "Answering follow-ups",
        )

    return score_followups(session.task.eval, generate)
