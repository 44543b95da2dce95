"""Region descriptions: what is inside a box, from the annotation alone.

Two kinds of region: an object's box ("A small red car on pavement.") and a land-cover area's
box (layout.cover_areas: "An area of mostly grass with some pavement, with 3 buildings and a
tree."). Each region has its references, the canonical description first (what training uses)
and a shorter one (what evaluation also accepts).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from geostrata.boxes import Box, from_pixels, size_bucket
from geostrata.data.synthetic.describe import article, listing
from geostrata.data.synthetic.vocab import COUNTABLE, OBJECT_CLASSES, spaced

SIZE_WORDS = {"small": "small", "medium": "medium-sized", "large": "large"}
PURE_AREA = 0.8  # an area whose own cover fills this share of its box is "an area of X"
SOME_COVER = 0.15  # a second cover with this share of the box is "with some Y"


@dataclass(frozen=True)
class Region:
    """A box and what is in it: level "object" (an object's box) or "region" (a cover area)."""

    box: Box
    level: str
    references: tuple[str, ...]  # canonical description first


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def object_region(obj: dict, size: int) -> Region:
    """The box of one object (pixel box of a `size` image) and its description."""
    box = from_pixels(*obj["box"], size, size)
    name = spaced(obj["class"])
    colour = f"{obj['colour']} " if obj.get("colour") else ""
    head = f"{SIZE_WORDS[size_bucket(box)]} {colour}{name}"
    full = f"{article(head)} {head}" + (f" on {spaced(obj['cover'])}" if obj.get("cover") else "")
    short = f"{article(colour or name)} {colour}{name}"
    return Region(box, "object", (capitalised(full) + ".", capitalised(short) + "."))


def objects_inside(objects: list[dict], box: list[int]) -> dict[str, int]:
    """Countable objects whose box centre lies inside a pixel box, per class (zeros included)."""
    x0, y0, x1, y1 = box
    counts = Counter(
        o["class"]
        for o in objects
        if o["class"] in COUNTABLE
        and x0 <= (o["box"][0] + o["box"][2]) / 2 < x1
        and y0 <= (o["box"][1] + o["box"][3]) / 2 < y1
    )
    return {k: counts[k] for k in OBJECT_CLASSES}


def area_region(area: dict, objects: list[dict], size: int) -> Region:
    """A land-cover area (layout.cover_areas) and its description: its covers and objects."""
    cover, inside = area["cover"], area["inside"]
    head = f"an area of {spaced(cover)}"
    if inside.get(cover, 0.0) < PURE_AREA:
        head = f"an area of mostly {spaced(cover)}"
        second = [c for c, share in inside.items() if c != cover and share >= SOME_COVER]
        head += f" with some {spaced(second[0])}" if second else ""
    full = f"{head}, with {listing(objects_inside(objects, area['box']))}"
    box = from_pixels(*area["box"], size, size)
    return Region(box, "region", (capitalised(full) + ".", capitalised(head) + "."))
