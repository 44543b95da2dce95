"""A prediction's boxes on its image: the picture the web app shows, the numbers the API returns.

The boxes are the ones its answer holds (`Prediction.boxes`: the ``{<x1><y1><x2><y2>}`` text
convention of geostrata.boxes, 0-100 relative to the image the question was asked about). A
region the question gave can be drawn beside them in its own colour. Every caller (app, API,
Python users) goes through these functions, so boxes mean the same pixels everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geostrata.boxes import Box, draw_boxes
from geostrata.model.processing import ImageInput, load_image

ANSWER_COLOR = (255, 40, 40)  # boxes the answer holds, numbered 1, 2, ... in answer order
REGION_COLOR = (40, 120, 255)  # the region the question asked about


def draw_prediction(
    image: ImageInput, pred: Any, region: Box | None = None, width: int | None = None
) -> np.ndarray:
    """`image` (a path or an array, decoded as the processor does) with the boxes of `pred`'s
    answer outlined and numbered, and `region` (when given) outlined in REGION_COLOR.

    Returns an (H, W, 3) uint8 copy; an answer without boxes gives the image unchanged (the
    region aside).
    """
    return draw_answer_boxes(load_image(image), pred.boxes, region, width)


def draw_answer_boxes(
    image: np.ndarray, boxes: Sequence[Box], region: Box | None = None, width: int | None = None
) -> np.ndarray:
    """The (H, W, 3) uint8 `image` with `region` (blue) and then `boxes` (red, numbered) drawn."""
    if region is not None:
        image = draw_boxes(image, [region], REGION_COLOR, ["region"], width)
    labels = [str(i + 1) for i in range(len(boxes))]
    return draw_boxes(image, boxes, ANSWER_COLOR, labels, width) if boxes else image


def pixel_box(box: Box, width: int, height: int) -> list[float]:
    """[x1, y1, x2, y2] in pixels of a `width` x `height` image (0.1 px precision)."""
    return [round(v, 1) for v in box.pixels(width, height)]


def boxes_json(boxes: Sequence[Box], width: int, height: int) -> dict[str, Any]:
    """The boxes as the API's extension field carries them: 0-100 and in the image's pixels."""
    return {
        "boxes": [box.as_list() for box in boxes],
        "boxes_px": [pixel_box(box, width, height) for box in boxes],
    }


def describe_boxes(boxes: Sequence[Box], width: int, height: int) -> str:
    """One line per box, numbered as drawn: "1: (20, 30)-(60, 70) of 100 = px (51, 77)-(154,
    179)"; empty without boxes."""
    lines = []
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (round(v) for v in box.pixels(width, height))
        lines.append(
            f"{i + 1}: ({box.x1}, {box.y1})-({box.x2}, {box.y2}) of 100 = "
            f"px ({x1}, {y1})-({x2}, {y2})"
        )
    return "\n".join(lines)
