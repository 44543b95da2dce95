"""RSVGDataset: DIOR-RSVG referring expressions (VOC XML walk + split indices)."""

import logging

import pytest

from geostrata.boxes import Box, from_pixels
from geostrata.data.rsvg import RSVGDataset, index_objects
from geostrata.errors import AnnotationError, ImageError
from geostrata.session.experiment import DataConfig
from geostrata.session.samples import ground_question, load_task
from tests.data.fixtures import rsvg_files, voc_xml, write_dior_rsvg


def test_split_indices_follow_the_walk_over_sorted_files_and_objects(tmp_path):
    write_dior_rsvg(tmp_path, rsvg_files(), {"train": [4, 0, 2], "test": [1, 3]})
    train = RSVGDataset(tmp_path, "train")
    assert [r["question_id"] for r in train.records] == ["rsvg:0", "rsvg:2", "rsvg:4"]
    first, car, windmill = train.records
    assert first["expression"] == "the ship on the left" and first["object_class"] == "ship"
    assert first["box"] == [10, 10, 30, 50]  # 20..60 of 200 px wide, 10..50 of 100 px high
    assert first["answer"] == Box.of(first["box"]).text() == "{<10><10><30><50>}"
    assert car["box"] == from_pixels(0, 0, 20, 10, 40, 20).as_list() == [0, 0, 50, 50]  # header
    assert windmill["image_path"] == str(tmp_path / "JPEGImages" / "00010.jpg")
    assert (windmill["task"], windmill["qtype"], windmill["level"]) == (
        "ground",
        "ground",
        "object",
    )
    assert [r["expression"] for r in RSVGDataset(tmp_path, "test").records] == [
        "the ship at the bottom right", "the large dam",
    ]  # fmt: skip


def test_load_task_builds_the_grounding_prompt(tmp_path):
    write_dior_rsvg(tmp_path, rsvg_files(), {"train": [0, 1, 2], "test": [3, 4]})
    task = load_task(DataConfig(kind="dior_rsvg", root=str(tmp_path)))
    assert len(task.train) == 3 and len(task.eval) == 2
    assert task.eval[1]["question"] == ground_question("a windmill")
    assert task.eval[1]["answer"] == "{<5><5><15><25>}"


def test_object_without_description_is_skipped_with_a_warning(tmp_path, caplog):
    files = rsvg_files()
    files["00001"]["objects"][1]["text"] = None
    write_dior_rsvg(tmp_path, files, {"train": [0, 1, 2]})
    with caplog.at_level(logging.WARNING):
        data = RSVGDataset(tmp_path, "train")
    assert len(data) == 2 and "00001.xml: object 1 (index 1): no <description>" in caplog.text


@pytest.mark.parametrize(
    ("lines", "pattern"),
    [
        ([0, 5], r"train.txt:2: index 5 out of range: the 3 annotation files hold 5 objects"),
        ([0, "x1"], r"train.txt:2: expected an object index"),
    ],
)
def test_bad_split_lines_name_file_and_line(tmp_path, lines, pattern):
    write_dior_rsvg(tmp_path, rsvg_files(), {"train": lines})
    with pytest.raises(AnnotationError, match=pattern):
        RSVGDataset(tmp_path, "train")


def test_repeated_index_is_read_once_with_a_warning(tmp_path, caplog):
    write_dior_rsvg(tmp_path, rsvg_files(), {"train": [2, 0, 2]})
    with caplog.at_level(logging.WARNING):
        assert len(RSVGDataset(tmp_path, "train")) == 2
    assert "train.txt:3: index 2 listed again (first on line 1)" in caplog.text


def test_missing_bndbox_names_file_and_object(tmp_path):
    files = rsvg_files()
    files["00010"]["objects"][0]["box"] = None
    write_dior_rsvg(tmp_path, files, {"train": [3]})
    with pytest.raises(AnnotationError, match=r"00010.xml: object 0 \(dam\): missing <bndbox>"):
        RSVGDataset(tmp_path, "train")
    assert len(index_objects(tmp_path).objects) == 5  # still counted in the walk
    assert len(RSVGDataset(tmp_path, "train", problems=[])) == 0


def test_malformed_and_hostile_xml(tmp_path):
    files = rsvg_files()
    files["00002"] = "<annotation>\n  <filename>00002.jpg</filename>\n  <object>\n</annotation>\n"
    write_dior_rsvg(tmp_path, files, {"train": [0]})
    with pytest.raises(AnnotationError, match=r"00002.xml:4:\d+: malformed XML"):
        index_objects(tmp_path)
    bomb = '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x "xxxx">]>\n<annotation>&x;</annotation>'
    (tmp_path / "Annotations" / "00002.xml").write_text(bomb, encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"00002.xml:2: <!DOCTYPE> declarations are refused"):
        index_objects(tmp_path)


def test_missing_image_without_size_is_an_image_error(tmp_path):
    write_dior_rsvg(tmp_path, rsvg_files(), {"train": [2]}, with_images=False)
    with pytest.raises(ImageError, match=r"00002.jpg: image file not found"):
        RSVGDataset(tmp_path, "train")
    xml = voc_xml("00001.jpg", [{"name": "ship", "box": (1, 1, 2, 2), "text": "t"}], (10, 10))
    assert "<width>10</width>" in xml
