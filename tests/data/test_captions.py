"""CaptionDataset: the Karpathy caption JSON of UCM-Captions / Sydney-Captions / RSICD."""

import pytest

from geostrata.data.captions import CaptionDataset
from geostrata.errors import AnnotationError, DatasetNotFoundError
from geostrata.session.experiment import DataConfig
from geostrata.session.samples import CAPTION_QUESTION, load_task
from tests.data.fixtures import karpathy_document, write_karpathy


def test_one_record_per_image_with_every_sentence_as_reference(tmp_path):
    write_karpathy(tmp_path, karpathy_document(n_images=6, sentences=3))
    data = CaptionDataset(tmp_path, "val")  # the folder: its one dataset*.json is found
    assert [r["image_id"] for r in data.records] == ["1.png", "4.png"]
    record = data.records[0]
    assert record["references"] == [f"image 1 caption {k} ." for k in range(3)]
    assert record["answer"] == record["references"][0]
    assert record["image_path"] == str(tmp_path / "RSICD_images" / "1.png")
    assert (record["task"], record["qtype"], record["level"]) == ("caption", "caption", "scene")
    assert data.missing_images() == []
    assert len(CaptionDataset(tmp_path / "dataset_rsicd.json")) == 6  # the file; every split
    with pytest.raises(DatasetNotFoundError, match="no images in split 'tset'.*train, val"):
        CaptionDataset(tmp_path, "tset")


def test_load_task_trains_on_each_sentence_and_evaluates_per_image(tmp_path):
    write_karpathy(
        tmp_path, karpathy_document(n_images=6, sentences=3), name="dataset.json", image_dir="imgs"
    )  # UCM / Sydney layout
    task = load_task(DataConfig(kind="karpathy_captions", root=str(tmp_path), eval_split="test"))
    assert len(task.train) == 2 * 3 and len(task.eval) == 2
    assert [r["answer"] for r in task.train[:3]] == [f"image 0 caption {k} ." for k in range(3)]
    assert len({r["question_id"] for r in task.train}) == 6
    assert all(r["question"] == CAPTION_QUESTION for r in task.train + task.eval)
    assert task.eval[0]["references"] == [f"image 2 caption {k} ." for k in range(3)]


def test_image_dir_setting_and_missing_folder(tmp_path):
    write_karpathy(tmp_path, karpathy_document(), image_dir="pics")
    with pytest.raises(DatasetNotFoundError, match="no image folder.*data.image_dir"):
        CaptionDataset(tmp_path)
    assert CaptionDataset(tmp_path, image_dir="pics").missing_images() == []


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: d["images"][1].pop("filename"), r"images\[1\]: missing key 'filename'"),
        (lambda d: d["images"][2].update(split="tset"), r"images\[2\] \(2.png\): key 'split'"),
        (lambda d: d["images"][1].update(sentences=[]), r"images\[1\] \(1.png\): key 'sentences'"),
        (lambda d: d["images"][0]["sentences"][1].pop("raw"), r"sentences\[1\]: missing key 'raw'"),
        (lambda d: d["images"][2].update(imgid=0), r"images\[2\].*duplicate imgid 0.*images\[0\]"),
    ],
)
def test_malformed_entries_name_the_entry(tmp_path, edit, pattern):
    document = karpathy_document()
    edit(document)
    write_karpathy(tmp_path, document)
    with pytest.raises(AnnotationError, match=pattern):
        CaptionDataset(tmp_path)
    problems = []
    data = CaptionDataset(tmp_path, problems=problems)  # a check lists it and goes on
    assert len(problems) == 1 and len(data) == 2


def test_bad_json_names_line_and_column(tmp_path):
    write_karpathy(tmp_path, '{"images": [\n  {"filename": "0.png",}\n]}')
    with pytest.raises(AnnotationError, match=r"dataset_rsicd.json: invalid JSON at line 2"):
        CaptionDataset(tmp_path, image_dir="RSICD_images")
