"""A prediction's boxes: read from its answer, drawn on its image, returned in pixels.

No model: the Prediction is built by hand, since a tiny model cannot be made to write a box; what
is checked is the parsing, the drawing and the coordinates, not the model's grounding.
"""

import numpy as np
import pytest
from PIL import Image

from geostrata.boxes import Box
from geostrata.errors import InputError
from geostrata.inference import Prediction
from geostrata.overlay import (
    ANSWER_COLOR,
    REGION_COLOR,
    boxes_json,
    describe_boxes,
    draw_answer_boxes,
    draw_prediction,
)


def test_prediction_boxes_are_the_answers_boxes_in_order():
    pred = Prediction("a ship {<60><10><90><30>} and a car {< 5 ><50><20><70>}")
    assert pred.boxes == [Box(60, 10, 90, 30), Box(5, 50, 20, 70)]
    assert Prediction("yes").boxes == []


def test_drawn_prediction_outlines_each_box_at_its_pixels(tmp_path):
    image = np.full((200, 100, 3), 128, np.uint8)  # H 200, W 100: x and y scale differently
    path = tmp_path / "tile.png"
    Image.fromarray(image).save(path)
    pred = Prediction("the pond {<20><10><60><50>}")
    drawn = draw_prediction(path, pred, region=Box(70, 70, 90, 90), width=1)
    assert drawn.shape == image.shape and (image == 128).all()  # a copy, input untouched
    assert tuple(drawn[60, 20]) == ANSWER_COLOR  # left edge: x 20% of 100 px, y 60 px
    assert tuple(drawn[99, 40]) == ANSWER_COLOR  # bottom edge: y 50% of 200 px, last row inside
    assert tuple(drawn[60, 40]) == (128, 128, 128)  # inside stays the image
    assert tuple(drawn[170, 70]) == REGION_COLOR  # the region's left edge
    plain = draw_prediction(path, Prediction("no box here"))
    assert (plain == image).all()


def test_boxes_json_and_description_give_0_100_and_pixels():
    boxes = [Box(20, 10, 60, 50)]
    assert boxes_json(boxes, width=100, height=200) == {
        "boxes": [[20, 10, 60, 50]],
        "boxes_px": [[20.0, 20.0, 60.0, 100.0]],
    }
    assert boxes_json([], 10, 10) == {"boxes": [], "boxes_px": []}
    assert describe_boxes(boxes, 100, 200) == "1: (20, 10)-(60, 50) of 100 = px (20, 20)-(60, 100)"


def test_drawing_needs_an_rgb_image():
    with pytest.raises(InputError, match="uint8"):
        draw_answer_boxes(np.zeros((8, 8), np.float32), [Box(0, 0, 50, 50)])
