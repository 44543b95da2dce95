"""GeoChat-Bench referring / region-captioning lines and the box formats they use."""

import pytest

from geostrata.boxes import Box
from geostrata.data.instruct import GeoChatBenchDataset
from geostrata.data.regions import polygon_box, scale_box, text_boxes
from geostrata.errors import AnnotationError, ImageError
from geostrata.session.experiment import DataConfig
from geostrata.session.samples import load_task, region_question
from tests.data.fixtures import bench_lines, geochat_task_lines, write_geochat_tasks


def test_box_text_keeps_the_axis_aligned_part_of_oriented_boxes():
    assert text_boxes("{<40><89><56><100>|<57>}{< 0 ><1><2><3>}", "w") == [
        Box(40, 89, 56, 100), Box(0, 1, 2, 3),
    ]  # fmt: skip
    assert polygon_box([[10, 20], [30, 20], [30, 60], [10, 60]], 50, 100, "w") == Box(
        20, 20, 60, 60
    )
    assert polygon_box([0, 0, 25, 50], 50, 100, "w") == Box(0, 0, 50, 50)
    assert scale_box([10.4, 20, 49.6, 80], "w") == Box(10, 20, 50, 80)
    for bad in ([[1, 2], [3]], [1, 2, 3], "x"):
        with pytest.raises(AnnotationError, match="w: a polygon"):
            polygon_box(bad, 10, 10, "w")
    with pytest.raises(AnnotationError, match="needs x1 <= x2"):
        text_boxes("{<50><0><10><10>}", "w")


def test_referring_and_region_lines_become_ground_and_region_records(tmp_path):
    lines = geochat_task_lines() + bench_lines(1)  # a VQA line in the same file still reads
    path = write_geochat_tasks(tmp_path, lines)
    data = GeoChatBenchDataset(path, tmp_path / "images")
    ground, region, vqa = data.records
    assert ground["task"] == "ground" and ground["expression"] == "2 airplanes at the left"
    assert ground["boxes"] == [[20, 20, 60, 60], [0, 0, 100, 100]] and ground["box"] == [
        20,
        20,
        60,
        60,
    ]
    assert ground["answer"] == "{<20><20><60><60>}{<0><0><100><100>}"
    assert (ground["ground_type"], ground["size_group"], ground["obj_ids"]) == (
        "ref",
        "small",
        [1, 2],
    )
    assert ground["image_path"] == str(tmp_path / "images" / "train_0.png")
    assert region["task"] == "region" and region["box"] == [10, 20, 30, 40]  # angle dropped
    assert region["references"] == ["a white storage tank"] and region["level"] == "object"
    assert "task" not in vqa and vqa["question"] == "Q0?"
    task = load_task(
        DataConfig(
            kind="geochat_bench",
            root=str(tmp_path),
            eval_split="referring.jsonl",
            image_dir=str(tmp_path / "images"),
        )
    )
    assert task.eval[1]["question"] == region_question(Box(10, 20, 30, 40))
    assert task.eval[0]["question"].startswith("[refer]")


def test_bad_task_lines_name_file_and_line(tmp_path):
    lines = geochat_task_lines()
    lines[0]["ground_truth"] = [[[1, 2], [3]]]
    lines[1]["question"] = "{<10><20><30>|<4>}"
    path = write_geochat_tasks(tmp_path, lines)
    with pytest.raises(AnnotationError, match=r"referring.jsonl: line 1, ground_truth\[0\]"):
        GeoChatBenchDataset(path, tmp_path / "images")
    problems = []
    GeoChatBenchDataset(path, tmp_path / "images", problems=problems)
    assert len(problems) == 2 and "line 2" in problems[1]


def test_pixel_ground_truth_needs_the_image(tmp_path):
    path = write_geochat_tasks(tmp_path, geochat_task_lines()[:1], with_images=False)
    (tmp_path / "images").mkdir()
    with pytest.raises(ImageError, match="train_0.png: image file not found"):
        GeoChatBenchDataset(path, tmp_path / "images")
