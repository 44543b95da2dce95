"""Seen and unseen classes apart: what a model names from the knowledge base alone.

When a data set holds classes out of training (`TaskData.unseen`, e.g. the synthetic benchmark's
`--holdout`), every figure that depends on a class is reported twice:

- scene naming, open-ended: the scene questions of the VQA split (exact match) and the generated
  answer to "What type of scene is this?" mapped to a class through the knowledge base;
- scene classification, closed-set: the most likely class name among all the data set's scene
  classes, seen and unseen alike;
- presence questions about unseen object classes (an object is "mentioned" when its name or
  plural appears in the question);
- retrieval: how often the image's true entry of each level (scene; largest land cover; most
  frequent object) is among the retrieved cues, on images of seen and of unseen scene classes.

`relation_sweep` measures the scene retrieval at several relational-retrieval weights on one
trained model (the weight only changes which entries are ranked first), and `choose_relation_weight`
picks one by a stated rule; run it on a validation fold of classes, never on the reported one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from geostrata.errors import ConfigError
from geostrata.evaluate.metrics import normalize_answer
from geostrata.evaluate.runner import _batches, _model_inputs
from geostrata.evaluate.tasks import unique_images
from geostrata.session.samples import SCENE_QUESTION


@dataclass
class SeenUnseen:
    seen: float | None
    unseen: float | None
    n_seen: int
    n_unseen: int


@dataclass
class ZeroShotMetrics:
    unseen_scenes: list[str]
    unseen_objects: list[str]
    scene_open: SeenUnseen | None  # VQA scene questions, exact match
    scene_generated: SeenUnseen | None  # generated scene answer mapped to a class
    scene_closed: SeenUnseen | None  # closed-set over every scene class
    presence: SeenUnseen | None  # presence questions naming a seen / an unseen object
    scene_retrieval: SeenUnseen | None  # true scene entry among the top-k cues
    # level -> true entry of that level among its top-k cues, on seen / unseen scene images
    retrieval: dict[str, SeenUnseen] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, float]:
        """Flat `<measure>_seen` / `<measure>_unseen` figures (those measured) for tables."""
        parts = {
            "scene_open": self.scene_open,
            "scene_generated": self.scene_generated,
            "scene_closed": self.scene_closed,
            "presence": self.presence,
            **{f"retrieval_{level}": m for level, m in self.retrieval.items()},
        }
        out: dict[str, float] = {}
        for name, m in parts.items():
            for side, value in (("seen", None if m is None else m.seen),
                                ("unseen", None if m is None else m.unseen)):  # fmt: skip
                if value is not None:
                    out[f"{name}_{side}"] = value
        return out

    def markdown(self) -> str:
        rows = [
            ("scene naming, open (VQA)", self.scene_open),
            ("scene naming, generated -> class", self.scene_generated),
            ("scene classification, closed set", self.scene_closed),
            ("object presence questions", self.presence),
            ("true scene entry in the cues", self.scene_retrieval),
            ("true land cover in the cues", self.retrieval.get("region")),
            ("true object in the cues", self.retrieval.get("object")),
        ]
        lines = [
            f"Held out of training: scenes {', '.join(self.unseen_scenes) or '-'}; objects "
            f"{', '.join(self.unseen_objects) or '-'}.",
            "",
            "| measure | seen (%) | unseen (%) | n seen / unseen |",
            "|---|---|---|---|",
        ]
        for name, m in rows:
            if m is not None:
                lines.append(
                    f"| {name} | {_pct(m.seen)} | {_pct(m.unseen)} | {m.n_seen} / {m.n_unseen} |"
                )
        return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def split_rate(flags: Sequence[tuple[bool, bool]]) -> SeenUnseen | None:
    """(is_unseen, correct) pairs -> accuracy on each side; None without any pair."""
    if not flags:
        return None
    seen = [ok for unseen, ok in flags if not unseen]
    unseen = [ok for unseen, ok in flags if unseen]
    rate = lambda v: sum(v) / len(v) if v else None  # noqa: E731
    return SeenUnseen(rate(seen), rate(unseen), len(seen), len(unseen))


def mentions(question: str, name: str) -> bool:
    """Does the question name the class (its spaced form or plural)?"""
    spaced = name.replace("_", " ").lower()
    words = f" {normalize_answer(question)} "
    return f" {spaced} " in words or f" {spaced}s " in words


def zero_shot_metrics(
    unseen: Mapping[str, Sequence[str]],
    vqa_rows: Sequence[dict[str, Any]],
    truths: Mapping[str, Any],
    scenes: Any = None,
    retrieval: Mapping[str, Mapping[str, bool]] | None = None,
) -> ZeroShotMetrics | None:
    """Seen / unseen figures; None when nothing was held out. ``scenes``: a SceneEvaluation with
    per-image predictions; ``retrieval``: level -> image -> hit (runner.retrieval_hits)."""
    held_scenes, held_objects = list(unseen.get("scene", [])), list(unseen.get("object", []))
    if not held_scenes and not held_objects:
        return None

    def scene_unseen(path: str) -> bool:
        truth = truths.get(path)
        return truth is not None and truth.scene in held_scenes

    scene_rows = [r for r in vqa_rows if r["qtype"] == "scene" and r["image_path"] in truths]
    open_flags = [(scene_unseen(r["image_path"]), _exact(r)) for r in scene_rows]
    presence = [
        (any(mentions(r["question"], o) for o in held_objects), _exact(r))
        for r in vqa_rows
        if r["qtype"] == "presence"
    ]
    generated = closed = None
    if scenes is not None and scenes.images:
        unseen_flags = [lbl in held_scenes for lbl in scenes.labels]
        generated = split_rate(
            list(zip(unseen_flags, _equal(scenes.generated_pred, scenes.labels), strict=True))
        )
        closed = split_rate(
            list(zip(unseen_flags, _equal(scenes.closed_pred, scenes.labels), strict=True))
        )
    by_level = {
        level: split_rate([(scene_unseen(p), ok) for p, ok in hits.items()])
        for level, hits in (retrieval or {}).items()
    }
    return ZeroShotMetrics(
        held_scenes,
        held_objects,
        split_rate(open_flags),
        generated,
        closed,
        split_rate(presence) if held_objects else None,
        by_level.get("scene"),
        {level: m for level, m in by_level.items() if m is not None},
    )


def _exact(row: Mapping[str, Any]) -> bool:
    return normalize_answer(row["pred"]) == normalize_answer(row["answer"])


def _equal(preds: Sequence[str], labels: Sequence[str]) -> list[bool]:
    return [p == t for p, t in zip(preds, labels, strict=True)]


@dataclass
class SweepRow:
    """Scene retrieval at one relation weight: the true entry first (top-1, what a pointer answer
    names) and among the top-k cues, on images of seen and of unseen scene classes."""

    weight: float
    top1: SeenUnseen
    topk: SeenUnseen

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def scene_ranks(session: Any, batch_size: int = 64) -> dict[str, int | None]:
    """image -> rank (0 = first) of its true scene entry among the retrieved scene cues (None:
    not retrieved), for the evaluation images with a scene label."""
    task, model = session.task, session.model
    images = [p for p in unique_images(task.eval) if p in task.truths and task.truths[p].scene]
    wanted = {p: session.knowledge.resolve(task.truths[p].scene, task.dataset) for p in images}
    records = [{"image_path": p, "question": SCENE_QUESTION, "answer": ""} for p in images]
    collate, device = session.collator(False), next(model.parameters()).device
    ranks: dict[str, int | None] = {}
    model.eval()
    for chunk in _batches(records, batch_size):
        found = model(**_model_inputs(collate(chunk), device)).retrieved["scene"]
        for record, top in zip(chunk, found.ids, strict=True):
            path = record["image_path"]
            ranks[path] = top.index(wanted[path]) if wanted[path] in top else None
    return ranks


def relation_sweep(session: Any, weights: Sequence[float], batch_size: int = 64) -> list[SweepRow]:
    """Scene retrieval of `session`'s model at each relation weight (the model is left at the
    weight it came with)."""
    model, held = session.model, list(session.task.unseen.get("scene", []))
    if not held:
        raise ConfigError("relation_sweep needs scene classes held out of training (--holdout)")
    start, rows = model.config.relation_weight, []
    try:
        for weight in weights:
            model.set_relation_weight(float(weight), session.knowledge)
            ranks = scene_ranks(session, batch_size)
            unseen = {p: session.task.truths[p].scene in held for p in ranks}
            top1 = split_rate([(unseen[p], r == 0) for p, r in ranks.items()])
            topk = split_rate([(unseen[p], r is not None) for p, r in ranks.items()])
            rows.append(SweepRow(float(weight), top1, topk))
    finally:
        model.set_relation_weight(start, session.knowledge)
    return rows


def choose_relation_weight(rows: Sequence[SweepRow], seen_tolerance: float = 0.01) -> float:
    """The weight whose unseen top-1 retrieval is best among those that keep seen top-1 within
    `seen_tolerance` of the best seen top-1 of the sweep (ties: the smaller weight)."""
    if not rows:
        raise ConfigError("choose_relation_weight: no sweep rows")
    best_seen = max(r.top1.seen or 0.0 for r in rows)
    allowed = [r for r in rows if (r.top1.seen or 0.0) >= best_seen - seen_tolerance]
    return min(allowed, key=lambda r: (-(r.top1.unseen or 0.0), r.weight)).weight
