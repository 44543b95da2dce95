"""Placing objects: linear features first (they reshape the land cover), then things.

An object is kept only if it fits (inside the image, on its allowed land covers, clear of other
objects), so the annotation lists exactly what was drawn; a crowded scene simply ends up with
fewer objects than its recipe asked for.
"""

import math
from dataclasses import dataclass

import numpy as np

from geostrata.data.synthetic.draw import (
    ALLOWED,
    Canvas,
    Point,
    Shape,
    along,
    box_of,
    cover_lut,
    dashed,
    dilate,
    line,
    paint,
)
from geostrata.data.synthetic.layout import COVER_INDEX
from geostrata.data.synthetic.shapes import MAKERS, car
from geostrata.data.synthetic.vocab import LAND_COVERS

ATTEMPTS = 40


@dataclass(frozen=True)
class Linear:
    """A road or runway: its pixels (S, S) bool, direction and through-point."""

    name: str
    pixels: np.ndarray
    angle: float
    centre: Point
    width: float


def plan_linear(
    rng: np.random.Generator, canvas: Canvas, name: str, count: int, extent: tuple[float, float]
) -> list[Linear]:
    """Lay out roads/runways and mark them as pavement in the land-cover mask.

    Called before the background is rendered, so the pavement texture lies under them.
    """
    s, out = canvas.size, []
    for i in range(count):
        turn = math.pi / 2 if (i % 2 == 1 and rng.random() < 0.8) else 0.0
        angle = canvas.angle + turn + rng.normal(0.0, 0.03)
        if name == "road" and rng.random() < 0.25:
            angle = rng.uniform(0, math.pi)
        spread = (0.3, 0.7) if name == "runway" else (0.2, 0.8)
        centre = (rng.uniform(*spread) * s, rng.uniform(*spread) * s)
        width = max(2.0, rng.uniform(*extent) * canvas.scale)
        pixels = line(s, along(centre, angle, -2 * s), along(centre, angle, 2 * s), width)
        canvas.mask[pixels] = COVER_INDEX["pavement"]
        out.append(Linear(name, pixels, angle, centre, width))
    return out


def paint_linear(rng: np.random.Generator, canvas: Canvas, features: list[Linear]) -> None:
    """Paint asphalt/concrete with centre markings, and annotate each feature."""
    for f in features:
        if not f.pixels.any():
            continue
        base = np.array([70, 70, 74] if f.name == "road" else [176, 176, 170], dtype=np.float32)
        base += rng.normal(0.0, 6.0, 3).astype(np.float32)
        ops = [(f.pixels, base, 1.0)]
        if f.width >= 4:
            period = 8.0 if f.name == "runway" else 5.0
            marks = dashed(canvas.size, f.centre, f.angle, period * canvas.scale, period / 2)
            ops.append((marks & f.pixels, np.array([236, 236, 220], dtype=np.float32), 0.9))
        paint(canvas, Shape(f.pixels, ops))
        canvas.linear |= f.pixels
        canvas.objects.append({"class": f.name, "box": box_of(f.pixels)})


def place(
    rng: np.random.Generator, canvas: Canvas, name: str, count: int, extent: tuple[float, float]
) -> int:
    """Place up to `count` objects of one class; returns how many fit."""
    lut = cover_lut(ALLOWED[name])
    if name == "car" and count >= 6:
        return _place_rows(rng, canvas, count, float(np.mean(extent)) * canvas.scale, lut)
    last: Point | None = None
    placed = 0
    for _ in range(count):
        for _ in range(ATTEMPTS):
            size = rng.uniform(*extent) * canvas.scale
            c = _candidate(rng, canvas, name, size, last)
            if not _cheap_ok(canvas, lut, c, size):
                continue
            shape = _make(rng, canvas, name, c, size)
            if _fits(canvas, shape.body, lut, name):
                _accept(canvas, shape, name, spacing=name != "tree")
                last, placed = c, placed + 1
                break
    return placed


def _place_rows(
    rng: np.random.Generator, canvas: Canvas, count: int, size: float, lut: np.ndarray
) -> int:
    """Park cars side by side in a block of rows (a random span of bays), then elsewhere."""
    bays = _lattice(canvas, size)
    if not bays:
        return 0
    rows = sorted({row for row, _, _ in bays})
    first_row = rows[int(rng.integers(len(rows)))]
    left = int(rng.choice([col for _, col, _ in bays]))
    span = int(rng.integers(5, 13))
    block = [b for b in bays if left <= b[1] < left + span]
    block.sort(key=lambda b: ((b[0] - first_row) % (max(rows) + 1), b[1]))
    rest = [b for b in bays if not left <= b[1] < left + span]
    placed = 0
    for _, _, c in block + rest:
        if placed == count:
            break
        if rng.random() < 0.15 or not _cheap_ok(canvas, lut, c, size):
            continue  # an empty bay now and then
        angle = canvas.angle + math.pi / 2 + rng.normal(0.0, 0.04)
        shape = car(rng, canvas, c, size, angle)
        if _fits(canvas, shape.body, lut, "car"):
            _accept(canvas, shape, "car", spacing=False)
            placed += 1
    return placed


def _lattice(canvas: Canvas, size: float) -> list[tuple[int, int, Point]]:
    """Parking bays (row, column, centre) for cars `size` long, side by side along canvas.angle,
    rows in back-to-back pairs separated by an aisle; only bays inside the image."""
    s, u, v = canvas.size, canvas.angle, canvas.angle + math.pi / 2
    pitch_u, pair = max(2.0, size * 0.45) + 2.0, 2 * size + 2 + size * 1.2
    n_u, n_v = int(s / pitch_u) + 2, int(s / pair) + 2
    bays = []
    for j in range(2 * n_v + 1):
        for half in (0, 1):
            for i in range(2 * n_u + 1):
                offset = (j - n_v) * pair + half * (size + 2)
                x, y = along(along((s / 2, s / 2), u, (i - n_u) * pitch_u), v, offset)
                if size / 2 < x < s - size / 2 and size / 2 < y < s - size / 2:
                    bays.append((2 * j + half, i, (x, y)))
    return bays


def _candidate(
    rng: np.random.Generator, canvas: Canvas, name: str, size: float, last: Point | None
) -> Point:
    """Where to try next: next to the previous one (trees and tanks cluster), or anywhere."""
    s = canvas.size
    if last is not None and name in ("tree", "storage_tank") and rng.random() < 0.5:
        return along(last, rng.uniform(0, 2 * math.pi), size * rng.uniform(1.0, 1.6))
    return (rng.uniform(0, s), rng.uniform(0, s))


def _cheap_ok(canvas: Canvas, lut: np.ndarray, c: Point, size: float) -> bool:
    """Reject hopeless candidates before rasterising anything."""
    r = size * 0.55 + 1
    if not (r <= c[0] < canvas.size - r and r <= c[1] < canvas.size - r):
        return False
    x, y = int(c[0]), int(c[1])
    return bool(lut[canvas.mask[y, x]]) and not canvas.occupied[y, x]


def _make(rng: np.random.Generator, canvas: Canvas, name: str, c: Point, size: float) -> Shape:
    if name != "car":
        return MAKERS[name](rng, canvas, c, size)
    if canvas.linear[int(c[1]), int(c[0])]:
        angle = canvas.angle + rng.integers(2) * math.pi / 2  # roads follow the layout grid
    else:
        angle = rng.uniform(0, 2 * math.pi)
    return car(rng, canvas, c, size, angle)


def _fits(canvas: Canvas, body: np.ndarray, lut: np.ndarray, name: str) -> bool:
    """Inside the image, clear of other objects, (nearly) all on allowed covers."""
    if body.sum() < 2 or body[0].any() or body[-1].any() or body[:, 0].any() or body[:, -1].any():
        return False
    if (body & canvas.occupied).any():
        return False
    if name != "car" and (body & canvas.linear).any():
        return False
    need = 1.0 if name == "ship" else 0.85
    return float(lut[canvas.mask[body]].mean()) >= need


def _accept(canvas: Canvas, shape: Shape, name: str, spacing: bool) -> None:
    paint(canvas, shape)
    canvas.occupied |= dilate(shape.body) if spacing else shape.body
    obj = {"class": name, "box": box_of(shape.body), "cover": _cover_under(canvas, shape.body)}
    canvas.objects.append(obj | ({"colour": shape.colour} if shape.colour else {}))


def _cover_under(canvas: Canvas, body: np.ndarray) -> str:
    """The land cover most of an object's body stands on (ties: first in LAND_COVERS)."""
    votes = np.bincount(canvas.mask[body], minlength=len(LAND_COVERS))
    return LAND_COVERS[int(np.argmax(votes))]
