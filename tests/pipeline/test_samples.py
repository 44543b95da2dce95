"""Every data format reaches training through load_task (one loader path)."""

import dataclasses

import pytest

from geostrata.data.synthetic import synthesize
from geostrata.data.targets import AlignTargetBuilder
from geostrata.errors import ConfigError
from geostrata.knowledge import KnowledgeBase
from geostrata.knowledge.encoder import HashingEncoder
from geostrata.session.experiment import DataConfig
from geostrata.session.samples import CAPTION_QUESTION, SCENE_QUESTION, load_task
from tests.data.fixtures import instruct_records, rsvqa_documents, write_instruct, write_rsvqa


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("syn"), 24, 12, size=64, seed=0)


def test_synthetic_task_has_questions_captions_and_truth(syn):
    task = load_task(DataConfig(kind="synthetic", root=str(syn)))
    assert task.dataset == "synthetic" and len(task.scene_classes) == 12
    qtypes = {r["qtype"] for r in task.train}
    assert {"presence", "count", "scene", "caption"} <= qtypes
    captions = [r for r in task.eval if r["qtype"] == "caption"]  # scored against references
    assert len(captions) == 12 and all(r["references"] == [r["answer"]] for r in captions)
    assert all(r["task"] == "caption" for r in captions)
    assert all(r["image_path"] in task.truths for r in task.train + task.eval)
    assert any(r["question"] == CAPTION_QUESTION for r in task.train)
    limited = load_task(DataConfig(kind="synthetic", root=str(syn), max_train=5, tasks=["vqa"]))
    assert len(limited.train) == 5
    assert "caption" not in {r["qtype"] for r in limited.train + limited.eval}


def test_scene_folders_become_scene_questions_with_resolvable_labels(syn):
    cfg = DataConfig(
        kind="folder",
        root=str(syn / "scenes"),
        train_split=str(syn / "splits/train.txt"),
        eval_split=str(syn / "splits/test.txt"),
        dataset="synthetic",
    )
    task = load_task(cfg)
    assert len(task.train) == 24 and len(task.eval) == 12
    assert {r["question"] for r in task.train} == {SCENE_QUESTION}
    assert all(" " in r["answer"] or "_" not in r["answer"] for r in task.train)  # parking lot
    kb = KnowledgeBase.load("default", encoder=HashingEncoder(dim=64))
    targets = AlignTargetBuilder(kb, task.dataset, task.labels)
    paths = [r["image_path"] for r in task.train[:3]]
    rows = targets([task.truths[p] for p in paths])["scene"]
    assert rows.sum(dim=1).tolist() == [1.0, 1.0, 1.0]


def test_rsvqa_and_instruction_files(tmp_path):
    for split in ("train", "test"):
        write_rsvqa(
            tmp_path / "rsvqa",
            rsvqa_documents(),
            prefix="LR",
            split=split,
            image_dir="Images_LR",
            image_ext=".tif",
        )
    task = load_task(DataConfig(kind="rsvqa", root=str(tmp_path / "rsvqa"), prefix="LR"))
    assert len(task.train) == 6 and {r["level"] for r in task.train} >= {"object", "region"}
    write_instruct(tmp_path / "inst", instruct_records(3))
    cfg = DataConfig(
        kind="instruct",
        root=str(tmp_path / "inst"),
        train_split="instruct.json",
        eval_split="instruct.json",
    )
    assert len(load_task(cfg).train) == 1 + 2 + 3  # one sample per (human, gpt) turn
    with pytest.raises(ConfigError, match="selects none of the 6 training records"):
        load_task(dataclasses.replace(cfg, tasks=["ground"]))
