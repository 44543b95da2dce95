"""GeoChat-Bench referring and region-captioning lines (`referring.jsonl`,
`region_captioning.jsonl`), read by `GeoChatBenchDataset` beside its VQA / scene lines.

These lines name the image by a bare id and carry a `question` instead of a `text`:
`{"question_id", "image_id" (".png" is added), "question", "ground_truth", "type", "dataset",
"obj_ids", "size_group"}`. Which task a line is follows from its content (GeoChat's own
evaluation scripts use both files with swapped names):

- region description: the `question` is a box, ``{<x1><y1><x2><y2>|<θ>}`` (0-100, angle
  dropped, see `regions.py`); `ground_truth` is the description (a string or a list of them);
- grounding: the `question` is the referring expression; `ground_truth` is a list of oriented
  boxes, each four [x, y] corners in pixels of the image (as in the release), or box text. The
  axis-aligned hull of each polygon is made relative with the image's size (read from its
  header), so grounding lines need their images present. `type` ("ref" / "grounding") is kept
  as `ground_type`; several objects give `boxes`, and `box` is the first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geostrata.boxes import Box
from geostrata.data.fields import image_file, is_id, is_relative_name, is_text
from geostrata.data.images import image_size
from geostrata.data.regions import has_box_text, polygon_box, text_boxes
from geostrata.data.rsvqa import require_key
from geostrata.errors import AnnotationError

IMAGE_EXT = ".png"
KEPT_KEYS = ("size_group", "obj_ids", "dataset")

Sample = dict[str, Any]


def is_task_line(entry: dict[str, Any]) -> bool:
    """A referring / region line: `image_id` and `question`, where VQA lines have `text`."""
    return "text" not in entry and "question" in entry and "image_id" in entry


def task_record(entry: dict[str, Any], where: str, image_root: Path) -> Sample:
    """The ground or region record of one referring / region-captioning line."""
    question_id = require_key(entry, "question_id", is_id, "a string or integer", where)
    image_id = require_key(entry, "image_id", is_relative_name, "an image id", where)
    question = require_key(entry, "question", is_text, "a non-empty string", where).strip()
    truth = require_key(entry, "ground_truth", _is_truth, "a string or a list", where)
    image = image_file(image_id, IMAGE_EXT)
    base = {
        "image_path": str(image_root / image),
        "image_id": image,
        "question_id": str(question_id),
        **{key: entry[key] for key in KEPT_KEYS if key in entry},
    }
    if has_box_text(question):
        return {**base, **_region(question, truth, where)}
    return {**base, **_ground(question, truth, entry.get("type"), image_root / image, where)}


def _region(question: str, truth: Any, where: str) -> Sample:
    boxes = text_boxes(question, where)
    if len(boxes) != 1:
        raise AnnotationError(f"{where}: a region question holds one box, got {len(boxes)}")
    references = [truth] if isinstance(truth, str) else truth
    if not references or not all(is_text(r) for r in references):
        raise AnnotationError(f"{where}: key 'ground_truth' must be the region's description(s)")
    references = [r.strip() for r in references]
    return {
        "task": "region",
        "box": boxes[0].as_list(),
        "answer": references[0],
        "references": references,
        "qtype": "region",
        "level": "object",
    }


def _ground(question: str, truth: Any, kind: Any, image_path: Path, where: str) -> Sample:
    boxes = _truth_boxes(truth, image_path, where)
    record = {
        "task": "ground",
        "box": boxes[0].as_list(),
        "answer": "".join(box.text() for box in boxes),
        "expression": question,
        "qtype": "ground",
        "level": "object",
    }
    if len(boxes) > 1:
        record["boxes"] = [box.as_list() for box in boxes]
    if isinstance(kind, str):
        record["ground_type"] = kind
    return record


def _truth_boxes(truth: Any, image_path: Path, where: str) -> list[Box]:
    if isinstance(truth, str):
        return text_boxes(truth, where)
    if not truth:
        raise AnnotationError(f"{where}: key 'ground_truth' holds no box")
    width, height = image_size(image_path)  # the polygons are in pixels of this image
    return [
        polygon_box(p, width, height, f"{where}, ground_truth[{k}]") for k, p in enumerate(truth)
    ]


def _is_truth(value: Any) -> bool:
    return isinstance(value, str | list)
