"""The box text convention {<x1><y1><x2><y2>} (0-100 relative), IoU and size buckets."""

import pytest

from geostrata.boxes import Box, from_pixels, iou, parse_box, parse_boxes, size_bucket, strip_boxes
from geostrata.errors import InputError


def test_text_round_trip_and_lenient_parsing():
    box = Box(10, 20, 55, 80)
    assert box.text() == "{<10><20><55><80>}"
    assert parse_box(f"the ship is at {box.text()}.") == box
    assert parse_boxes("{< 5 ><6><7><8>} and {<90><90><10><10>}") == [
        Box(5, 6, 7, 8),
        Box(10, 10, 90, 90),  # swapped corners sorted
    ]
    assert parse_box("{<10><20><55><80>|<45>}") == box  # GeoChat's angle: the upright box
    assert parse_box("{<1><2><3>}") is None  # three numbers is not a box
    assert parse_box("{<0><0><250><40>}") == Box(0, 0, 100, 40)  # clamped
    assert strip_boxes("a ship {<1><2><3><4>}  here") == "a ship here"


def test_pixels_both_ways():
    box = from_pixels(80, 400, 160, 0, width=800, height=400)  # corners in any order
    assert box == Box(10, 0, 20, 100)
    assert box.pixels(800, 400) == (80.0, 0.0, 160.0, 400.0)
    with pytest.raises(InputError, match="image size"):
        from_pixels(0, 0, 1, 1, width=0, height=10)


def test_invalid_boxes_are_refused():
    with pytest.raises(InputError, match="0-100"):
        Box(0, 0, 101, 5)
    with pytest.raises(InputError, match="x1 <= x2"):
        Box(50, 0, 10, 5)
    with pytest.raises(InputError, match="4 numbers"):
        Box.of([1, 2, 3])


def test_iou_and_size():
    a, b = Box(0, 0, 10, 10), Box(5, 0, 15, 10)
    assert iou(a, a) == 1.0
    assert iou(a, b) == pytest.approx(50 / 150)
    assert iou(a, Box(50, 50, 60, 60)) == 0.0
    assert iou(Box(3, 3, 3, 9), Box(3, 3, 3, 9)) == 0.0  # zero area
    assert size_bucket(Box(0, 0, 4, 4)) == "small"
    assert size_bucket(Box(0, 0, 10, 10)) == "medium"
    assert size_bucket(Box(0, 0, 40, 40)) == "large"


def test_draw_boxes_outlines_the_box_and_leaves_the_input_alone():
    import numpy as np

    from geostrata.boxes import draw_boxes

    image = np.zeros((50, 100, 3), np.uint8)
    out = draw_boxes(image, [Box(10, 20, 50, 80)], color=(0, 255, 0), labels=["ship"], width=1)
    assert image.sum() == 0  # a copy
    assert (out[10, 10:50, 1] == 255).all()  # the top edge: y 20% of 50, x 10-50% of 100
    assert (out[10:40, 10, 1] == 255).all()  # the left edge
    assert out[45, 80].sum() == 0
    with pytest.raises(InputError, match="uint8"):
        draw_boxes(image.astype(np.float32), [])
