"""Referring expressions: phrases that pick out exactly one object of an image.

An expression is an object class plus filters (its colour, the land cover it stands on, the ninth
of the image its centre lies in) and at most one selector (largest / smallest, leftmost /
rightmost / topmost / bottommost, closest to an object that is alone of its class). It is kept
only when it is unique against every object of the image, with margins a looker would agree
with: the target satisfies each filter surely (its centre well inside its ninth), no other
object satisfies them even loosely (near the ninth's edge counts), and a selector's winner beats
the runner-up clearly. Only minimal expressions are kept (no term can be dropped), and an object
without any is never asked about.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from geostrata.boxes import Box, from_pixels
from geostrata.data.synthetic.vocab import COUNTABLE, spaced

# the ninths of the image (row, column) and how an expression places an object in one
NINTHS: dict[tuple[int, int], str] = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "centre", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}  # fmt: skip
PART_PHRASES: dict[str, str] = {
    "top": "at the top of the image",
    "bottom": "at the bottom of the image",
    "left": "on the left of the image",
    "right": "on the right of the image",
    "centre": "in the centre of the image",
}
PART_MARGIN = 0.04  # image share a centre must keep from a ninth's edge (and others may cross)
SIZE_MARGIN = 1.5  # the largest (smallest) is this many times larger (smaller) than the next
POSITION_MARGIN = 0.06  # the leftmost centre is this share of the image left of the next one
CLOSEST_MARGIN = 1.5  # the runner-up is this many times farther from the anchor
CLOSEST_REACH = 0.35  # the closest one is at most this share of the image from the anchor
SIZE_SELECTORS = ("largest", "smallest")
POSITION_SELECTORS = ("leftmost", "rightmost", "topmost", "bottommost")
MAX_TERMS = 2  # filters + selector on top of the class


@dataclass(frozen=True)
class Thing:
    """One countable object as expressions see it: geometry in image shares (0..1)."""

    index: int  # position in the annotation's object list
    name: str
    colour: str
    cover: str
    cx: float
    cy: float
    area: float

    @property
    def ninth(self) -> tuple[int, int]:
        return min(int(self.cy * 3), 2), min(int(self.cx * 3), 2)


@dataclass(frozen=True)
class Expression:
    """A class with optional filters and one optional selector (see the module docstring)."""

    name: str
    colour: str = ""
    cover: str = ""
    part: str = ""  # a NINTHS name
    selector: str = ""  # SIZE_SELECTORS, POSITION_SELECTORS or "closest"
    anchor: str = ""  # the class of the object "closest" measures from

    @property
    def terms(self) -> int:
        return sum(bool(v) for v in (self.colour, self.cover, self.part, self.selector))

    def text(self) -> str:
        """'the largest red car', 'the building on sand', 'the tree closest to the ship'."""
        words = ["the"]
        if self.selector in SIZE_SELECTORS + POSITION_SELECTORS:
            words.append(self.selector)
        words += [self.colour] if self.colour else []
        words.append(spaced(self.name))
        if self.cover:
            words.append(f"on {spaced(self.cover)}")
        if self.part:
            words.append(PART_PHRASES.get(self.part, f"in the {self.part} of the image"))
        if self.selector == "closest":
            words.append(f"closest to the {spaced(self.anchor)}")
        return " ".join(words)


@dataclass(frozen=True)
class Referring:
    """A unique expression of one object and the object's box."""

    index: int  # the object's position in the annotation's object list
    expression: Expression
    box: Box

    @property
    def text(self) -> str:
        return self.expression.text()


def things(objects: list[dict], size: int) -> list[Thing]:
    """The countable objects of an annotation (pixel boxes of a `size` image) as Things."""
    out = []
    for i, obj in enumerate(objects):
        if obj["class"] not in COUNTABLE:
            continue
        x0, y0, x1, y1 = obj["box"]
        out.append(Thing(i, obj["class"], obj.get("colour", ""), obj.get("cover", ""),
                         (x0 + x1) / 2 / size, (y0 + y1) / 2 / size,
                         (x1 - x0) * (y1 - y0) / size**2))  # fmt: skip
    return out


def _in_ninth(t: Thing, part: str, margin: float) -> bool:
    """Centre inside the named ninth shrunk by `margin` (grown when negative)."""
    row, col = next(k for k, v in NINTHS.items() if v == part)
    return (col / 3 + margin <= t.cx < (col + 1) / 3 - margin
            and row / 3 + margin <= t.cy < (row + 1) / 3 - margin)  # fmt: skip


def _passes(expr: Expression, t: Thing, strict: bool) -> bool:
    if t.name != expr.name or (expr.colour and t.colour != expr.colour):
        return False
    if expr.cover and t.cover != expr.cover:
        return False
    return not expr.part or _in_ninth(t, expr.part, PART_MARGIN if strict else -PART_MARGIN)


def _clear_winner(
    values: list[tuple[float, Thing]], ratio: float = 0.0, gap: float = 0.0
) -> Thing | None:
    """The Thing with the smallest value when it beats the runner-up by `ratio` or `gap`."""
    if len(values) < 2:
        return None
    ranked = sorted(values, key=lambda vt: vt[0])
    (best, winner), (second, _) = ranked[0], ranked[1]
    if ratio and not second >= ratio * best:
        return None
    if gap and not second - best >= gap:
        return None
    return winner


def _select(expr: Expression, group: list[Thing], every: list[Thing]) -> Thing | None:
    s = expr.selector
    if s == "largest":
        return _clear_winner([(1 / max(t.area, 1e-9), t) for t in group], ratio=SIZE_MARGIN)
    if s == "smallest":
        return _clear_winner([(t.area, t) for t in group], ratio=SIZE_MARGIN)
    if s in POSITION_SELECTORS:
        key = {"leftmost": lambda t: t.cx, "rightmost": lambda t: -t.cx,
               "topmost": lambda t: t.cy, "bottommost": lambda t: -t.cy}[s]  # fmt: skip
        return _clear_winner([(key(t), t) for t in group], gap=POSITION_MARGIN)
    anchors = [t for t in every if t.name == expr.anchor]
    if s != "closest" or len(anchors) != 1 or expr.anchor == expr.name:
        return None
    a = anchors[0]
    near = [(math.hypot(t.cx - a.cx, t.cy - a.cy), t) for t in group]
    winner = _clear_winner(near, ratio=CLOSEST_MARGIN)
    if winner is None or math.hypot(winner.cx - a.cx, winner.cy - a.cy) > CLOSEST_REACH:
        return None
    return winner


def referent(expr: Expression, every: list[Thing]) -> Thing | None:
    """The one object `expr` refers to among `every` object of the image, or None when it
    fits none or several (or a selector has no clear winner)."""
    loose = [t for t in every if _passes(expr, t, strict=False)]
    if expr.selector:
        found = _select(expr, loose, every)
    else:
        found = loose[0] if len(loose) == 1 else None
    return found if found is not None and _passes(expr, found, strict=True) else None


def _options(t: Thing, every: list[Thing]) -> list[Expression]:
    """Every expression of class, filters and selector that could describe `t`."""
    colours = ["", t.colour] if t.colour else [""]
    covers = ["", t.cover] if t.cover else [""]
    parts = ["", NINTHS[t.ninth]]
    selectors = [("", ""), *((s, "") for s in SIZE_SELECTORS + POSITION_SELECTORS)]
    alone = {u.name for u in every} - {t.name}
    selectors += [("closest", a) for a in sorted(alone)
                  if sum(u.name == a for u in every) == 1]  # fmt: skip
    out = []
    for colour, cover, part, (selector, anchor) in itertools.product(
        colours, covers, parts, selectors
    ):
        expr = Expression(t.name, colour, cover, part, selector, anchor)
        if expr.terms <= MAX_TERMS:
            out.append(expr)
    return out


def _shorter(expr: Expression) -> list[Expression]:
    """`expr` with one term dropped (each way)."""
    drops = [{"colour": ""}, {"cover": ""}, {"part": ""}, {"selector": "", "anchor": ""}]
    return [replace(expr, **d) for d in drops if getattr(expr, next(iter(d)))]


def unique_expressions(target: Thing, every: list[Thing]) -> list[Expression]:
    """The minimal expressions that pick out `target` alone (fewest terms first)."""
    unique = [e for e in _options(target, every) if referent(e, every) == target]
    found = set(unique)
    minimal = [e for e in unique if not any(s in found for s in _shorter(e))]
    return sorted(minimal, key=lambda e: (e.terms, e.text()))


def refer(rng: np.random.Generator, objects: list[dict], size: int, limit: int) -> list[Referring]:
    """Up to `limit` objects of an annotation with a unique expression each (distinct objects,
    in random order; the expression drawn among the object's minimal ones)."""
    every = things(objects, size)
    out = []
    for k in rng.permutation(len(every)):
        if len(out) == limit:
            break
        t = every[int(k)]
        options = unique_expressions(t, every)
        if options:
            expr = options[int(rng.integers(len(options)))]
            x0, y0, x1, y1 = objects[t.index]["box"]
            out.append(Referring(t.index, expr, from_pixels(x0, y0, x1, y1, size, size)))
    return out
