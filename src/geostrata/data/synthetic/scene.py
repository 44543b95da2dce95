"""One synthetic image, end to end: recipe -> layout -> pixels -> annotation.

Determinism: the scene class comes from a block-level generator seeded by (seed, split, block
of 12 images), a permutation per block, which balances the classes; everything else about an
image comes from its own generator seeded by (seed, image id). Any image can be regenerated
alone from its spec, which the tests use to check annotations against pixels.
"""

import math
import zlib
from dataclasses import dataclass

import numpy as np

from geostrata.data.synthetic.describe import attributes, caption
from geostrata.data.synthetic.draw import DEFAULT_SIZE, PLACE_ORDER, Canvas
from geostrata.data.synthetic.layout import (
    Layout,
    cover_areas,
    cover_fractions,
    cover_grid,
    make_layout,
)
from geostrata.data.synthetic.placement import paint_linear, place, plan_linear
from geostrata.data.synthetic.recipes import Recipe, recipes
from geostrata.data.synthetic.render import apply_look, background, draw_look
from geostrata.data.synthetic.vocab import SCENE_CLASSES


@dataclass(frozen=True)
class ImageSpec:
    """Everything that decides one image: seed, ids, scene class, size and region grid."""

    seed: int
    image_id: int
    split: str
    scene: str
    size: int
    grid: int
    hidden_objects: tuple[str, ...] = ()  # object classes never drawn (held out of training)


@dataclass(frozen=True)
class GeneratedImage:
    """A rendered image with its object-free twin, its label mask and its annotation."""

    image: np.ndarray  # (S, S, 3) uint8
    background: np.ndarray  # (S, S, 3) uint8, same look, no objects
    mask: np.ndarray  # (S, S) uint8 land-cover indices
    annotation: dict


def plan_split(
    seed: int,
    split: str,
    first_id: int,
    n: int,
    size: int,
    grid: int,
    classes: tuple[str, ...] = SCENE_CLASSES,
    hidden_objects: tuple[str, ...] = (),
) -> list[ImageSpec]:
    """Specs of a split's n images, ids first_id.. ; `classes` within +-1 of uniform."""
    specs, block_size = [], len(classes)
    for block in range(math.ceil(n / block_size)):
        rng = np.random.default_rng([seed, zlib.crc32(split.encode()), block])
        scenes = rng.permutation(block_size)
        for k in range(min(block_size, n - block * block_size)):
            image_id = first_id + block * block_size + k
            scene = classes[scenes[k]]
            specs.append(ImageSpec(seed, image_id, split, scene, size, grid, hidden_objects))
    return specs


def _object_counts(
    rng: np.random.Generator, recipe: Recipe, hidden: tuple[str, ...]
) -> dict[str, int]:
    """Objects to draw per class; hidden classes get 0 after their draws, so the random stream
    (and every other object) is the same as without them."""
    counts = {}
    for name, spec in recipe.objects.items():
        n = int(rng.integers(spec.lo, spec.hi + 1)) if rng.random() < spec.p else 0
        counts[name] = 0 if name in hidden else n
    return counts


def _extent(recipe: Recipe, name: str) -> tuple[float, float]:
    size = recipe.objects[name].size
    return size if size[1] > 0 else DEFAULT_SIZE[name]


def _draw(
    rng: np.random.Generator, recipe: Recipe, layout: Layout, size: int, hidden: tuple[str, ...]
) -> tuple[Canvas, np.ndarray]:
    """Linear features, background, objects; returns (canvas, background float image)."""
    gsd = float(rng.uniform(0.8, 1.25))  # > 1: coarser ground sampling, smaller things
    sun = rng.uniform(0, 2 * math.pi)
    canvas = Canvas(
        image=np.zeros((size, size, 3), dtype=np.float32),
        mask=layout.mask.copy(),
        sun=(math.cos(sun), math.sin(sun)),
        angle=float(rng.choice([0.0, math.pi / 2]) + rng.normal(0.0, 0.25)),
        scale=size / 96 / gsd,
    )
    counts = _object_counts(rng, recipe, hidden)
    linear = []
    for name in ("runway", "road"):
        if counts.get(name, 0):
            linear += plan_linear(rng, canvas, name, counts[name], _extent(recipe, name))
    textured = Layout(canvas.mask, layout.detail, layout.tint)
    base = background(rng, textured, gsd)
    canvas.image = base.copy()
    paint_linear(rng, canvas, linear)
    for name in PLACE_ORDER:
        if counts.get(name, 0):
            place(rng, canvas, name, counts[name], _extent(recipe, name))
    return canvas, base


def generate_image(spec: ImageSpec) -> GeneratedImage:
    """Render one image and derive its annotation and caption."""
    rng = np.random.default_rng([spec.seed, spec.image_id])
    recipe = recipes()[spec.scene]
    layout = make_layout(rng, recipe.layout, spec.size)
    canvas, base = _draw(rng, recipe, layout, spec.size, spec.hidden_objects)
    look = draw_look(rng, spec.size)
    annotation = {
        "id": spec.image_id,
        "image": f"images/{spec.image_id}.png",
        "split": spec.split,
        "scene": spec.scene,
        "regions": {
            "fractions": cover_fractions(canvas.mask),
            "grid": cover_grid(canvas.mask, spec.grid),
            "areas": cover_areas(canvas.mask),
        },
        "objects": canvas.objects,
        "attributes": attributes(canvas.objects),
    }
    annotation["caption"] = caption(annotation)
    image, twin = apply_look(canvas.image, look), apply_look(base, look)
    return GeneratedImage(image, twin, canvas.mask, annotation)
