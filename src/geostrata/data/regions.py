"""Boxes as the annotation files write them, read strictly into `geostrata.boxes.Box`.

- Box text, the GeoChat / VRSBench convention: ``{<x1><y1><x2><y2>}``, integers 0-100. GeoChat
  adds an angle for oriented boxes, ``{<x1><y1><x2><y2>|<θ>}`` (degrees, the rectangle turned
  about its centre): only the axis-aligned part x1..y2 is kept and the angle dropped, so an
  oriented box becomes its unrotated rectangle (not the hull of the turned one).
- Pixel polygons (GeoChat-Bench referring ground truth): four [x, y] corners in pixels, or eight
  numbers; the box is their axis-aligned hull, made relative with the image's size.
- Four numbers already on the 0-100 scale (a box list some exports write instead of text).

Unlike `geostrata.boxes.parse_boxes`, which reads a model's answer leniently (clamped, sorted),
ground truth that is not exactly such a box is an AnnotationError naming where it is.
"""

from __future__ import annotations

import math
import re
from typing import Any

from geostrata.boxes import BOX_SCALE, Box, from_pixels
from geostrata.errors import AnnotationError

_GROUP = re.compile(r"\{([^{}]*)\}")
_INT = r"<\s*(-?\d+)\s*>\s*"
_ANGLE = r"(?:\|\s*<\s*-?\d+(?:\.\d+)?\s*>\s*)?"
_BOX_BODY = re.compile(r"\s*" + _INT * 4 + _ANGLE)


def text_boxes(text: str, where: str) -> list[Box]:
    """Every ``{<x1><y1><x2><y2>}`` (optionally ``|<θ>``) box in `text`; none, or a brace group
    that is not such a box, is an error."""
    groups = _GROUP.findall(text)
    if not groups:
        raise AnnotationError(f"{where}: expected a box {{<x1><y1><x2><y2>}}, got {text!r:.80}")
    boxes = []
    for body in groups:
        match = _BOX_BODY.fullmatch(body)
        if match is None:
            raise AnnotationError(
                f"{where}: {{{body}}} is not a box {{<x1><y1><x2><y2>}} (optionally |<angle>)"
            )
        boxes.append(_checked([int(v) for v in match.groups()], where))
    return boxes


def has_box_text(text: str) -> bool:
    """Whether `text` holds at least one box in the text convention."""
    return any(_BOX_BODY.fullmatch(body) for body in _GROUP.findall(text))


def scale_box(values: Any, where: str) -> Box:
    """Four numbers [x1, y1, x2, y2] on the 0-100 scale (rounded to integers)."""
    if not _numbers(values, 4):
        raise AnnotationError(
            f"{where}: a box must be 4 numbers [x1, y1, x2, y2], got {values!r:.80}"
        )
    return _checked([round(v) for v in values], where)


def polygon_box(points: Any, width: int, height: int, where: str) -> Box:
    """The axis-aligned hull of pixel corners ([[x, y], ...] or [x1, y1, x2, y2, ...])."""
    flat = _flat_points(points)
    if flat is None or len(flat) < 4 or len(flat) % 2:
        raise AnnotationError(
            f"{where}: a polygon must be [[x, y], ...] or [x1, y1, x2, y2, ...] pixels, "
            f"got {points!r:.80}"
        )
    xs, ys = flat[0::2], flat[1::2]
    return from_pixels(min(xs), min(ys), max(xs), max(ys), width, height)


def _flat_points(points: Any) -> list[float] | None:
    """[[x, y], ...] or [x, y, ...] as one flat list of numbers; None for anything else."""
    if isinstance(points, list) and points and all(_numbers(p, 2) for p in points):
        return [v for p in points for v in p]
    return points if _numbers(points, len(points) if isinstance(points, list) else -1) else None


def _numbers(values: Any, count: int) -> bool:
    """`values` is a list of `count` finite numbers (bools are not numbers here)."""
    return (
        isinstance(values, list)
        and len(values) == count
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        )
    )


def _checked(values: list[int], where: str) -> Box:
    x1, y1, x2, y2 = values
    if not all(0 <= v <= BOX_SCALE for v in values):
        raise AnnotationError(f"{where}: box {values} has coordinates outside 0-{BOX_SCALE}")
    if x1 > x2 or y1 > y2:
        raise AnnotationError(f"{where}: box {values} needs x1 <= x2 and y1 <= y2")
    return Box(x1, y1, x2, y2)
