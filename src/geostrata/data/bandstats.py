"""Per-band statistics of a set of training images: how non-8-bit data is normalised.

A per-image percentile stretch maps each image onto its own range, so the radiometry that tells
classes apart is erased: a uniform water chip and a uniform sand chip both become noise around
mid-grey. Normalising every band by one mean and standard deviation, measured once on the
training images (in their own units: uint16 reflectance, float radiance), keeps a dark chip dark
and a bright one bright, at inference exactly as in training.

The pass is bounded: at most `MAX_IMAGES` images (evenly spaced through the sorted list) and
`MAX_VALUES` values per band and image (fixed pseudo-random pixels), merged with Chan's parallel
variance update so large means do not cancel the variance away.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geostrata.errors import ImageError

MAX_IMAGES = 256  # training images read for the statistics
MAX_VALUES = 65_536  # values per band and image
MIN_STD = 1e-6  # relative: a band that is (nearly) constant keeps std 1 (it carries no signal)


@dataclass(frozen=True)
class BandStats:
    """Mean and standard deviation of each band, and the sample type they were measured in."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: str  # numpy name of the images' sample type, e.g. "uint16"

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean or min(self.std) <= 0:
            raise ImageError(f"band statistics need one mean and one std > 0 per band: {self}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def n_bands(self) -> int:
        return len(self.mean)

    @property
    def eight_bit(self) -> bool:
        return self.dtype == "uint8"

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BandStats:
        return cls(tuple(data["mean"]), tuple(data["std"]), str(data["dtype"]))


def spaced(items: Sequence[Any], n: int = MAX_IMAGES) -> list[Any]:
    """At most `n` items, evenly spaced (first and last included): a deterministic sample."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def band_statistics(images: Iterable[np.ndarray], names: Iterable[str] = ()) -> BandStats:
    """Per-band mean / std of (H, W, C) images (non-finite values left out); every image must
    have the same band count, and all or none of them must be 8-bit (`names` name them in
    errors)."""
    count = mean = m2 = None
    dtype = None
    for image, name in zip(images, _names(names), strict=False):
        values = _sample(image)  # (C, N) float64
        if count is None:
            count, mean, m2 = (np.zeros(values.shape[0]) for _ in range(3))
            dtype = image.dtype
        _check_same(image, dtype, mean.shape[0], name)
        count, mean, m2 = _merge(count, mean, m2, values)
    if count is None:
        raise ImageError("band statistics need at least one training image")
    if (count == 0).any():
        raise ImageError(f"band(s) {np.flatnonzero(count == 0).tolist()} hold no finite value")
    std = np.sqrt(m2 / count)
    std = np.where(std > MIN_STD * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return BandStats(tuple(mean), tuple(std), np.dtype(dtype).name)


def _names(names: Iterable[str]) -> Iterable[str]:
    yield from names
    while True:
        yield "an image"


def _sample(image: np.ndarray) -> np.ndarray:
    """(C, N) float64 values of up to MAX_VALUES fixed pseudo-random pixels."""
    pixels = image.reshape(-1, image.shape[-1])  # (H*W, C)
    if pixels.shape[0] > MAX_VALUES:
        rows = np.random.default_rng(0).choice(pixels.shape[0], MAX_VALUES, replace=False)
        pixels = pixels[np.sort(rows)]
    return pixels.T.astype(np.float64)  # (C, N)


def _check_same(image: np.ndarray, dtype: np.dtype, n_bands: int, name: str) -> None:
    if image.shape[-1] != n_bands:
        raise ImageError(f"{name}: {image.shape[-1]} bands, the first image had {n_bands}")
    if (image.dtype == np.uint8) != (dtype == np.uint8):
        raise ImageError(
            f"{name}: {image.dtype} samples among {dtype} ones: 8-bit and other images cannot "
            "share one normalisation; convert them to one sample type"
        )


def _merge(
    count: np.ndarray, mean: np.ndarray, m2: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chan et al.'s update of per-band (count, mean, sum of squared deviations) by a batch
    of (C, N) values; non-finite values are left out."""
    finite = np.isfinite(values)
    n = finite.sum(axis=1).astype(np.float64)  # (C,)
    batch_mean = np.where(finite, values, 0.0).sum(axis=1) / np.maximum(n, 1.0)
    batch_m2 = (np.where(finite, values - batch_mean[:, None], 0.0) ** 2).sum(axis=1)
    total = count + n
    delta = batch_mean - mean
    safe = np.maximum(total, 1.0)
    return total, mean + delta * n / safe, m2 + batch_m2 + delta**2 * count * n / safe
