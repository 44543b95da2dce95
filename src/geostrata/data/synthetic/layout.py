"""Land-cover layouts: the region level of a scene as a label mask.

A layout is drawn in a canonical orientation (water on the left, parcels in columns) and then
rotated/flipped at random, so position alone never tells the cover. Fractions and the coarse
grid of the annotations are computed from the finished mask, never from the recipe's targets.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image

from geostrata.data.synthetic.recipes import LayoutSpec
from geostrata.data.synthetic.vocab import LAND_COVERS

COVER_INDEX = {name: i for i, name in enumerate(LAND_COVERS)}
# Crop colour offsets (RGB) added to the cropland base colour, one per parcel.
CROP_TINTS = np.array(
    [[0, 0, 0], [45, 25, 10], [-25, 15, -10], [30, -5, -20], [60, 45, 20], [-10, -20, -15]],
    dtype=np.float32,
)


@dataclass(frozen=True)
class Layout:
    """The region level of one image.

    mask: (S, S) uint8 indices into LAND_COVERS; detail: (S, S) float32 in [-1, 1], a
    cover-specific pattern (crop rows); tint: (S, S, 3) float32 colour offsets (crop parcels).
    """

    mask: np.ndarray
    detail: np.ndarray
    tint: np.ndarray


def smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1], (size, size) float32: cells x cells noise upsampled."""
    cells = max(2, int(cells))
    coarse = rng.random((cells, cells), dtype=np.float32)
    field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / max(hi - lo, 1e-6)


def _paint_patch(
    rng: np.random.Generator, mask: np.ndarray, cover: int, share: float, where: np.ndarray
) -> None:
    """Paint a blob of `cover` covering about `share` of the image, inside `where` only."""
    n = int(round(share * mask.size))
    candidates = np.flatnonzero(where)
    if n <= 0 or candidates.size == 0:
        return
    field = smooth_field(rng, mask.shape[0], rng.integers(2, 6)).ravel()
    n = min(n, candidates.size)
    # Highest-field pixels form one or a few smooth blobs.
    chosen = candidates[np.argpartition(-field[candidates], n - 1)[:n]]
    mask.ravel()[chosen] = cover


def _water_distance(rng: np.random.Generator, size: int, kind: str, water: float) -> np.ndarray:
    """Signed distance-like map (S, S): < 0 is water, measured across the shore in pixels."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    amp = rng.uniform(0.02, 0.08) * size
    wiggle = amp * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * y / size + rng.uniform(0, 6.3))
    if kind == "coast":
        return x - (water * size + wiggle)
    centre = rng.uniform(0.35, 0.65) * size + wiggle
    return np.abs(x - centre) - water * size / 2


def _parcels(rng: np.random.Generator, size: int) -> Layout:
    """Crop parcels in a patchwork of columns, each with its own row direction and crop tint."""
    mask = np.full((size, size), COVER_INDEX["cropland"], dtype=np.uint8)
    detail = np.zeros((size, size), dtype=np.float32)
    tint = np.zeros((size, size, 3), dtype=np.float32)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    xs = _cuts(rng, size, int(rng.integers(2, 4)))
    hedges = rng.random() < 0.5
    for x0, x1 in zip(xs[:-1], xs[1:], strict=True):
        ys = _cuts(rng, size, int(rng.integers(2, 4)))
        for y0, y1 in zip(ys[:-1], ys[1:], strict=True):
            cell = (slice(y0, y1), slice(x0, x1))
            roll = rng.random()
            if roll < 0.12:
                mask[cell] = COVER_INDEX["grass"]
            elif roll < 0.22:
                mask[cell] = COVER_INDEX["bare_soil"]
            angle = rng.choice([0.0, np.pi / 2]) + rng.uniform(-0.2, 0.2)
            period = rng.uniform(2.5, 5.0)
            phase = (x[cell] * np.cos(angle) + y[cell] * np.sin(angle)) * 2 * np.pi / period
            detail[cell] = np.sin(phase)
            tint[cell] = CROP_TINTS[rng.integers(len(CROP_TINTS))]
            if hedges:
                mask[y0, x0:x1] = COVER_INDEX["grass"]
                mask[y0:y1, x0] = COVER_INDEX["grass"]
    return Layout(mask, detail, tint)


def _cuts(rng: np.random.Generator, size: int, parts: int) -> list[int]:
    """Split [0, size] into `parts` intervals of at least 15% each."""
    inner = np.sort(rng.uniform(0.15, 0.85, parts - 1)) * size
    cuts = [0] + [int(c) for c in inner] + [size]
    return sorted(set(cuts))


def make_layout(rng: np.random.Generator, spec: LayoutSpec, size: int) -> Layout:
    """Draw the land-cover layout of one image from its recipe's layout spec."""
    kind = str(rng.choice(spec.kinds))
    if kind == "parcels":
        layout = _parcels(rng, size)
    else:
        base = COVER_INDEX[str(rng.choice(spec.base))]
        mask = np.full((size, size), base, dtype=np.uint8)
        for cover, lo, hi in spec.patches:
            _paint_patch(rng, mask, COVER_INDEX[cover], rng.uniform(lo, hi), mask == base)
        if kind in ("band", "coast"):
            dist = _water_distance(rng, size, kind, rng.uniform(*spec.water))
            strip = str(rng.choice(spec.strip))
            if strip:
                width = rng.uniform(*spec.strip_width) * size
                mask[(dist >= 0) & (dist < width)] = COVER_INDEX[strip]
            mask[dist < 0] = COVER_INDEX["water"]
        zeros = np.zeros((size, size), dtype=np.float32)
        layout = Layout(mask, zeros, np.zeros((size, size, 3), dtype=np.float32))
    return _orient(rng, layout)


def _orient(rng: np.random.Generator, layout: Layout) -> Layout:
    """Random rotation by k * 90 degrees and an optional mirror, applied to every layer."""
    k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)

    def turn(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k, axes=(0, 1))
        return np.ascontiguousarray(a[:, ::-1] if flip else a)

    return Layout(turn(layout.mask), turn(layout.detail), turn(layout.tint))


def cover_fractions(mask: np.ndarray) -> dict[str, float]:
    """Share of each land cover in the mask (all covers, zeros included), rounded to 1e-6."""
    counts = np.bincount(mask.ravel(), minlength=len(LAND_COVERS))
    total = mask.size
    return {name: round(float(c) / total, 6) for name, c in zip(LAND_COVERS, counts, strict=True)}


def cover_grid(mask: np.ndarray, grid: int) -> list[list[str]]:
    """Majority land cover of each cell of a grid x grid partition (ties: first in LAND_COVERS)."""
    edges = np.linspace(0, mask.shape[0], grid + 1).astype(int)
    rows = []
    for r in range(grid):
        row = []
        for c in range(grid):
            cell = mask[edges[r] : edges[r + 1], edges[c] : edges[c + 1]]
            counts = np.bincount(cell.ravel(), minlength=len(LAND_COVERS))
            row.append(LAND_COVERS[int(np.argmax(counts))])
        rows.append(row)
    return rows


AREA_CELLS = 16  # land-cover areas are found on a 16 x 16 grid of majority cells
MIN_AREA_CELLS = 6  # smaller connected patches (< ~2% of the image) are not areas
MAX_AREAS = 4
MIN_INSIDE = 0.05  # covers below this share of an area's box are not listed in it


def cover_areas(mask: np.ndarray) -> list[dict]:
    """The largest connected land-cover areas (at most MAX_AREAS, largest first): each its
    `cover`, pixel `box` [x0, y0, x1, y1] (x1, y1 exclusive, like object boxes), `cells` (its
    size on the AREA_CELLS grid) and `inside`: the share of each cover among the box's pixels
    (those >= MIN_INSIDE, largest first), so a description can say what else lies in the box."""
    grid = cover_grid(mask, AREA_CELLS)
    edges = np.linspace(0, mask.shape[0], AREA_CELLS + 1).astype(int)
    areas = []
    for cover, cells in _components(grid):
        if len(cells) < MIN_AREA_CELLS:
            continue
        rows, cols = [r for r, _ in cells], [c for _, c in cells]
        box = [int(edges[min(cols)]), int(edges[min(rows)]),
               int(edges[max(cols) + 1]), int(edges[max(rows) + 1])]  # fmt: skip
        counts = np.bincount(mask[box[1] : box[3], box[0] : box[2]].ravel(),
                             minlength=len(LAND_COVERS))  # fmt: skip
        shares = counts / max(int(counts.sum()), 1)
        order = np.argsort(-shares, kind="stable")
        inside = {LAND_COVERS[i]: round(float(shares[i]), 3) for i in order
                  if shares[i] >= MIN_INSIDE}  # fmt: skip
        areas.append({"cover": cover, "box": box, "cells": len(cells), "inside": inside})
    areas.sort(key=lambda a: -a["cells"])  # stable: ties keep grid order
    return areas[:MAX_AREAS]


def _components(grid: list[list[str]]) -> list[tuple[str, list[tuple[int, int]]]]:
    """4-connected groups of equal cells, in row-major order of their first cell."""
    n, seen, out = len(grid), set(), []
    for r0 in range(n):
        for c0 in range(n):
            if (r0, c0) in seen:
                continue
            cover, stack, cells = grid[r0][c0], [(r0, c0)], []
            seen.add((r0, c0))
            while stack:
                r, c = stack.pop()
                cells.append((r, c))
                for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                    if 0 <= rr < n and 0 <= cc < n and (rr, cc) not in seen:
                        if grid[rr][cc] == cover:
                            seen.add((rr, cc))
                            stack.append((rr, cc))
            out.append((cover, cells))
    return out
