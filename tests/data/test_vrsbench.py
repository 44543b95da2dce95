"""VRSBenchDataset: the VRSBench EVAL caption / referring / VQA files."""

import pytest

from geostrata.data.vrsbench import VRSBenchDataset
from geostrata.errors import AnnotationError, ConfigError, DatasetNotFoundError
from geostrata.session.experiment import DataConfig
from geostrata.session.samples import ground_question, load_task
from tests.data.fixtures import vrsbench_documents, write_vrsbench


def test_three_tasks_in_the_convention(tmp_path):
    write_vrsbench(tmp_path, vrsbench_documents())
    data = VRSBenchDataset(tmp_path)
    by_task = {}
    for record in data.records:
        by_task.setdefault(record["task"], []).append(record)
    assert {task: len(records) for task, records in by_task.items()} == {
        "caption": 2, "ground": 2, "vqa": 2,
    }  # fmt: skip
    caption = by_task["caption"][1]
    assert caption["references"] == ["A detailed caption of image 1."]
    assert caption["question"] == "Describe the image in detail"  # the benchmark's own prompt
    text_box, number_box = by_task["ground"]
    assert text_box["box"] == [25, 40, 33, 60] and text_box["answer"] == "{<25><40><33><60>}"
    assert number_box["box"] == [10, 20, 50, 80]  # ground truth given as numbers, same 0-100
    assert (text_box["unique"], text_box["size_group"], text_box["object_class"]) == (
        True, "small", "vehicle",
    )  # fmt: skip
    assert [(r["qtype"], r["level"]) for r in by_task["vqa"]] == [
        ("object existence", "object"), ("scene type", "scene"),
    ]  # fmt: skip
    assert text_box["image_path"] == str(tmp_path / "Images_val" / "P0000.png")
    assert len({r["question_id"] for r in data.records}) == 6
    assert data.missing_images() == []


def test_load_task_is_evaluation_only_and_selects_tasks(tmp_path):
    write_vrsbench(tmp_path, vrsbench_documents())
    task = load_task(DataConfig(kind="vrsbench", root=str(tmp_path)))
    assert task.train == [] and len(task.eval) == 6
    ground = [r for r in task.eval if r["task"] == "ground"]
    assert ground[0]["question"] == ground_question("the red car near the road")
    only = load_task(DataConfig(kind="vrsbench", root=str(tmp_path), eval_split="vqa"))
    assert {r["task"] for r in only.eval} == {"vqa"}
    with pytest.raises(ConfigError, match="unknown"):
        VRSBenchDataset(tmp_path, ("val",))


@pytest.mark.parametrize(
    ("truth", "pattern"),
    [
        ("{<25><40><33>}", r"entry 0: \{<25><40><33>\} is not a box"),
        ("{<25><40><133><60>}", r"entry 0: box \[25, 40, 133, 60\] has coordinates outside"),
        ("near the road", r"entry 0: expected a box"),
        ([1, 2, 3], r"entry 0: a box must be 4 numbers"),
        ("{<1><2><3><4>}{<5><6><7><8>}", r"entry 0: expected one box, got 2"),
    ],
)
def test_bad_referring_boxes_name_file_and_entry(tmp_path, truth, pattern):
    documents = vrsbench_documents()
    documents["ground"][0]["ground_truth"] = truth
    write_vrsbench(tmp_path, documents)
    with pytest.raises(AnnotationError, match=r"VRSBench_EVAL_referring.json: " + pattern):
        VRSBenchDataset(tmp_path)


def test_missing_files_and_bad_json(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="VRSBench evaluation file"):
        VRSBenchDataset(tmp_path)
    write_vrsbench(tmp_path, {"vqa": '[{"image_id": "P0000.png",\n "question": }]'})
    with pytest.raises(AnnotationError, match=r"VRSBench_EVAL_vqa.json: invalid JSON at line 2"):
        VRSBenchDataset(tmp_path)
