"""Alignment targets: a sample's known truth as a distribution over each level's knowledge entries.

The multi-level alignment loss contrasts a level's pooled visual embedding with the embeddings of
the ground-truth entries of that level. Truth comes from whatever the data set knows: the scene
label (scene level), land-cover fractions (region level), the object classes present (object
level). A level with no truth for a sample gets an all-zero row, which the loss skips.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from geostrata.errors import KnowledgeBaseError
from geostrata.knowledge.protocol import Retriever
from geostrata.levels import VISUAL_LEVELS

ALIGN_LEVELS = VISUAL_LEVELS


@dataclass(frozen=True)
class Truth:
    """What is known of one image, by class label (any field may be empty)."""

    scene: str | None = None
    regions: Mapping[str, float] | None = None  # land cover -> area fraction
    objects: Sequence[str] = ()  # object classes present (repeats allowed)

    @classmethod
    def from_annotation(cls, annotation: Mapping) -> Truth:
        """From one line of a synthetic `annotations/{split}.jsonl`."""
        regions = annotation.get("regions", {}).get("fractions") or None
        objects = tuple(o["class"] for o in annotation.get("objects", ()))
        return cls(scene=annotation.get("scene"), regions=regions, objects=objects)


class AlignTargetBuilder:
    """Turns `Truth`s into (B, N_level) target rows over the knowledge base's entries.

    Labels are resolved once, among the entries of their level (`labels`: level -> names, as
    `session.labels.ground_task` groups them), through the knowledge base's label map (`dataset`
    names the table, e.g. "synthetic") or entry names, so an unknown class fails at
    construction, not mid-training: one error naming every label that does not resolve.
    """

    def __init__(
        self, knowledge: Retriever, dataset: str | None, labels: Mapping[str, Sequence[str]]
    ) -> None:
        self.sizes = {level: len(knowledge.level_ids(level)) for level in ALIGN_LEVELS}
        self._column: dict[str, dict[str, int]] = {}
        problems = []
        for level, names in labels.items():
            rows = {entry_id: i for i, entry_id in enumerate(knowledge.level_ids(level))}
            self._column[level] = {}
            for name in names:
                try:
                    self._column[level][name] = rows[knowledge.resolve(name, dataset, level)]
                except KnowledgeBaseError as exc:
                    problems.append(f"{level} label {name!r}: {exc}")
        if problems:
            listed = "\n  - ".join(problems)
            raise KnowledgeBaseError(f"{len(problems)} label(s) without an entry:\n  - {listed}")

    def __call__(self, truths: Sequence[Truth]) -> dict[str, torch.Tensor]:
        return {level: torch.from_numpy(self._level(truths, level)) for level in ALIGN_LEVELS}

    def _level(self, truths: Sequence[Truth], level: str) -> np.ndarray:
        out = np.zeros((len(truths), self.sizes[level]), dtype=np.float32)  # (B, N_level)
        columns = self._column.get(level, {})
        for row, truth in enumerate(truths):
            for name, weight in _weights(truth, level).items():
                if name in columns:
                    out[row, columns[name]] += weight
        sums = out.sum(axis=1, keepdims=True)
        return np.divide(out, sums, out=out, where=sums > 0)


def _weights(truth: Truth, level: str) -> dict[str, float]:
    """Unnormalised target mass per class name at one level."""
    if level == "scene":
        return {truth.scene: 1.0} if truth.scene else {}
    if level == "region":
        return {k: float(v) for k, v in (truth.regions or {}).items() if v > 0}
    return {name: 1.0 for name in set(truth.objects)}
