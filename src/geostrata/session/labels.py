"""A task's class labels on the knowledge base: every label set trains.

`ground_task` resolves the labels a data set declares (`knowledge.labels.ground_labels`: by
label-map table when one is named, else by entry name and synonym, at whatever level the entry
lives), adds an entry for each label the base lacks, and moves each image's truth to the level
its label's entry lives at: a land-cover label on a chip (water -> region.water) is that chip's
region truth (all of it) and still the answer to its scene question. It runs before any model or
feature is built, so every label problem is one error at the start.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from geostrata.data.targets import Truth
from geostrata.knowledge.labels import LabelGrounding, ground_labels
from geostrata.knowledge.schema import Entry
from geostrata.session.samples import TaskData


def ground_task(task: TaskData, knowledge: Any) -> tuple[TaskData, list[Entry]]:
    """(the task with labels grouped by entry level and truths moved there, the entries added
    to `knowledge` for labels it lacked)."""
    if not task.labels:
        return task, []
    grounding = ground_labels(knowledge, task.labels, task.dataset)
    added = [entry for entry in grounding.added if entry.id not in _ids(knowledge)]
    if added:
        knowledge.add(added)
    moved = _moved_scene_labels(grounding)
    truths = {path: _placed(truth, moved) for path, truth in task.truths.items()}
    return dataclasses.replace(task, labels=grounding.by_level(), truths=truths), added


def _ids(knowledge: Any) -> set[str]:
    return {entry.id for entry in knowledge.entries}


def _moved_scene_labels(grounding: LabelGrounding) -> dict[str, str]:
    """Scene-declared label -> the finer level its entry lives at (only those that moved)."""
    declared = grounding.levels.get("scene", {})
    return {label: level for label, level in declared.items() if level != "scene"}


def _placed(truth: Truth, moved: dict[str, str]) -> Truth:
    """A class label whose entry is a land cover covers the whole image (region fraction 1);
    one whose entry is an object class says the image shows that object. The scene label stays:
    it is what the scene question is answered with, and its scene target simply has no column."""
    level = moved.get(truth.scene or "")
    if level == "region" and not truth.regions:
        return dataclasses.replace(truth, regions={truth.scene: 1.0})
    if level == "object" and truth.scene not in truth.objects:
        return dataclasses.replace(truth, objects=(*truth.objects, truth.scene))
    return truth
