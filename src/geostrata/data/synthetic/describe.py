"""Scene-level descriptions derived from the objects: counts, urban/rural, density, caption."""

from geostrata.data.synthetic.vocab import COUNTABLE, LAND_COVERS, OBJECT_CLASSES, plural, spaced

URBAN_THRESHOLD = 4  # built-up score (see `attributes`) at which an area counts as urban
DENSITY_LIMITS = (6, 15)  # < 6 countable objects: sparse; <= 15: medium; more: dense


def object_counts(objects: list[dict]) -> dict[str, int]:
    """Number of annotated objects per class (every class, zeros included)."""
    counts = dict.fromkeys(OBJECT_CLASSES, 0)
    for obj in objects:
        counts[obj["class"]] += 1
    return counts


def attributes(objects: list[dict]) -> dict:
    """Urban/rural and density, derived from the objects.

    Built-up score = buildings + cars + storage tanks + airplanes + sports courts
    + 3 per road or runway; urban when the score is at least URBAN_THRESHOLD.
    Density counts the countable objects (roads and runways excluded).
    """
    n = object_counts(objects)
    built = sum(n[k] for k in ("building", "car", "storage_tank", "airplane", "sports_court"))
    built += 3 * (n["road"] + n["runway"])
    things = sum(n[k] for k in COUNTABLE)
    if things < DENSITY_LIMITS[0]:
        density = "sparse"
    else:
        density = "medium" if things <= DENSITY_LIMITS[1] else "dense"
    return {"urban": built >= URBAN_THRESHOLD, "density": density}


def article(word: str) -> str:
    """'a' or 'an' before a word."""
    return "an" if word[0] in "aeiou" else "a"


def listing(counts: dict[str, int]) -> str:
    """'12 buildings, 5 cars and 1 tree': the three most numerous countable classes."""
    things = sorted((k for k in COUNTABLE if counts[k]), key=lambda k: -counts[k])[:3]
    parts = [f"{counts[k]} {plural(k) if counts[k] > 1 else spaced(k)}" for k in things]
    if len(parts) > 1:
        return ", ".join(parts[:-1]) + f" and {parts[-1]}"
    return parts[0] if parts else "no distinct objects"


def caption(annotation: dict) -> str:
    """One sentence: density, urban/rural, scene, the main objects and the main land covers."""
    counts = object_counts(annotation["objects"])
    attrs = annotation["attributes"]
    head = f"{attrs['density']} {'urban' if attrs['urban'] else 'rural'} "
    head += spaced(annotation["scene"])
    text = f"{article(head).capitalize()} {head} scene with {listing(counts)}"
    for name in ("road", "runway"):
        if counts[name] == 1:
            text += f", crossed by {article(name)} {name}"
        elif counts[name] > 1:
            text += f", crossed by {counts[name]} {name}s"
    fr = annotation["regions"]["fractions"]
    covers = sorted(LAND_COVERS, key=lambda c: -fr[c])
    text += f", mostly {spaced(covers[0])}"
    if fr[covers[1]] >= 0.15:
        text += f" with some {spaced(covers[1])}"
    return text + "."
