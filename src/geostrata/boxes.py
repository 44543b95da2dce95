"""Boxes as the model reads and writes them: the GeoChat / VRSBench text convention.

A box is written ``{<x1><y1><x2><y2>}`` with integers 0-100 relative to the image (x to the
right, y down; x1 <= x2, y1 <= y2), so a box means the same at any image size and costs a few
tokens. Several boxes in one answer are written one after the other. Parsing is lenient about
spaces and forgiving of swapped corners; anything that is not four integers in braces is not a
box (an unparseable grounding answer counts as a miss, see evaluate/grounding).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geostrata.errors import InputError

BOX_SCALE = 100  # coordinates are integers 0..BOX_SCALE
# object size by the box's share of the image area (COCO's 32^2 / 96^2 pixels at 640^2, rounded)
SMALL_AREA, LARGE_AREA = 0.0025, 0.0225

_NUM = r"<\s*(-?\d+)\s*>\s*"
_ANGLE = r"(?:\|\s*<\s*-?\d+\s*>\s*)?"  # GeoChat's oriented boxes end with |<angle>: dropped
_BOX = re.compile(r"\{\s*" + _NUM * 4 + _ANGLE + r"\}")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in relative integer coordinates (0..BOX_SCALE)."""

    x1: int
    y1: int
    x2: int
    y2: int

    def __post_init__(self) -> None:
        values = (self.x1, self.y1, self.x2, self.y2)
        if not all(isinstance(v, int) and 0 <= v <= BOX_SCALE for v in values):
            raise InputError(f"box {values}: coordinates must be integers 0-{BOX_SCALE}")
        if self.x1 > self.x2 or self.y1 > self.y2:
            raise InputError(f"box {values}: needs x1 <= x2 and y1 <= y2")

    @classmethod
    def of(cls, values: list[int] | tuple[int, ...]) -> Box:
        """From a sequence [x1, y1, x2, y2] (a record's `box` field), validated."""
        if len(values) != 4:
            raise InputError(f"box {values!r}: needs 4 numbers [x1, y1, x2, y2]")
        return cls(*(int(v) for v in values))

    @property
    def area(self) -> float:
        """Share of the image the box covers (0..1)."""
        return (self.x2 - self.x1) * (self.y2 - self.y1) / BOX_SCALE**2

    def as_list(self) -> list[int]:
        return [self.x1, self.y1, self.x2, self.y2]

    def text(self) -> str:
        """``{<x1><y1><x2><y2>}``."""
        return f"{{<{self.x1}><{self.y1}><{self.x2}><{self.y2}>}}"

    def pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Corner coordinates in pixels of a `width` x `height` image."""
        sx, sy = width / BOX_SCALE, height / BOX_SCALE
        return self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy


def from_pixels(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> Box:
    """A pixel box (corners) of a `width` x `height` image in relative coordinates, clamped to
    the image; corners given in either order."""
    if width <= 0 or height <= 0:
        raise InputError(f"image size {width}x{height}: must be positive")
    xs = sorted(_clamp(round(v * BOX_SCALE / width)) for v in (x1, x2))
    ys = sorted(_clamp(round(v * BOX_SCALE / height)) for v in (y1, y2))
    return Box(xs[0], ys[0], xs[1], ys[1])


def parse_boxes(text: str) -> list[Box]:
    """Every box written in `text`; out-of-range values are clamped, swapped corners sorted."""
    boxes = []
    for match in _BOX.finditer(text):
        x1, y1, x2, y2 = (_clamp(int(v)) for v in match.groups())
        boxes.append(Box(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    return boxes


def parse_box(text: str) -> Box | None:
    """The first box in `text`, or None when there is none."""
    boxes = parse_boxes(text)
    return boxes[0] if boxes else None


def strip_boxes(text: str) -> str:
    """`text` without its boxes (what is said about them), spaces tidied."""
    return re.sub(r"\s{2,}", " ", _BOX.sub("", text)).strip()


def iou(a: Box, b: Box) -> float:
    """Intersection over union (0 for disjoint or zero-area boxes)."""
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    inter = max(w, 0) * max(h, 0)
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def size_bucket(box: Box) -> str:
    """Size "small" / "medium" / "large" by the share of the image the box covers."""
    if box.area < SMALL_AREA:
        return "small"
    return "medium" if box.area < LARGE_AREA else "large"


def draw_boxes(
    image: np.ndarray,
    boxes: Sequence[Box],
    color: tuple[int, int, int] = (255, 40, 40),
    labels: Sequence[str] = (),
    width: int | None = None,
) -> np.ndarray:
    """A copy of the (H, W, 3) uint8 `image` with `boxes` outlined (and labelled, when `labels`
    has one text per box): what chat, the app, the API and the report show."""
    from PIL import Image, ImageDraw

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(
            f"draw_boxes needs an (H, W, 3) uint8 image, got {image.shape} {image.dtype}"
        )
    height, wide = image.shape[:2]
    canvas = Image.fromarray(image)
    pen = ImageDraw.Draw(canvas)
    line = width or max(1, round(min(height, wide) / 100))
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = box.pixels(wide, height)
        pen.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=color, width=line)
        if i < len(labels) and labels[i]:
            pen.text((x1 + line + 1, y1 + line), labels[i], fill=color)
    return np.asarray(canvas)


def _clamp(value: int) -> int:
    return min(max(value, 0), BOX_SCALE)
