"""From sample records to model batches: decoded images, cached tower features, collation.

RS training sets revisit each image many times (several questions per image, many epochs), so
images are decoded and resized once. When the vision tower is frozen its features cannot change,
so they are computed once too (the biggest saving on CPU; the LLaVA recipe does the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from geostrata.data.images import read_image, to_square
from geostrata.data.targets import AlignTargetBuilder, Truth
from geostrata.model import GeoStrataProcessor, MultiLevelFeatures


class ImageStore:
    """Decoded, square-resized uint8 images, read once per path."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._images: dict[str, np.ndarray] = {}

    def get(self, path: str) -> np.ndarray:
        image = self._images.get(path)
        if image is None:
            image = to_square(read_image(path), self.size)  # (S, S, 3) uint8
            self._images[path] = image
        return image


class FeatureCache:
    """Frozen-tower features per image path, computed in batches with a progress bar."""

    def __init__(self, model: Any, processor: GeoStrataProcessor, images: ImageStore) -> None:
        self.model, self.processor, self.images = model, processor, images
        self._rows: dict[str, int] = {}
        self._parts: list[MultiLevelFeatures] = []
        self._all: MultiLevelFeatures | None = None

    @torch.no_grad()
    def add(self, paths: Sequence[str], batch_size: int = 64, show_progress: bool = True) -> None:
        """Encode every path not yet cached."""
        from rich.progress import track

        todo = sorted({p for p in paths if p not in self._rows})
        chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        device = next(self.model.parameters()).device
        for chunk in track(chunks, description="Caching tower features", disable=not show_progress):
            pixels = torch.from_numpy(
                np.stack([self.processor.preprocess_image(self.images.get(p)) for p in chunk])
            )  # (b, 3, S, S)
            self._parts.append(self.model.encode_images(pixels.to(device)).to("cpu"))
            for path in chunk:
                self._rows[path] = len(self._rows)
        self._all = None

    def get(self, paths: Sequence[str]) -> MultiLevelFeatures:
        if self._all is None:
            self._all = MultiLevelFeatures.cat(self._parts)
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
        # With cached tower features the pixels are never needed: skip decoding and resizing.
        images = None if self.features is not None else [self.images.get(p) for p in paths]
        batch = dict(self.processor(images, [r["question"] for r in records], answers))
        if self.features is not None:
            batch["features"] = self.features.get(paths)
        if self.targets is not None:
            batch["align_targets"] = self.targets([self.truths.get(p, Truth()) for p in paths])
        return batch
