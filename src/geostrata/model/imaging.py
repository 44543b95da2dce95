"""ImageProcessor: the one image path from a file or an array to model input.

Training (the image store caches its square stage), evaluation, the feature cache, predict, chat,
the app and the API all call it, so a model sees the same pixels everywhere. Two ways through it,
chosen when the processor is built (`fit_band_input`) and saved in its config:

- 8-bit path (8-bit RGB data, the default there, unchanged): decode -> band policy -> (H, W, 3)
  uint8 -> letterbox to S x S -> (x / 255 - mean) / std -> (3, S, S). Non-8-bit images met on
  this path are stretched per image (data/images.py).
- band-statistics path (non-8-bit data, or a model taking `in_bands` != 3): decode -> the model's
  bands in their own sample type -> float32 -> letterbox band by band -> (x - band mean) / band
  std -> (C, S, S), with the per-band statistics of the training images (data/bandstats.py), so
  radiance survives: two uniform chips of different brightness stay apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from geostrata.data.bandstats import BandStats, band_statistics, spaced
from geostrata.data.images import (
    DEFAULT_MAX_PIXELS,
    BandPolicy,
    as_rgb,
    read_bands,
    read_image,
    select_bands,
)
from geostrata.errors import ConfigError, ImageError
from geostrata.model.settings import BAND_NORMS

ImageInput = str | Path | np.ndarray  # a file, or an (H, W) / (H, W, C) array of any dtype


def load_image(
    image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS, bands: BandPolicy | None = None
) -> np.ndarray:
    """A file path (`read_image`) or an array (`as_rgb`) -> (H, W, 3) uint8 by the band policy.

    An (H, W, 3) array holds R, G, B already (a uint8 one comes back unchanged), so an image
    decoded once (the app checks an upload by decoding it) gives the same pixels when decoded
    again.
    """
    if isinstance(image, str | Path):
        return read_image(image, bands, max_pixels=max_pixels)
    three = isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
    return as_rgb(image, None if three else bands)


def letterbox(image: np.ndarray, size: int, fill: tuple[int, int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: the longer side resized to `size` (bicubic),
    the shorter one padded evenly with `fill`.

    Padding, not cropping or squashing: a crop drops edge content a question may be about
    (counts, presence), squashing distorts shapes and ground scale; square tiles, the usual RS
    case, are only resized.
    """
    height, width = image.shape[:2]
    new_h, new_w = _fitted(height, width, size)
    if (new_h, new_w) != (height, width):
        resized = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC)
        image = np.asarray(resized)  # (new_h, new_w, 3)
    out = np.empty((size, size, 3), dtype=np.uint8)
    out[:] = fill
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = image
    return out  # (size, size, 3)


def letterbox_bands(image: np.ndarray, size: int, fill: Sequence[float]) -> np.ndarray:
    """`letterbox` for (H, W, C) float32 bands: each band resized alone (bicubic, in float, so
    16-bit radiance is not rounded to 8 bits), padded with `fill` (one value per band)."""
    height, width, bands = image.shape
    new_h, new_w = _fitted(height, width, size)
    if (new_h, new_w) != (height, width):
        bicubic = Image.Resampling.BICUBIC
        resized = [
            Image.fromarray(image[:, :, b]).resize((new_w, new_h), bicubic) for b in range(bands)
        ]
        image = np.stack([np.asarray(band) for band in resized], axis=-1)  # (new_h, new_w, C)
    out = np.empty((size, size, bands), dtype=np.float32)
    out[:] = np.asarray(fill, dtype=np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = image
    return out  # (size, size, C)


def _fitted(height: int, width: int, size: int) -> tuple[int, int]:
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass(frozen=True)
class BandInput:
    """Which bands of an image reach the model and how their values are normalised.

    in_bands: 3 takes R, G, B by the band policy (`rgb`: their 0-based indices in the file, None:
    the default rule by band count); any other count takes every band of the image in file order
    (the model's band adapter maps them to the tower's three channels). stats: per-band
    statistics of the training images (the band-statistics path), None: the 8-bit path.
    """

    in_bands: int = 3
    rgb: tuple[int, int, int] | None = None
    stats: BandStats | None = None

    def __post_init__(self) -> None:
        if type(self.in_bands) is not int or self.in_bands < 1:
            raise ConfigError(f"in_bands must be a positive integer, got {self.in_bands!r}")
        if self.rgb is not None:
            object.__setattr__(self, "rgb", tuple(self.rgb))
        if self.in_bands != 3 and self.stats is None:
            raise ConfigError(f"in_bands={self.in_bands} needs band statistics to normalise by")
        if self.stats is not None and self.stats.n_bands != self.in_bands:
            raise ConfigError(
                f"band statistics of {self.stats.n_bands} bands for in_bands={self.in_bands}"
            )

    @property
    def policy(self) -> BandPolicy:
        if self.in_bands == 3:
            return BandPolicy(rgb=self.rgb)
        return BandPolicy(all_bands=True)

    def decode(self, image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """The model's bands of a file or an array, (H, W, in_bands) in their own sample type."""
        return decode_bands(image, self.in_bands, self.policy, max_pixels)

    def to_dict(self) -> dict[str, Any]:
        stats = None if self.stats is None else self.stats.to_dict()
        rgb = None if self.rgb is None else list(self.rgb)
        return {"in_bands": self.in_bands, "rgb": rgb, "stats": stats}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> BandInput:
        """From a processor config (absent in folders saved before band input: the 8-bit path)."""
        if data is None:
            return cls()
        stats = None if data.get("stats") is None else BandStats.from_dict(data["stats"])
        return cls(int(data["in_bands"]), data.get("rgb"), stats)


def decode_bands(
    image: ImageInput, in_bands: int, policy: BandPolicy, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """(H, W, in_bands) in the image's own sample type, by `policy`; an array of exactly
    in_bands bands is taken as decoded already."""
    source = image if isinstance(image, str | Path) else "array"
    if isinstance(image, str | Path):
        bands = read_bands(image, policy, max_pixels=max_pixels)
    elif isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == in_bands:
        bands = image
    else:
        bands = select_bands(image, policy)
    if bands.shape[2] != in_bands:
        raise ImageError(
            f"{source}: {bands.shape[2]} band(s), the model takes {in_bands} (model.in_bands)"
        )
    if not (np.issubdtype(bands.dtype, np.integer) or np.issubdtype(bands.dtype, np.floating)):
        raise ImageError(f"{source}: unsupported sample type {bands.dtype}")
    return bands


def fit_band_input(
    in_bands: int,
    rgb: Sequence[int] | None,
    band_norm: str,
    paths: Sequence[str],
    show_progress: bool = False,
) -> BandInput:
    """The band input for a model trained on `paths`: the 8-bit path for 8-bit RGB data (auto:
    judged by the first training image) or band_norm="stretch"; otherwise statistics measured
    on up to MAX_IMAGES training images, evenly spaced (one bounded pass)."""
    from rich.progress import track

    rgb = None if rgb is None else tuple(rgb)
    if band_norm not in BAND_NORMS:
        raise ConfigError(f"band_norm={band_norm!r}: expected one of {BAND_NORMS}")
    sample = spaced(sorted(set(paths)))
    if in_bands == 3 and (band_norm == "stretch" or not sample):
        return BandInput(3, rgb)
    if not sample:
        raise ConfigError(f"in_bands={in_bands}: band statistics need training images")
    policy = BandPolicy(rgb=rgb) if in_bands == 3 else BandPolicy(all_bands=True)
    if band_norm == "auto" and in_bands == 3 and read_bands(sample[0], policy).dtype == np.uint8:
        return BandInput(3, rgb)
    images = track(sample, description="Measuring band statistics", disable=not show_progress)
    stats = band_statistics((decode_bands(p, in_bands, policy) for p in images), names=sample)
    return BandInput(in_bands, rgb, stats)


class ImageProcessor:
    """The one image path: decode -> bands -> letterbox to S x S -> normalise (module docstring)."""

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        bands: BandInput | None = None,
    ) -> None:
        if type(image_size) is not int or image_size <= 0:
            raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"mean and std need 3 values each, std > 0; got {mean}, {std}")
        self.image_size = image_size
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        # Padding in the mean colour normalises to ~0: no signal for the tower.
        self.fill = tuple(round(255 * float(m)) for m in mean)
        self.bands = bands or BandInput()
        stats = self.bands.stats
        if stats is not None:
            self.band_mean = np.asarray(stats.mean, dtype=np.float32).reshape(-1, 1, 1)
            self.band_std = np.asarray(stats.std, dtype=np.float32).reshape(-1, 1, 1)

    @property
    def in_bands(self) -> int:
        return self.bands.in_bands

    def decode(self, image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Path or array -> what `square` letterboxes, decoded once (the app, the API and chat
        decode an upload with it, then pass the array): (H, W, 3) uint8 on the 8-bit path, the
        model's bands in their sample type on the band-statistics path."""
        stats = self.bands.stats
        if stats is None:
            return load_image(image, max_pixels, self.bands.policy)
        bands = self.bands.decode(image, max_pixels)
        if (bands.dtype == np.uint8) != stats.eight_bit:
            source = image if isinstance(image, str | Path) else "array"
            raise ImageError(
                f"{source}: {bands.dtype} samples, but this model normalises {stats.dtype} "
                "images by their training band statistics: give it images of that sample type"
            )
        return bands

    def preview(self, decoded: np.ndarray) -> np.ndarray:
        """What `decode` gave as an (H, W, 3) uint8 picture for people (the app shows it): its
        R, G, B bands, stretched when they are not 8-bit."""
        if decoded.ndim == 3 and decoded.shape[2] == 3:
            return as_rgb(decoded)
        return as_rgb(decoded, BandPolicy(rgb=self.bands.rgb))

    def square(self, image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Path or array -> (S, S, 3) uint8 (8-bit path) or (S, S, C) float32 in the images'
        own units (band-statistics path): the stage the image store caches."""
        decoded = self.decode(image, max_pixels)
        if self.bands.stats is None:
            return letterbox(decoded, self.image_size, self.fill)
        values = decoded.astype(np.float32)  # (H, W, C)
        mean = np.asarray(self.bands.stats.mean, dtype=np.float32)
        values = np.where(np.isfinite(values), values, mean)  # no data -> the mean: no signal
        return letterbox_bands(values, self.image_size, self.bands.stats.mean)

    def normalize(self, square: np.ndarray) -> np.ndarray:
        """A square from `square` -> (C, S, S) float32."""
        size, eight_bit = self.image_size, self.bands.stats is None
        want = (size, size, 3 if eight_bit else self.in_bands)
        dtype = np.uint8 if eight_bit else np.float32
        if square.shape != want or square.dtype != dtype:
            raise ImageError(
                f"expected a {want} {np.dtype(dtype).name} square from ImageProcessor.square, "
                f"got {square.shape} {square.dtype}"
            )
        if eight_bit:
            x = square.transpose(2, 0, 1).astype(np.float32) / 255.0  # (3, S, S)
            return (x - self.mean) / self.std
        return (square.transpose(2, 0, 1) - self.band_mean) / self.band_std  # (C, S, S)

    def pixel_values(self, squares: Sequence[np.ndarray]) -> torch.Tensor:
        """B squares -> (B, C, S, S) float32 model input."""
        return torch.from_numpy(np.stack([self.normalize(s) for s in squares]))

    def __call__(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Paths or arrays -> (B, C, S, S) pixel_values."""
        return self.pixel_values([self.square(image) for image in images])
