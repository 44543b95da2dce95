"""RSVQADataset: the released LR/HR JSON triplets, active filtering, levels and clear errors."""

import json

import numpy as np
import pytest

from geostrata.data.rsvqa import RSVQADataset
from geostrata.errors import AnnotationError, ConfigError, DatasetNotFoundError, ImageError
from tests.data.fixtures import rgb_array, rsvqa_documents, write_image, write_rsvqa


def _synthetic(tmp_path, **kwargs):
    documents = rsvqa_documents(**kwargs)
    return documents, write_rsvqa(tmp_path, documents)


def test_round_trip_keeps_active_entries_only(tmp_path):
    documents, _ = _synthetic(tmp_path, n_images=3)
    data = RSVQADataset(tmp_path, "train", prefix="SYN", image_ext=".png")
    assert len(data) == 6  # 2 active images x 3 types; the third image is inactive
    record = data.records[1]
    assert record == {
        "image_path": str(tmp_path / "images" / "0.png"),
        "image_id": "0",
        "question_id": "1",
        "question": "count question 1?",
        "answer": "answer 1",
        "qtype": "count",
        "level": "object",
    }
    assert {r["level"] for r in data.records if r["qtype"] == "area"} == {"region"}
    sample = data[3]
    assert sample["image_id"] == "1"
    np.testing.assert_array_equal(sample["image"], rgb_array(1))


def test_question_level_key_wins_and_extra_types_are_kept(tmp_path):
    documents = rsvqa_documents(n_images=2, types=("presence", "scene", "land_cover"))
    documents["questions"]["questions"][0]["level"] = "region"
    write_rsvqa(tmp_path, documents)
    data = RSVQADataset(tmp_path, "train", prefix="SYN", image_ext=".png")
    assert [(r["qtype"], r["level"]) for r in data.records] == [
        ("presence", "region"), ("scene", "scene"), ("land_cover", "region"),
    ]


def test_types_filter(tmp_path):
    _synthetic(tmp_path)
    data = RSVQADataset(tmp_path, "train", prefix="SYN", image_ext=".png", types=["count"])
    assert [r["qtype"] for r in data.records] == ["count", "count"]
    only = RSVQADataset(tmp_path, "train", prefix="SYN", image_ext=".png", types="area")
    assert {r["qtype"] for r in only.records} == {"area"}


@pytest.mark.parametrize(("prefix", "folder"), [("LR", "Images_LR"), ("USGS", "Data")])
def test_real_prefixes_default_image_folders(tmp_path, prefix, folder):
    documents = rsvqa_documents(n_images=2)
    write_rsvqa(tmp_path, documents, prefix=prefix, split="val", image_dir=folder, image_ext=".tif")
    data = RSVQADataset(tmp_path, "val", prefix=prefix)
    assert data.records[0]["image_path"] == str(tmp_path / folder / "0.tif")
    assert data[0]["image"].shape == (8, 8, 3)


def test_unknown_prefix_needs_image_dir_and_ext(tmp_path):
    with pytest.raises(ConfigError, match="'BEN'.*image_dir="):
        RSVQADataset(tmp_path, "train", prefix="BEN")
    with pytest.raises(ConfigError, match="'BEN'.*image_ext="):
        RSVQADataset(tmp_path, "train", prefix="BEN", image_dir="imgs")


def test_synthetic_layout_json_in_rsvqa_folder(tmp_path):
    documents = rsvqa_documents(n_images=2)
    write_rsvqa(tmp_path / "rsvqa", documents)
    write_image(tmp_path / "images" / "0.png", rgb_array(5))
    data = RSVQADataset(tmp_path, "train", prefix="SYN")
    assert data.records[0]["image_path"] == str(tmp_path / "images" / "0.png")
    np.testing.assert_array_equal(data[0]["image"], rgb_array(5))


def test_missing_files_list_expected_paths(tmp_path):
    paths = _synthetic(tmp_path)[1]
    paths["answers"].unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        RSVQADataset(tmp_path, "train", prefix="SYN")
    message = str(info.value)
    assert all(str(path) in message for path in paths.values())
    assert "need all three" in message
    assert str(tmp_path / "rsvqa" / paths["answers"].name) in message


def test_dangling_image_id(tmp_path):
    documents = rsvqa_documents()
    documents["questions"]["questions"][2]["img_id"] = 99
    paths = write_rsvqa(tmp_path, documents)
    with pytest.raises(AnnotationError) as info:
        RSVQADataset(tmp_path, "train", prefix="SYN")
    message = str(info.value)
    assert str(paths["questions"]) in message and "question id 2" in message
    assert "img_id 99 does not exist" in message and str(paths["images"]) in message


def test_dangling_answer_id(tmp_path):
    documents = rsvqa_documents()
    documents["questions"]["questions"][1]["answers_ids"] = [42]
    paths = write_rsvqa(tmp_path, documents)
    with pytest.raises(AnnotationError, match=r"question id 1\): answer id 42 does not exist"):
        RSVQADataset(tmp_path, "train", prefix="SYN")
    assert paths


def test_malformed_json_names_line_and_column(tmp_path):
    paths = _synthetic(tmp_path)[1]
    text = paths["images"].read_text().splitlines()
    text[3] = text[3] + " oops"
    paths["images"].write_text("\n".join(text))
    with pytest.raises(AnnotationError, match=r"images\.json: invalid JSON at line 4, column \d+"):
        RSVQADataset(tmp_path, "train", prefix="SYN")


@pytest.mark.parametrize(
    ("kind", "key", "pattern"),
    [
        ("questions", "question", r"questions\.json: entry 4 .*missing key 'question'"),
        ("questions", "img_id", r"entry 4 .*missing key 'img_id'"),
        ("answers", "answer", r"answers\.json: entry 4 .*missing key 'answer'"),
        ("images", "id", r"images\.json: entry 1: missing key 'id'"),
    ],
)
def test_missing_keys_name_key_and_entry(tmp_path, kind, key, pattern):
    documents = rsvqa_documents()
    index = 1 if kind == "images" else 4
    del documents[kind][kind][index][key]
    write_rsvqa(tmp_path, documents)
    with pytest.raises(AnnotationError, match=pattern):
        RSVQADataset(tmp_path, "train", prefix="SYN")


def test_wrong_types_and_duplicates(tmp_path):
    documents = rsvqa_documents()
    documents["questions"]["questions"][0]["answers_ids"] = "0"
    write_rsvqa(tmp_path, documents)
    with pytest.raises(AnnotationError, match="'answers_ids' must be a list of integers"):
        RSVQADataset(tmp_path, "train", prefix="SYN")
    documents = rsvqa_documents()
    documents["images"]["images"][1]["id"] = 0
    write_rsvqa(tmp_path, documents)
    with pytest.raises(AnnotationError, match="entry 1: duplicate id 0"):
        RSVQADataset(tmp_path, "train", prefix="SYN")


def test_type_without_level_and_bad_level(tmp_path):
    documents = rsvqa_documents(types=("presence", "tree_species"))
    write_rsvqa(tmp_path, documents)
    with pytest.raises(AnnotationError, match="'tree_species' has no 'level' key"):
        RSVQADataset(tmp_path, "train", prefix="SYN")
    data = RSVQADataset(tmp_path, "train", prefix="SYN", levels={"tree_species": "object"})
    assert {r["level"] for r in data.records} == {"object"}
    documents["questions"]["questions"][0]["level"] = "pixel"
    write_rsvqa(tmp_path, documents)
    with pytest.raises(AnnotationError, match="level must be one of"):
        RSVQADataset(tmp_path, "train", prefix="SYN", types=["presence"])


def test_missing_image_is_reported_on_read(tmp_path):
    _synthetic(tmp_path)
    (tmp_path / "images" / "1.png").unlink()
    data = RSVQADataset(tmp_path, "train", prefix="SYN", image_ext=".png")
    assert data.missing_images() == [str(tmp_path / "images" / "1.png")]
    with pytest.raises(ImageError, match=r"1\.png: image file not found"):
        data[3]
    json.dumps(data.records)  # records stay plain JSON-able data
