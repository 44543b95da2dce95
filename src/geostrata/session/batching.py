"""From sample records to model batches: decoded images, cached tower features, collation.

RS training sets revisit each image many times (several questions per image, many epochs), so
each image's processor square (decoded and letterboxed, `ImageProcessor.square`) is made once
while it fits a memory budget (least recently used ones are dropped beyond it). When the vision
tower is frozen its features cannot change, so they are computed once too (the biggest saving
on CPU; the LLaVA recipe does the same); the pipeline decides whether they fit
(`ExperimentConfig.feature_cache_gib`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from geostrata.data.targets import AlignTargetBuilder, Truth
from geostrata.levels import VISUAL_LEVELS
from geostrata.model import GeoStrataProcessor, ImageProcessor, MultiLevelFeatures

DEFAULT_IMAGE_CACHE_BYTES = 2 * 2**30


class ImageStore:
    """The processor's squares per path ((S, S, 3) uint8, or (S, S, C) float32 bands), kept
    while they fit ``max_bytes`` (least recently used dropped beyond); only caches, never resizes
    itself."""

    def __init__(
        self, processor: ImageProcessor, max_bytes: int = DEFAULT_IMAGE_CACHE_BYTES
    ) -> None:
        self.processor, self.max_bytes = processor, max_bytes
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self.nbytes = 0

    def get(self, path: str) -> np.ndarray:
        image = self._images.get(path)
        if image is not None:
            self._images.move_to_end(path)
            return image
        image = self.processor.square(path)  # (S, S, C)
        if image.nbytes <= self.max_bytes:
            self._images[path] = image
            self.nbytes += image.nbytes
            while self.nbytes > self.max_bytes:
                _, dropped = self._images.popitem(last=False)
                self.nbytes -= dropped.nbytes
        return image

    def pixel_values(self, paths: Sequence[str]) -> torch.Tensor:
        """(B, C, S, S) model input for `paths`, as the processor makes it from the files."""
        return self.processor.pixel_values([self.get(path) for path in paths])

    def __len__(self) -> int:
        return len(self._images)


class FeatureCache:
    """Frozen-tower features per image path, computed in batches with a progress bar.

    ``device`` is where the tower runs while caching (e.g. the GPU before Accelerate has placed
    the model); the tower goes back where it was afterwards and the features live on the CPU.
    """

    def __init__(
        self, model: Any, images: ImageStore, device: torch.device | str | None = None
    ) -> None:
        self.model, self.images = model, images
        self.device = device
        self._rows: dict[str, int] = {}
        self._parts: list[MultiLevelFeatures] = []
        self._all: MultiLevelFeatures | None = None
        self.nbytes = 0

    @torch.no_grad()
    def add(self, paths: Sequence[str], batch_size: int = 64, show_progress: bool = True) -> None:
        """Encode every path not yet cached."""
        from rich.progress import track

        todo = sorted({p for p in paths if p not in self._rows})
        chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        home = next(self.model.vision.parameters()).device
        device = torch.device(self.device) if self.device is not None else home
        # inference features: a new module is in training mode, whose BatchNorm would use batch
        # statistics and move its running ones (the features training and inference see differ)
        was_training = self.model.vision.training
        self.model.vision.to(device).eval()
        try:
            for chunk in track(
                chunks, description="Caching tower features", disable=not show_progress
            ):
                pixels = self.images.pixel_values(chunk)  # (b, C, S, S)
                part = self.model.encode_images(pixels.to(device)).to("cpu")
                self._parts.append(part)
                self.nbytes += part.nbytes
                for path in chunk:
                    self._rows[path] = len(self._rows)
        finally:
            self.model.vision.to(home).train(was_training)
        self._all = None

    @property
    def bytes_per_image(self) -> float:
        return self.nbytes / max(len(self._rows), 1)

    def get(self, paths: Sequence[str]) -> MultiLevelFeatures:
        if self._all is None:
            self._all = MultiLevelFeatures.cat(self._parts)
            self._parts = [self._all]  # one copy, not the parts and their concatenation
        return self._all.index(torch.tensor([self._rows[p] for p in paths]))

    def __contains__(self, path: str) -> bool:
        return path in self._rows


class VQACollator:
    """Sample records -> one model batch (prompt + answer tokens, image or features, targets)."""

    def __init__(
        self,
        processor: GeoStrataProcessor,
        images: ImageStore,
        features: FeatureCache | None = None,
        targets: AlignTargetBuilder | None = None,
        truths: dict[str, Truth] | None = None,
        with_answers: bool = True,
    ) -> None:
        self.processor, self.images, self.features = processor, images, features
        self.targets, self.truths, self.with_answers = targets, truths or {}, with_answers

    def __call__(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        paths = [r["image_path"] for r in records]
        answers = [r["answer"] for r in records] if self.with_answers else None
        questions = [r["question"] for r in records]
        histories = [r.get("history") or () for r in records]  # earlier turns (task "chat")
        batch = dict(self.processor(None, questions, answers, histories))
        # With cached tower features the pixels are never needed: skip decoding and resizing.
        if self.features is not None:
            batch["features"] = self.features.get(paths)
        else:
            batch["pixel_values"] = self.images.pixel_values(paths)  # (B, C, S, S)
        if self.targets is not None:
            batch["align_targets"] = self.targets([self.truths.get(p, Truth()) for p in paths])
        if self.with_answers:
            batch["question_levels"] = question_levels(records)
        return batch


def question_levels(records: Sequence[dict[str, Any]]) -> torch.Tensor:
    """(B,) index of each record's semantic level in VISUAL_LEVELS, -1 where it has none."""
    return torch.tensor(
        [VISUAL_LEVELS.index(r["level"]) if r.get("level") in VISUAL_LEVELS else -1
         for r in records],
        dtype=torch.long,
    )  # fmt: skip
