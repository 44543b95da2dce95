"""The grounding, region-description and dialogue items of one image, and their instruct entries.

Per image: up to GROUND_PER_IMAGE objects with a unique referring expression (referring.py), one
object region and one land-cover area with their descriptions (regiontext.py), and up to
DIALOGUES_PER_IMAGE two-turn dialogues (dialogues.py), all drawn from the image's own generator
(seeded by seed and image id, independent of the question stream) and from its annotation only.

They are written as LLaVA / GeoChat conversations (data/instruct.py reads them), one file per
task, instruct/{split}_{task}.json, each entry with the extra keys the loader needs:

- ground: {"id": "{image}:ground:{k}", "image", "task": "ground", "expression", "box": [x1, y1,
  x2, y2] (0-100), "conversations": [ground_question(expression), box text]};
- region: {"id": "{image}:region:{k}", "image", "task": "region", "box", "level" ("object" or
  "region"), "references": [canonical, short], "conversations": [region_question(box),
  canonical]};
- chat: {"id": "{image}:chat:{k}", "image", "task": "chat", "dialogue" (its kind), "kinds" and
  "levels" (per turn), "conversations": the turns in order}.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geostrata.data.synthetic.dialogues import Dialogue, make_dialogues
from geostrata.data.synthetic.referring import Referring, refer, things
from geostrata.data.synthetic.regiontext import Region, area_region, object_region
from geostrata.prompts import ground_question, region_question

TASK_FILES = ("ground", "region", "chat")  # instruct/{split}_{task}.json
GROUND_PER_IMAGE = 2
DIALOGUES_PER_IMAGE = 2
REFERABLE = 6  # objects with an expression looked for per image (grounding + dialogues)


@dataclass(frozen=True)
class TaskItems:
    """What one image contributes to the grounding, region and chat tasks."""

    ground: tuple[Referring, ...]
    regions: tuple[Region, ...]
    dialogues: tuple[Dialogue, ...]


def make_tasks(
    rng: np.random.Generator, annotation: dict, size: int, hidden: frozenset[str] = frozenset()
) -> TaskItems:
    """The task items of one image (`size`: its side in pixels; `hidden`: object classes no
    dialogue may name)."""
    objects = annotation["objects"]
    refs = refer(rng, objects, size, REFERABLE)
    regions = []
    countable = things(objects, size)
    if countable:
        regions.append(object_region(objects[countable[int(rng.integers(len(countable)))].index],
                                     size))  # fmt: skip
    areas = annotation["regions"].get("areas", [])
    if areas:
        regions.append(area_region(areas[int(rng.integers(len(areas)))], objects, size))
    dialogues = make_dialogues(rng, annotation, refs, DIALOGUES_PER_IMAGE, hidden)
    return TaskItems(tuple(refs[:GROUND_PER_IMAGE]), tuple(regions), tuple(dialogues))


def _turns(pairs: list[tuple[str, str]]) -> list[dict]:
    out = []
    for i, (question, answer) in enumerate(pairs):
        prompt = f"<image>\n{question}" if i == 0 else question
        out += [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]
    return out


def task_entries(annotation: dict, items: TaskItems) -> dict[str, list[dict]]:
    """The instruct entries of one image, per task (see the module docstring)."""
    image_id, image = annotation["id"], annotation["image"]
    ground = [
        {"id": f"{image_id}:ground:{k}", "image": image, "task": "ground",
         "expression": ref.text, "box": ref.box.as_list(),
         "conversations": _turns([(ground_question(ref.text), ref.box.text())])}
        for k, ref in enumerate(items.ground)
    ]  # fmt: skip
    region = [
        {"id": f"{image_id}:region:{k}", "image": image, "task": "region",
         "box": r.box.as_list(), "level": r.level, "references": list(r.references),
         "conversations": _turns([(region_question(r.box), r.references[0])])}
        for k, r in enumerate(items.regions)
    ]  # fmt: skip
    chat = [
        {"id": f"{image_id}:chat:{k}", "image": image, "task": "chat", "dialogue": d.kind,
         "kinds": [t.kind for t in d.turns], "levels": [t.level for t in d.turns],
         "conversations": _turns([(t.question, t.answer) for t in d.turns])}
        for k, d in enumerate(items.dialogues)
    ]  # fmt: skip
    return {"ground": ground, "region": region, "chat": chat}
