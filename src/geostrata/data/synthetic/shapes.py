"""What each object class looks like from above, as a `Shape` (body mask + paint operations).

Every maker takes the canvas (for its size, sun and layout orientation), a centre and a nominal
extent in pixels, and returns the candidate; placement decides whether it fits.
"""

import math
from collections.abc import Callable

import numpy as np

from geostrata.data.synthetic.draw import (
    CAR_NAMES,
    CARS,
    COURT_NAMES,
    COURTS,
    FLAT_ROOF,
    HULL_NAMES,
    HULLS,
    ROOF_NAMES,
    ROOFS,
    Canvas,
    Point,
    Shape,
    along,
    disc,
    line,
    polygon,
    rect,
    shifted,
)

SHADOW = np.zeros(3, dtype=np.float32)
WHITE = np.array([238, 238, 236], dtype=np.float32)


def _jitter(rng: np.random.Generator, rgb: np.ndarray, amount: float = 12.0) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float32) + rng.normal(0.0, amount, 3).astype(np.float32)


def _grid_angle(rng: np.random.Generator, canvas: Canvas) -> float:
    """Man-made things follow the layout's orientation, in steps of 90 degrees."""
    return canvas.angle + int(rng.integers(4)) * math.pi / 2 + rng.normal(0.0, 0.04)


def _shadow(canvas: Canvas, points: list[Point], height: float) -> np.ndarray:
    dx, dy = canvas.sun[0] * height, canvas.sun[1] * height
    return polygon(canvas.size, shifted(points, dx, dy))


def building(rng: np.random.Generator, canvas: Canvas, c: Point, extent: float) -> Shape:
    """A house with a two-tone gabled roof, or (if large) a flat roof with rooftop units."""
    angle, s = _grid_angle(rng, canvas), canvas.size
    width = extent * rng.uniform(0.55, 0.85)
    corners = rect(c, extent, width, angle)
    body = polygon(s, corners)
    ops = [(_shadow(canvas, corners, extent * rng.uniform(0.15, 0.3)), SHADOW, 0.5)]
    if extent < 12 * canvas.scale:
        pick = int(rng.integers(len(ROOFS)))
        roof = _jitter(rng, ROOFS[pick])
        half = rect(along(c, angle + math.pi / 2, width / 4), extent, width / 2, angle)
        ops += [(body, roof, 1.0), (polygon(s, half) & body, roof * 0.75, 1.0)]
        return Shape(body, ops, ROOF_NAMES[pick])
    roof = _jitter(rng, np.array([196, 200, 206]), 14.0)
    ops.append((body, roof, 1.0))
    for _ in range(int(rng.integers(1, 4))):
        u = along(c, angle, rng.uniform(-0.3, 0.3) * extent)
        unit = rect(u, extent * 0.15, width * 0.25, angle)
        ops.append((polygon(s, unit) & body, roof * 0.7, 1.0))
    return Shape(body, ops, FLAT_ROOF)


def car(rng: np.random.Generator, canvas: Canvas, c: Point, extent: float, angle: float) -> Shape:
    """A small rectangle in a car colour, with a darker windscreen band when big enough."""
    length = max(3.0, extent)
    corners = rect(c, length, max(2.0, length * 0.45), angle)
    body = polygon(canvas.size, corners)
    pick = int(rng.integers(len(CARS)))
    colour = _jitter(rng, CARS[pick], 8.0)
    ops = [(body, colour, 1.0)]
    if length >= 5:
        glass = rect(along(c, angle, length * 0.15), length * 0.2, length * 0.45, angle)
        ops.append((polygon(canvas.size, glass) & body, colour * 0.45, 1.0))
    return Shape(body, ops, CAR_NAMES[pick])


def ship(rng: np.random.Generator, canvas: Canvas, c: Point, extent: float) -> Shape:
    """A pointed hull with a deckhouse near the stern and a pale wake behind it."""
    angle, s = rng.uniform(0, 2 * math.pi), canvas.size
    half, beam = extent / 2, extent * rng.uniform(0.22, 0.3) / 2
    ux, uy, vx, vy = math.cos(angle), math.sin(angle), -math.sin(angle), math.cos(angle)
    hull = [(c[0] + a * ux + b * vx, c[1] + a * uy + b * vy)
            for a, b in ((-half, -beam), (half * 0.5, -beam), (half, 0), (half * 0.5, beam),
                         (-half, beam))]  # fmt: skip
    body = polygon(s, hull)
    stern = along(c, angle, -half)
    wake = [along(stern, angle + math.pi / 2, beam), along(stern, angle - math.pi / 2, beam),
            along(along(stern, angle, -extent * 0.7), angle - math.pi / 2, beam * 2),
            along(along(stern, angle, -extent * 0.7), angle + math.pi / 2, beam * 2)]  # fmt: skip
    pick = int(rng.integers(len(HULLS)))
    hull_rgb = _jitter(rng, HULLS[pick], 8.0)
    deck = rect(along(c, angle, -extent * 0.22), extent * 0.25, beam * 1.2, angle)
    ops = [(polygon(s, wake) & ~body, WHITE, 0.12), (body, hull_rgb, 1.0),
           (polygon(s, deck) & body, _jitter(rng, WHITE * 0.92, 6.0), 1.0)]  # fmt: skip
    return Shape(body, ops, HULL_NAMES[pick])


def airplane(rng: np.random.Generator, canvas: Canvas, c: Point, extent: float) -> Shape:
    """A cross: fuselage, straight wings and a tailplane, in pale paint, with a low shadow."""
    angle, s = rng.uniform(0, 2 * math.pi), canvas.size
    fuselage = rect(c, extent, max(2.0, extent * 0.13), angle)
    wing = rect(along(c, angle, extent * 0.05), max(2.0, extent * 0.17), extent * 0.95, angle)
    tail = rect(along(c, angle, -extent * 0.42), max(1.5, extent * 0.1), extent * 0.38, angle)
    parts = [polygon(s, p) for p in (fuselage, wing, tail)]
    body = parts[0] | parts[1] | parts[2]
    drop = extent * 0.12
    shadow = np.zeros_like(body)
    for p in (fuselage, wing, tail):
        shadow |= polygon(s, shifted(p, canvas.sun[0] * drop, canvas.sun[1] * drop))
    paint_rgb = _jitter(rng, np.array([232, 234, 236]), 6.0)
    return Shape(body, [(shadow, SHADOW, 0.45), (body, paint_rgb, 1.0)])


def storage_tank(rng: np.random.Generator, canvas: Canvas, c: Point, extent: float) -> Shape:
    """A round tank: pale roof, darker rim, a crescent of shadow on the far side."""
    r, s = extent / 2, canvas.size
    body = disc(s, c[0], c[1], r)
    shadow = disc(s, c[0] + canvas.sun[0] * r * 0.5, c[1] + canvas.sun[1] * r * 0.5, r)
    roof = _jitter(rng, np.array([214, 214, 210]), 8.0)
    rim = disc(s, c[0], c[1], max(r - 1.0, 1.0), outline=True) & body
    return Shape(body, [(shadow, SHADOW, 0.5), (body, roof, 1.0), (rim, roof * 0.7, 1.0)])


def tree(rng: np.random.Generator, canvas: Canvas, c: Point, extent: float) -> Shape:
    """A round crown, lit on the sun side, casting a shadow on the other."""
    r, s = max(1.3, extent / 2), canvas.size
    body = disc(s, c[0], c[1], r)
    shadow = disc(s, c[0] + canvas.sun[0] * r * 0.8, c[1] + canvas.sun[1] * r * 0.8, r)
    crown = _jitter(rng, np.array([40, 78, 32]), 8.0)
    lit = disc(s, c[0] - canvas.sun[0] * r * 0.35, c[1] - canvas.sun[1] * r * 0.35, r * 0.55)
    return Shape(body, [(shadow, SHADOW, 0.5), (body, crown, 1.0), (lit & body, crown * 1.35, 1.0)])


def sports_court(rng: np.random.Generator, canvas: Canvas, c: Point, extent: float) -> Shape:
    """A coloured court with white boundary and centre lines."""
    angle, s = _grid_angle(rng, canvas), canvas.size
    width = extent * rng.uniform(0.5, 0.6)
    corners = rect(c, extent, width, angle)
    body = polygon(s, corners)
    lines = polygon(s, rect(c, extent - 2, width - 2, angle), outline=True)
    half = width / 2 - 1
    lines |= line(s, along(c, angle + math.pi / 2, half), along(c, angle - math.pi / 2, half), 1)
    pick = int(rng.integers(len(COURTS)))
    surface = _jitter(rng, COURTS[pick], 8.0)
    return Shape(body, [(body, surface, 1.0), (lines & body, WHITE, 1.0)], COURT_NAMES[pick])


MAKERS: dict[str, Callable[..., Shape]] = {
    "building": building,
    "ship": ship,
    "airplane": airplane,
    "storage_tank": storage_tank,
    "tree": tree,
    "sports_court": sports_court,
}
