"""Multi-level semantic consistency: do one image's scene, region and object answers hold together?

Two figures per run (docs/results.md defines them for readers):

- **all-levels-correct rate**: among test images asked at least one question at each of the
  scene, region and object levels, the share whose every answer is right. A model right 90% of
  the time per level but at random across levels scores ~73% here; one whose levels agree
  scores ~90%.
- **contradiction rate**: among images with a scene question and a presence question, the share
  whose two *predicted* answers cannot both be true. What cannot be true is read from the data's
  own truth, over every image of the data set: a scene class whose images always hold an object
  class *requires* it, one whose images never hold it *excludes* it (only classes with at least
  `MIN_IMAGES` images count). "Scene: parking lot" with "Are there any cars? no" is a
  contradiction when every parking lot has cars. The true answers never contradict by
  construction, so 0% is the ideal; the rate says how often the levels disagree, right or wrong.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from geostrata.evaluate.metrics import normalize_answer
from geostrata.evaluate.zeroshot import mentions
from geostrata.levels import VISUAL_LEVELS

MIN_IMAGES = 10


@dataclass
class ConsistencyMetrics:
    all_levels_correct: float | None
    n_images_all_levels: int
    contradiction_rate: float | None
    n_images_checked: int  # images with a scene and a presence question
    n_rules: int  # (scene, object) requires / excludes rules found in the truth

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.1f}%"

        return (
            f"- all levels correct: {pct(self.all_levels_correct)} of "
            f"{self.n_images_all_levels} images asked at every level\n"
            f"- contradicting answers (scene vs object presence, {self.n_rules} rules from the "
            f"data's truth): {pct(self.contradiction_rate)} of {self.n_images_checked} images\n"
        )


@dataclass(frozen=True)
class SceneRules:
    requires: dict[str, frozenset[str]]  # scene class -> objects in every image of it
    excludes: dict[str, frozenset[str]]  # scene class -> objects in no image of it

    @property
    def size(self) -> int:
        return sum(map(len, self.requires.values())) + sum(map(len, self.excludes.values()))


def scene_rules(truths: Mapping[str, Any], objects: Sequence[str]) -> SceneRules:
    """Requires / excludes rules of every scene class with at least MIN_IMAGES images."""
    present: dict[str, list[set[str]]] = defaultdict(list)
    for truth in truths.values():
        if truth.scene:
            present[truth.scene].append(set(truth.objects))
    requires, excludes = {}, {}
    for scene, sets in present.items():
        if len(sets) >= MIN_IMAGES:
            requires[scene] = frozenset(o for o in objects if all(o in s for s in sets))
            excludes[scene] = frozenset(o for o in objects if not any(o in s for s in sets))
    return SceneRules(requires, excludes)


def consistency_metrics(
    rows: Sequence[dict[str, Any]],
    truths: Mapping[str, Any],
    objects: Sequence[str],
    scene_of: Callable[[str], str],
) -> ConsistencyMetrics:
    """``rows``: VQA records with ``pred``; ``objects``: the object classes questions may name;
    ``scene_of``: maps a scene answer to a scene class (runner.ClassMapper)."""
    by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_image[row["image_path"]].append(row)
    full = [r for r in by_image.values() if {x["level"] for x in r} >= set(VISUAL_LEVELS)]
    all_correct = [all(_right(x) for x in image_rows) for image_rows in full]
    rules = scene_rules(truths, objects)
    checked = [
        _contradicts(image_rows, rules, objects, scene_of)
        for image_rows in by_image.values()
        if any(x["qtype"] == "scene" for x in image_rows)
        and any(x["qtype"] == "presence" for x in image_rows)
    ]
    return ConsistencyMetrics(
        sum(all_correct) / len(all_correct) if all_correct else None,
        len(all_correct),
        sum(checked) / len(checked) if checked and rules.size else None,
        len(checked),
        rules.size,
    )


def _right(row: Mapping[str, Any]) -> bool:
    return normalize_answer(row["pred"]) == normalize_answer(row["answer"])


def _contradicts(
    rows: Sequence[dict[str, Any]],
    rules: SceneRules,
    objects: Sequence[str],
    scene_of: Callable[[str], str],
) -> bool:
    """Does the predicted scene clash with a predicted presence answer on this image?"""
    scenes = {scene_of(r["pred"]) for r in rows if r["qtype"] == "scene"}
    for row in rows:
        if row["qtype"] != "presence":
            continue
        said = normalize_answer(row["pred"])
        for obj in (o for o in objects if mentions(row["question"], o)):
            for scene in scenes:
                if said == "no" and obj in rules.requires.get(scene, ()):
                    return True
                if said == "yes" and obj in rules.excludes.get(scene, ()):
                    return True
    return False
