"""Objects: shapes, placement and drawing of the object level of a scene.

Each object is drawn from polygon/ellipse masks (Pillow rasterises them), placed by rejection
sampling on the land covers it may sit on, never overlapping another object, and annotated with
the tight axis-aligned box of the pixels its body covers: [x0, y0, x1, y1] with x1, y1
exclusive, so `image[y0:y1, x0:x1]` is exactly the box. Shadows are drawn but not boxed.
Roads and runways are linear features: they are painted into the land-cover mask as pavement
(they are paved surfaces) and also listed as objects.
"""

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from geostrata.data.synthetic.vocab import LAND_COVERS

Point = tuple[float, float]
DEFAULT_SIZE: dict[str, tuple[float, float]] = {
    "building": (6.0, 11.0),
    "car": (4.0, 5.5),
    "ship": (8.0, 14.0),
    "airplane": (13.0, 22.0),
    "storage_tank": (5.0, 11.0),
    "tree": (3.0, 7.0),
    "sports_court": (13.0, 19.0),
    "road": (3.0, 5.0),
    "runway": (9.0, 13.0),
}
ALLOWED: dict[str, tuple[str, ...]] = {
    "building": ("grass", "pavement", "bare_soil", "sand", "cropland"),
    "car": ("pavement",),
    "ship": ("water",),
    "airplane": ("pavement",),
    "storage_tank": ("pavement", "bare_soil"),
    "tree": ("grass", "bare_soil", "sand", "cropland"),
    "sports_court": ("grass", "pavement"),
}
# Drawing order: large things first (they need room), tree crowns last (they sit on top).
PLACE_ORDER = ("sports_court", "building", "storage_tank", "airplane", "ship", "car", "tree")
ROOFS = np.array([[165, 82, 62], [118, 118, 124], [82, 76, 80], [142, 102, 72], [192, 186, 176]])
CARS = np.array([[228, 228, 228], [34, 34, 38], [172, 36, 36], [40, 72, 152], [172, 172, 178]])
HULLS = np.array([[236, 236, 236], [160, 160, 165], [150, 44, 36], [28, 28, 30], [205, 120, 40]])
COURTS = np.array([[70, 140, 82], [186, 96, 66], [56, 96, 166], [150, 72, 60]])
# What each palette row is called (referring expressions, region descriptions, dialogues); the
# look of an image (light, haze) shifts the pixels, never the name.
ROOF_NAMES = ("red", "grey", "dark grey", "brown", "white")
FLAT_ROOF = "white"  # large buildings have flat pale roofs
CAR_NAMES = ("white", "black", "red", "blue", "grey")
HULL_NAMES = ("white", "grey", "red", "black", "orange")
COURT_NAMES = ("green", "orange", "blue", "red")


@dataclass
class Canvas:
    """The image being drawn and the bookkeeping placement needs (mutated in place)."""

    image: np.ndarray  # (S, S, 3) float32
    mask: np.ndarray  # (S, S) uint8 land-cover indices
    sun: Point  # unit vector shadows point along
    angle: float  # dominant orientation of the man-made layout, radians
    scale: float  # pixels per nominal pixel (image size and ground-sample distance)
    occupied: np.ndarray = field(init=False)  # (S, S) bool
    linear: np.ndarray = field(init=False)  # (S, S) bool, road and runway pixels
    objects: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.occupied = np.zeros(self.mask.shape, dtype=bool)
        self.linear = np.zeros(self.mask.shape, dtype=bool)

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])


@dataclass(frozen=True)
class Shape:
    """A candidate object: its body (boxed) and paint operations, applied in order.

    Each operation is (mask, rgb, alpha): pixels become (1 - alpha) * old + alpha * rgb.
    """

    body: np.ndarray
    ops: list[tuple[np.ndarray, np.ndarray, float]]
    colour: str = ""  # the colour name of the body's paint, where it has one (draw.*_NAMES)


def _new(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    canvas = Image.new("L", (size, size), 0)
    return canvas, ImageDraw.Draw(canvas)


def polygon(size: int, points: list[Point], outline: bool = False) -> np.ndarray:
    """Boolean (S, S) mask of a filled polygon (or only its 1-pixel outline)."""
    img, draw = _new(size)
    if outline:
        draw.polygon(points, outline=255)
    else:
        draw.polygon(points, fill=255)
    return np.asarray(img) > 0


def disc(size: int, cx: float, cy: float, r: float, outline: bool = False) -> np.ndarray:
    """Boolean (S, S) mask of a disc (or its rim) of radius r centred at (cx, cy)."""
    img, draw = _new(size)
    box = (cx - r, cy - r, cx + r, cy + r)
    if outline:
        draw.ellipse(box, outline=255)
    else:
        draw.ellipse(box, fill=255)
    return np.asarray(img) > 0


def line(size: int, a: Point, b: Point, width: float) -> np.ndarray:
    """Boolean (S, S) mask of a straight band from a to b."""
    img, draw = _new(size)
    draw.line([a, b], fill=255, width=max(1, int(round(width))))
    return np.asarray(img) > 0


def rect(c: Point, length: float, width: float, angle: float) -> list[Point]:
    """Corners of a rectangle centred at c, `length` along `angle`, `width` across it."""
    ux, uy = math.cos(angle), math.sin(angle)
    hl, hw = length / 2, width / 2
    return [(c[0] + a * hl * ux - b * hw * uy, c[1] + a * hl * uy + b * hw * ux)
            for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]  # fmt: skip


def along(c: Point, angle: float, d: float) -> Point:
    """The point d pixels from c in direction `angle`."""
    return (c[0] + d * math.cos(angle), c[1] + d * math.sin(angle))


def shifted(points: list[Point], dx: float, dy: float) -> list[Point]:
    return [(x + dx, y + dy) for x, y in points]


def paint(canvas: Canvas, shape: Shape) -> None:
    """Apply a shape's operations to the canvas image."""
    for mask, rgb, alpha in shape.ops:
        canvas.image[mask] = canvas.image[mask] * (1 - alpha) + np.asarray(rgb) * alpha


def box_of(mask: np.ndarray) -> list[int]:
    """Tight [x0, y0, x1, y1] (x1, y1 exclusive) of a non-empty boolean mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def dilate(mask: np.ndarray) -> np.ndarray:
    """Grow a boolean mask by one pixel (4-neighbourhood), keeping objects a pixel apart."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def cover_lut(names: tuple[str, ...]) -> np.ndarray:
    """Boolean lookup over land-cover indices: True for the named covers."""
    return np.array([c in names for c in LAND_COVERS], dtype=bool)


def dashed(size: int, centre: Point, angle: float, period: float, dash: float) -> np.ndarray:
    """Boolean (S, S) mask of 1-pixel dashes along the infinite line through `centre`."""
    img, draw = _new(size)
    for t in np.arange(-2 * size, 2 * size, period):
        a = (centre[0] + t * math.cos(angle), centre[1] + t * math.sin(angle))
        b = (a[0] + dash * math.cos(angle), a[1] + dash * math.sin(angle))
        draw.line([a, b], fill=255, width=1)
    return np.asarray(img) > 0
