"""Does the router route by semantic level? Router accuracy and mean weights per question type.

The router reads the question embedding only (`model.route_questions`), so it is measured on the
evaluation questions without running the image path. Router accuracy is the share of questions
with a known semantic level whose largest router weight is on that level's expert.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class RouterMetrics:
    levels: list[str]  # the model's levels, coarse to fine
    accuracy: float | None  # argmax level == question level; None when no question has a level
    n: int  # questions with a level the model has
    per_type: dict[str, dict[str, float]]  # qtype -> level -> mean weight
    per_type_accuracy: dict[str, float]  # qtype -> router accuracy
    type_level: dict[str, str]  # qtype -> its semantic level

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        head = "| type | level | " + " | ".join(f"w({lv})" for lv in self.levels) + " | acc |"
        rule = "|---" * (len(self.levels) + 3) + "|"
        rows = [
            f"| {t} | {self.type_level.get(t, '-')} | "
            + " | ".join(f"{w[lv]:.2f}" for lv in self.levels)
            + f" | {_pct(self.per_type_accuracy.get(t))} |"
            for t, w in sorted(self.per_type.items())
        ]
        total = "all questions" if self.accuracy is None else f"{100 * self.accuracy:.1f}%"
        return (
            f"Router accuracy (largest weight on the question's level): {total} over {self.n} "
            f"questions.\n\n{head}\n{rule}\n" + "\n".join(rows) + "\n"
        )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


@torch.no_grad()
def router_weights(model: Any, encode: Any, questions: Sequence[str]) -> np.ndarray:
    """(N, L) router weights for question texts (`encode`: the processor's question encoder).

    Each distinct question is routed alone: a batched matmul rounds by batch shape and thread
    count, and the figures must not depend on how many processes evaluate."""
    table = {}
    for question in dict.fromkeys(questions):
        emb = torch.from_numpy(np.asarray(encode([question]), dtype=np.float32))  # (1, Dk)
        table[question] = model.route_questions(emb).float().cpu().numpy()[0]  # (L,)
    return np.stack([table[q] for q in questions])


def router_metrics(
    model: Any, encode: Any, records: Sequence[dict[str, Any]]
) -> RouterMetrics | None:
    """Router accuracy and mean weight per level for each question type of `records`; None
    for models without a router (llava baseline, experts off)."""
    config = model.config
    if config.baseline == "llava" or not config.experts or not records:
        return None
    levels = list(config.levels)
    weights = router_weights(model, encode, [r["question"] for r in records])  # (N, L)
    by_type: dict[str, list[int]] = defaultdict(list)
    type_level: dict[str, str] = {}
    for i, record in enumerate(records):
        by_type[record["qtype"]].append(i)
        type_level.setdefault(record["qtype"], record.get("level") or "-")
    correct = [
        int(np.argmax(weights[i])) == levels.index(r["level"])
        for i, r in enumerate(records)
        if r.get("level") in levels
    ]
    # 4 decimals: the question encoder's last bits follow the thread count, so unrounded means
    # would differ between a 1- and a 2-process evaluation of the same model
    per_type = {
        t: {lv: round(float(weights[rows, j].mean()), 4) for j, lv in enumerate(levels)}
        for t, rows in by_type.items()
    }
    per_type_acc = {
        t: float(np.mean([int(np.argmax(weights[i])) == levels.index(type_level[t]) for i in rows]))
        for t, rows in by_type.items()
        if type_level[t] in levels
    }
    accuracy = float(np.mean(correct)) if correct else None
    return RouterMetrics(levels, accuracy, len(correct), per_type, per_type_acc, type_level)
