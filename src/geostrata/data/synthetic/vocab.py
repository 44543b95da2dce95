"""The closed vocabularies of the synthetic benchmark and its answer rules.

Every name here is part of the shared data contract (meta.json, annotations, questions), so other
parts of GeoStrata (knowledge base, metrics, loaders) can rely on them verbatim.

Answer rules, chosen once and documented here:

- count: the exact number as a digit string "0".."10"; counts above 10 answer "more than 10".
  `count_bin` gives the coarser RSVQA-LR-style variant ("0", "1-3", "4-10", "more than 10") for
  evaluations that want it; the files store the exact form.
- area: the share of the image covered by a land cover, rounded *up* to a whole percent and binned:
  "0%" (absent), "1-10%", "11-30%", "31-60%", "more than 60%".
- names in questions and answers are the snake_case names with spaces ("parking lot", "bare soil").
"""

import math

SCENE_CLASSES: tuple[str, ...] = (
    "residential",
    "industrial",
    "farmland",
    "forest",
    "meadow",
    "bare_land",
    "river",
    "harbor",
    "beach",
    "airport",
    "parking_lot",
    "playground",
)
LAND_COVERS: tuple[str, ...] = (
    "water",
    "grass",
    "forest_canopy",
    "bare_soil",
    "sand",
    "pavement",
    "cropland",
)
OBJECT_CLASSES: tuple[str, ...] = (
    "building",
    "car",
    "ship",
    "airplane",
    "storage_tank",
    "tree",
    "road",
    "runway",
    "sports_court",
)
# Classes a question may count or compare: roads and runways are linear features, not things.
COUNTABLE: tuple[str, ...] = (
    "building",
    "car",
    "ship",
    "airplane",
    "storage_tank",
    "tree",
    "sports_court",
)
DENSITIES: tuple[str, ...] = ("sparse", "medium", "dense")
QUESTION_LEVELS: dict[str, str] = {
    "presence": "object",
    "count": "object",
    "comp": "object",
    "scene": "scene",
    "rural_urban": "scene",
    "area": "region",
    "land_cover": "region",
}
MAX_EXACT_COUNT = 10
COUNT_BINS: tuple[str, ...] = ("0", "1-3", "4-10", "more than 10")
AREA_BINS: tuple[str, ...] = ("0%", "1-10%", "11-30%", "31-60%", "more than 60%")
# Image parts a land_cover question may ask about: (rows, cols) of the G x G grid, as halves.
PARTS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")


def spaced(name: str) -> str:
    """The human form of a snake_case name: 'parking_lot' -> 'parking lot'."""
    return name.replace("_", " ")


def plural(name: str) -> str:
    """English plural of an object class in human form ('storage tanks', 'sports courts')."""
    return spaced(name) + "s"


def count_answer(n: int) -> str:
    """The exact count answer: digits up to MAX_EXACT_COUNT, then 'more than 10'."""
    if n < 0:
        raise ValueError(f"count must be >= 0, got {n}")
    return str(n) if n <= MAX_EXACT_COUNT else f"more than {MAX_EXACT_COUNT}"


def count_bin(n: int) -> str:
    """The binned count variant ('0', '1-3', '4-10', 'more than 10') for coarse evaluation."""
    if n < 0:
        raise ValueError(f"count must be >= 0, got {n}")
    if n == 0:
        return "0"
    return "1-3" if n <= 3 else ("4-10" if n <= 10 else "more than 10")


def area_answer(fraction: float) -> str:
    """Bin a cover fraction in [0, 1]; the percent is rounded up, so any presence is >= 1%."""
    if not 0.0 <= fraction <= 1.0 + 1e-9:
        raise ValueError(f"area fraction must be in [0, 1], got {fraction}")
    if fraction <= 0.0:
        return AREA_BINS[0]
    # The epsilon absorbs float noise (0.1 * 100 = 10.000000000000002); real fractions are
    # multiples of 1 / (size * size), far coarser than it.
    percent = math.ceil(fraction * 100 - 1e-6)
    if percent <= 10:
        return AREA_BINS[1]
    if percent <= 30:
        return AREA_BINS[2]
    return AREA_BINS[3] if percent <= 60 else AREA_BINS[4]


def answer_vocab() -> dict[str, list[str]]:
    """The closed answer vocabulary per question type, as written to meta.json."""
    return {
        "presence": ["yes", "no"],
        "count": [str(i) for i in range(MAX_EXACT_COUNT + 1)] + [count_answer(MAX_EXACT_COUNT + 1)],
        "comp": ["yes", "no"],
        "scene": [spaced(s) for s in SCENE_CLASSES],
        "rural_urban": ["rural", "urban"],
        "area": list(AREA_BINS),
        "land_cover": [spaced(c) for c in LAND_COVERS],
    }
