"""SceneFolderDataset on the UCMerced / AID layouts and the synthetic split-file layout."""

import logging

import numpy as np
import pytest

from geostrata.data.folder import SceneFolderDataset
from geostrata.errors import AnnotationError, DatasetNotFoundError, ImageError
from tests.data.fixtures import rgb_array, write_scene_folder

CLASSES = ["river", "beach", "forest"]


def test_ucmerced_layout_with_tifs(tmp_path):
    paths = write_scene_folder(tmp_path, CLASSES, per_class=2, ext=".tif", nested=True)
    data = SceneFolderDataset(tmp_path)
    assert data.classes == sorted(CLASSES)
    assert len(data) == len(paths) == 6
    sample = data[0]
    assert sample["label"] == "beach" and sample["label_index"] == 0
    assert sample["image"].shape == (8, 8, 3) and sample["image"].dtype == np.uint8
    assert [r["label_index"] for r in data.records] == [0, 0, 1, 1, 2, 2]
    assert all("image" not in record for record in data.records)


def test_aid_layout_skips_stray_files_with_a_warning(tmp_path, caplog):
    write_scene_folder(tmp_path, CLASSES, per_class=1, ext=".jpg")
    (tmp_path / "river" / "readme.txt").write_text("not an image")
    (tmp_path / "river" / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / ".hidden_class").mkdir()
    with caplog.at_level(logging.WARNING):
        data = SceneFolderDataset(tmp_path)
    assert len(data) == 3 and ".hidden_class" not in data.classes
    assert "skipped 2" in caplog.text and "readme.txt" in caplog.text


def test_empty_class_folders_are_named_in_a_warning(tmp_path, caplog):
    """An empty class folder used to pass silently: its class just got no samples."""
    write_scene_folder(tmp_path, CLASSES, per_class=1, ext=".jpg")
    (tmp_path / "desert").mkdir()
    (tmp_path / "glacier").mkdir()
    (tmp_path / "glacier" / "notes.txt").write_text("no images here")
    with caplog.at_level(logging.WARNING, logger="geostrata.data.folder"):
        data = SceneFolderDataset(tmp_path)
    assert "desert" in data.classes and len(data) == 3
    assert "2 class folder(s) hold no image files" in caplog.text
    assert str(tmp_path / "desert") in caplog.text and str(tmp_path / "glacier") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geostrata.data.folder"):
        SceneFolderDataset(tmp_path, classes=CLASSES)
    assert "hold no image" not in caplog.text
    for name in CLASSES:
        for path in (tmp_path / name).iterdir():
            path.unlink()
    with pytest.raises(DatasetNotFoundError, match="no image files"):
        SceneFolderDataset(tmp_path)


def test_given_classes_set_order_and_subset(tmp_path, caplog):
    write_scene_folder(tmp_path, CLASSES, per_class=1)
    data = SceneFolderDataset(tmp_path, classes=["river", "beach"])
    assert [(r["label"], r["label_index"]) for r in data.records] == [("river", 0), ("beach", 1)]
    with caplog.at_level(logging.WARNING):
        data = SceneFolderDataset(tmp_path, classes=["harbor", "river"])
    assert "harbor" in caplog.text and data.records[0]["label_index"] == 1
    with pytest.raises(DatasetNotFoundError, match="no folder for any"):
        SceneFolderDataset(tmp_path, classes=["harbor"])


def test_missing_and_empty_roots(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nowhere: data set folder not found"):
        SceneFolderDataset(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="no class folders"):
        SceneFolderDataset(tmp_path)
    (tmp_path / "river").mkdir()
    (tmp_path / "river" / "notes.txt").write_text("x")
    with pytest.raises(DatasetNotFoundError, match="no image files"):
        SceneFolderDataset(tmp_path)


def test_synthetic_split_file_layout(tmp_path):
    write_scene_folder(tmp_path / "scenes", CLASSES, per_class=2)
    split = tmp_path / "splits" / "train.txt"
    split.parent.mkdir()
    split.write_text("scenes/river/river01.png\n\n# comment\nscenes/beach/beach00.png\n")
    data = SceneFolderDataset(tmp_path / "scenes", split_file=split)
    assert [r["label"] for r in data.records] == ["river", "beach"]
    assert data.records[0]["image_path"].endswith("river01.png")
    assert data.records[0]["label_index"] == data.classes.index("river")


def test_split_file_with_labels_and_bare_names(tmp_path):
    write_scene_folder(tmp_path, CLASSES, per_class=1)
    split = tmp_path / "split.txt"
    split.write_text("forest00.png\nriver/river00.png river\n")
    data = SceneFolderDataset(tmp_path, split_file=split)
    assert [r["label"] for r in data.records] == ["forest", "river"]


def test_split_file_unknown_class_names_file_and_line(tmp_path):
    write_scene_folder(tmp_path, CLASSES, per_class=1)
    split = tmp_path / "split.txt"
    split.write_text("river/river00.png\nharbor/harbor00.png\n")
    with pytest.raises(AnnotationError, match=r"split\.txt, line 2: unknown class 'harbor'"):
        SceneFolderDataset(tmp_path, split_file=split)
    split.write_text("river/river00.png\nbeach/beach00.png swamp\n")
    with pytest.raises(AnnotationError, match=r"line 2: unknown class 'swamp'"):
        SceneFolderDataset(tmp_path, split_file=split)


def test_split_file_missing_listed_file(tmp_path):
    write_scene_folder(tmp_path, CLASSES, per_class=1)
    split = tmp_path / "split.txt"
    split.write_text("river/river00.png\n\nbeach/beach07.png\n")
    with pytest.raises(AnnotationError, match=r"split\.txt, line 3: listed file 'beach/beach07"):
        SceneFolderDataset(tmp_path, split_file=split)
    with pytest.raises(DatasetNotFoundError, match="split file not found"):
        SceneFolderDataset(tmp_path, split_file=tmp_path / "absent.txt")


def test_ambiguous_bare_name(tmp_path):
    write_scene_folder(tmp_path, CLASSES, per_class=1)
    twin = (tmp_path / "river" / "river00.png").read_bytes()
    (tmp_path / "beach" / "river00.png").write_bytes(twin)
    split = tmp_path / "split.txt"
    split.write_text("river00.png\n")
    with pytest.raises(AnnotationError, match="line 1: file name 'river00.png' is ambiguous"):
        SceneFolderDataset(tmp_path, split_file=split)


def test_transform_and_image_check(tmp_path):
    paths = write_scene_folder(tmp_path, CLASSES, per_class=1)
    data = SceneFolderDataset(tmp_path, transform=lambda s: {**s, "image": s["image"][:4, :4]})
    assert data[0]["image"].shape == (4, 4, 3)
    np.testing.assert_array_equal(data[0]["image"], rgb_array(100)[:4, :4])  # beach = class 1
    data.check_images()
    paths[0].unlink()
    paths[1].unlink()
    assert data.missing_images() == [str(paths[1]), str(paths[0])]  # records are sorted
    with pytest.raises(ImageError, match="2 image file"):
        data.check_images()
    with pytest.raises(ImageError, match="image file not found"):
        data[0]
