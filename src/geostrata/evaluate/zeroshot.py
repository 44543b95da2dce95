"""Seen and unseen classes apart: what a model names from the knowledge base alone.

When a data set holds classes out of training (`TaskData.unseen`, e.g. the synthetic benchmark's
`--holdout`), every figure that depends on a class is reported twice:

- scene naming, open-ended: the scene questions of the VQA split (exact match) and the generated
  answer to "What type of scene is this?" mapped to a class through the knowledge base;
- scene classification, closed-set: the most likely class name among all the data set's scene
  classes, seen and unseen alike;
- presence questions about unseen object classes (an object is "mentioned" when its name or
  plural appears in the question);
- retrieval: how often the true scene entry is among the retrieved cues.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from geostrata.evaluate.metrics import normalize_answer


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        rows = [
            ("scene naming, open (VQA)", self.scene_open),
            ("scene naming, generated -> class", self.scene_generated),
            ("scene classification, closed set", self.scene_closed),
            ("object presence questions", self.presence),
            ("true scene entry in the cues", self.scene_retrieval),
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
    hits = (retrieval or {}).get("scene", {})
    retrieved = split_rate([(scene_unseen(p), ok) for p, ok in hits.items()])
    return ZeroShotMetrics(
        held_scenes,
        held_objects,
        split_rate(open_flags),
        generated,
        closed,
        split_rate(presence) if held_objects else None,
        retrieved,
    )


def _exact(row: Mapping[str, Any]) -> bool:
    return normalize_answer(row["pred"]) == normalize_answer(row["answer"])


def _equal(preds: Sequence[str], labels: Sequence[str]) -> list[bool]:
    return [p == t for p, t in zip(preds, labels, strict=True)]
