"""Scene recipes: each scene class is a land-cover layout plus an object mix.

The recipes are compositional on purpose, so a model has to use every semantic level:

- parking_lot, airport and industrial share the paved layout and differ only in their objects
  (rows of cars; a runway and airplanes; large buildings and storage tanks);
- harbor and river both sit on water; the harbor has ships, quays and depots;
- meadow, farmland and bare_land have few objects and differ only in land cover
  (grass; striped crop parcels; bare soil).

Every class also carries some "distractor" objects with a small probability, so no single
object class gives a scene away.
"""

from dataclasses import dataclass, field

from geostrata.data.synthetic.vocab import LAND_COVERS, OBJECT_CLASSES, SCENE_CLASSES

LAYOUT_KINDS = ("blobs", "parcels", "band", "coast")


@dataclass(frozen=True)
class ObjectSpec:
    """How many objects of one class a scene draws: uniform in [lo, hi] with probability p, else 0.

    `size` is the (min, max) extent in pixels at 96 px and unit ground-sample distance.
    """

    lo: int
    hi: int
    p: float = 1.0
    size: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if not 0 <= self.lo <= self.hi:
            raise ValueError(f"ObjectSpec needs 0 <= lo <= hi, got lo={self.lo} hi={self.hi}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"ObjectSpec.p must be in [0, 1], got {self.p}")


@dataclass(frozen=True)
class LayoutSpec:
    """The land-cover layout of a scene.

    kinds: layout families to pick from; base: background covers to pick from; patches:
    (cover, min, max) blobs painted over the background as shares of the image; water: the
    (min, max) water share of band/coast layouts; strip: shore covers to pick from ("" = none),
    strip_width: its (min, max) width as a share of the image side.
    """

    kinds: tuple[str, ...]
    base: tuple[str, ...]
    patches: tuple[tuple[str, float, float], ...] = ()
    water: tuple[float, float] = (0.0, 0.0)
    strip: tuple[str, ...] = ("",)
    strip_width: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        for kind in self.kinds:
            if kind not in LAYOUT_KINDS:
                raise ValueError(f"unknown layout kind {kind!r}; expected one of {LAYOUT_KINDS}")
        covers = list(self.base) + [p[0] for p in self.patches] + [s for s in self.strip if s]
        for cover in covers:
            if cover not in LAND_COVERS:
                raise ValueError(f"unknown land cover {cover!r} in layout spec")


@dataclass(frozen=True)
class Recipe:
    """One scene class: its layout and its object mix (class name -> ObjectSpec)."""

    scene: str
    layout: LayoutSpec
    objects: dict[str, ObjectSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scene not in SCENE_CLASSES:
            raise ValueError(f"unknown scene class {self.scene!r}")
        for name in self.objects:
            if name not in OBJECT_CLASSES:
                raise ValueError(f"unknown object class {name!r} in recipe {self.scene!r}")


def _o(lo: int, hi: int, p: float = 1.0, size: tuple[float, float] = (0.0, 0.0)) -> ObjectSpec:
    return ObjectSpec(lo, hi, p, size)


HOUSE = (6.0, 11.0)
LARGE = (12.0, 24.0)


def blobs(base: str, *patches: tuple[str, float, float]) -> LayoutSpec:
    """A background cover with blob-shaped patches of other covers."""
    return LayoutSpec(("blobs",), (base,), patches)


def paved(*patches: tuple[str, float, float]) -> LayoutSpec:
    """The paved layout shared by industrial, airport and parking_lot (they differ in objects)."""
    return blobs("pavement", *patches)


def recipes() -> dict[str, Recipe]:
    """All twelve recipes, keyed by scene class (built fresh: nothing global to mutate)."""
    grass_bits = (("pavement", 0.04, 0.12), ("bare_soil", 0.0, 0.08), ("forest_canopy", 0.0, 0.1))
    lot_bits = (("grass", 0.05, 0.25), ("bare_soil", 0.0, 0.08))
    river_layout = LayoutSpec(
        ("band",),
        ("grass", "grass", "forest_canopy", "pavement"),
        (("forest_canopy", 0.0, 0.2), ("bare_soil", 0.0, 0.08)),
        water=(0.15, 0.4),
        strip=("", "", "sand", "grass"),
        strip_width=(0.02, 0.06),
    )
    harbor_layout = LayoutSpec(
        ("coast", "band"),
        ("pavement", "pavement", "grass", "bare_soil"),
        (("bare_soil", 0.0, 0.1),),
        water=(0.3, 0.55),
        strip=("pavement",),
        strip_width=(0.05, 0.15),
    )
    beach_layout = LayoutSpec(
        ("coast",),
        ("grass", "bare_soil", "pavement"),
        (("forest_canopy", 0.0, 0.1),),
        water=(0.2, 0.45),
        strip=("sand",),
        strip_width=(0.2, 0.4),
    )
    table = [
        Recipe("residential", blobs("grass", *grass_bits), {
            "road": _o(1, 2), "building": _o(5, 14, size=HOUSE), "car": _o(2, 8),
            "tree": _o(2, 8), "sports_court": _o(0, 1, 0.15)}),
        Recipe("industrial", paved(("bare_soil", 0.1, 0.3), ("grass", 0.05, 0.2)), {
            "road": _o(0, 1, 0.5), "building": _o(2, 5, size=LARGE),
            "storage_tank": _o(1, 6, 0.6), "car": _o(1, 8, 0.8), "tree": _o(0, 3, 0.4)}),
        Recipe("farmland", LayoutSpec(("parcels",), ("cropland",)), {
            "building": _o(0, 2, 0.5, HOUSE), "tree": _o(1, 5, 0.7), "road": _o(0, 1, 0.4),
            "car": _o(0, 1, 0.15)}),
        Recipe("forest", blobs("forest_canopy", ("grass", 0.03, 0.2), ("bare_soil", 0.0, 0.05)), {
            "tree": _o(1, 5, 0.85), "road": _o(0, 1, 0.3), "building": _o(0, 1, 0.1, HOUSE)}),
        Recipe("meadow", blobs("grass", ("bare_soil", 0.0, 0.1), ("forest_canopy", 0.0, 0.1)), {
            "tree": _o(1, 6, 0.85), "building": _o(0, 1, 0.15, HOUSE), "road": _o(0, 1, 0.15)}),
        Recipe("bare_land", blobs("bare_soil", ("sand", 0.0, 0.2), ("grass", 0.0, 0.12)), {
            "tree": _o(0, 3, 0.5), "building": _o(0, 2, 0.3, HOUSE), "road": _o(0, 1, 0.25),
            "car": _o(0, 1, 0.15)}),
        Recipe("river", river_layout, {
            "tree": _o(1, 6, 0.7), "ship": _o(0, 1, 0.25, (7.0, 10.0)),
            "building": _o(0, 2, 0.3, HOUSE), "road": _o(0, 1, 0.3), "car": _o(0, 2, 0.1)}),
        Recipe("harbor", harbor_layout, {
            "ship": _o(2, 7, size=(8.0, 18.0)), "building": _o(1, 4, size=(8.0, 16.0)),
            "storage_tank": _o(0, 3, 0.5), "car": _o(0, 5, 0.6), "tree": _o(0, 2, 0.2)}),
        Recipe("beach", beach_layout, {
            "ship": _o(0, 2, 0.4, (6.0, 9.0)), "building": _o(0, 3, 0.5, HOUSE),
            "car": _o(0, 3, 0.4), "tree": _o(0, 3, 0.5), "road": _o(0, 1, 0.3)}),
        Recipe("airport", paved(("grass", 0.15, 0.4), ("bare_soil", 0.0, 0.08)), {
            "runway": _o(1, 1), "airplane": _o(1, 4), "building": _o(0, 2, 0.5, LARGE),
            "car": _o(0, 3, 0.4)}),
        Recipe("parking_lot", paved(*lot_bits), {
            "car": _o(8, 28), "tree": _o(0, 4, 0.5), "building": _o(0, 1, 0.3, (10.0, 18.0)),
            "road": _o(0, 1, 0.3)}),
        Recipe("playground", blobs("grass", ("pavement", 0.05, 0.2), ("bare_soil", 0.0, 0.06)), {
            "sports_court": _o(1, 3), "tree": _o(1, 6), "building": _o(0, 2, 0.4, HOUSE),
            "car": _o(0, 3, 0.4), "road": _o(0, 1, 0.3)}),
    ]  # fmt: skip
    return {r.scene: r for r in table}

