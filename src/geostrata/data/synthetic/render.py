"""Pixels: land-cover textures and the per-image look (illumination, haze, colour, noise, blur).

The look is drawn once per image and applied identically to the finished image and to its
object-free background, so tests can check that every annotated object changed the pixels.
"""

from dataclasses import dataclass

import numpy as np

from geostrata.data.synthetic.layout import Layout, smooth_field
from geostrata.data.synthetic.vocab import LAND_COVERS

# Mean RGB of each land cover, in LAND_COVERS order.
COVER_RGB = np.array(
    [
        [38, 66, 92],  # water
        [96, 128, 62],  # grass
        [42, 72, 38],  # forest_canopy
        [148, 118, 88],  # bare_soil
        [214, 198, 158],  # sand
        [138, 136, 130],  # pavement
        [112, 142, 64],  # cropland
    ],
    dtype=np.float32,
)
# Texture amplitudes per cover: (low-frequency, mid-frequency, crown-scale, crop rows).
COVER_TEXTURE = np.array(
    [
        [8, 3, 0, 0],
        [12, 8, 4, 0],
        [10, 6, 34, 0],
        [14, 8, 0, 0],
        [10, 5, 0, 0],
        [8, 6, 0, 0],
        [6, 4, 0, 16],
    ],
    dtype=np.float32,
)
HAZE_RGB = np.array([205, 210, 218], dtype=np.float32)


@dataclass(frozen=True)
class Look:
    """Per-image appearance parameters (one draw, applied to image and background alike)."""

    gain: float
    gradient: tuple[float, float]
    channel_gain: np.ndarray  # (3,)
    haze: float
    blur: bool
    noise: np.ndarray  # (S, S, 3) float32, additive


def blur3(img: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge padding; (S, S, C) -> (S, S, C)."""
    p = np.pad(img, ((1, 1), (0, 0), (0, 0)), mode="edge")
    img = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
    p = np.pad(img, ((0, 0), (1, 1), (0, 0)), mode="edge")
    return (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) / 4


def background(rng: np.random.Generator, layout: Layout, gsd: float) -> np.ndarray:
    """Textured land-cover image (S, S, 3) float32 from the layout; colours jittered per image.

    `gsd` > 1 means coarser ground sampling: textures (like objects) look smaller.
    """
    size = layout.mask.shape[0]
    palette = COVER_RGB + rng.normal(0.0, 9.0, COVER_RGB.shape).astype(np.float32)
    img = blur3(palette[layout.mask])  # (S, S, 3), soft cover edges
    tex = COVER_TEXTURE[layout.mask]  # (S, S, 4)
    low = smooth_field(rng, size, 4) * 2 - 1
    mid = smooth_field(rng, size, size / (7 * gsd)) * 2 - 1
    crowns = smooth_field(rng, size, size / (4.5 * gsd)) * 2 - 1
    shade = tex[..., 0] * low + tex[..., 1] * mid + tex[..., 2] * crowns
    shade += tex[..., 3] * layout.detail
    img += shade[..., None]  # (S, S, 3)
    img += layout.tint * (layout.mask == LAND_COVERS.index("cropland"))[..., None]
    return img


def draw_look(rng: np.random.Generator, size: int) -> Look:
    """Sample illumination, colour cast, haze, sensor blur and noise for one image."""
    haze = float(rng.uniform(0.05, 0.4)) if rng.random() < 0.4 else 0.0
    sigma = rng.uniform(1.5, 6.0)
    return Look(
        gain=float(rng.uniform(0.78, 1.15)),
        gradient=(float(rng.uniform(-0.12, 0.12)), float(rng.uniform(-0.12, 0.12))),
        channel_gain=rng.uniform(0.95, 1.05, 3).astype(np.float32),
        haze=haze,
        blur=bool(rng.random() < 0.3),
        noise=rng.normal(0.0, sigma, (size, size, 3)).astype(np.float32),
    )


def apply_look(img: np.ndarray, look: Look) -> np.ndarray:
    """Apply a look to a float image (S, S, 3) and quantise to uint8 RGB."""
    size = img.shape[0]
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    light = look.gain * (1 + look.gradient[0] * ramp[None, :] + look.gradient[1] * ramp[:, None])
    out = img * light[..., None] * look.channel_gain  # (S, S, 3)
    if look.blur:
        out = blur3(out)
    out = out * (1 - look.haze) + HAZE_RGB * look.haze
    out = out + look.noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
