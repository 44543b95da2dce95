"""Held-out classes: absent from every training image and question, present in the test split."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geostrata.cli import app
from geostrata.data.synthetic import Holdout, load_annotations, load_meta, synthesize
from geostrata.data.synthetic.holdout import OBJECT_POOL
from geostrata.data.synthetic.vocab import SCENE_CLASSES, plural, spaced
from geostrata.errors import ConfigError

HELD = Holdout(scenes=("airport", "harbor"), objects=("ship", "car"))


@pytest.fixture(scope="module")
def held_bench(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("held") / "d", 48, 36, 64, 3, holdout=HELD)


def _questions(root: Path, split: str) -> list[str]:
    data = json.loads((root / "rsvqa" / f"SYN_split_{split}_questions.json").read_text())
    return [q["question"] for q in data["questions"]]


def _names(name: str) -> tuple[str, str]:
    return spaced(name), plural(name)


def test_folds_rotate_over_every_class():
    folds = [Holdout.fold(k, 3, seed=5) for k in range(3)]
    scenes = [s for f in folds for s in f.scenes]
    objects = [o for f in folds for o in f.objects]
    assert sorted(scenes) == sorted(SCENE_CLASSES)  # each scene held out exactly once
    assert sorted(objects) == sorted(OBJECT_POOL)
    assert Holdout.fold(1, 3, seed=5) == folds[1]  # seeded
    assert Holdout.fold(1, 3, seed=6) != folds[1] or Holdout.fold(0, 3, seed=6) != folds[0]


def test_training_split_never_shows_a_held_out_class(held_bench):
    train = load_annotations(held_bench, "train").values()
    assert {a["scene"] for a in train}.isdisjoint(HELD.scenes)
    drawn = {o["class"] for a in train for o in a["objects"]}
    assert drawn.isdisjoint(HELD.objects)
    for text in _questions(held_bench, "train") + _task_texts(held_bench, "train"):
        for name in HELD.objects:
            assert not any(form in text for form in _names(name)), text


def _task_texts(root: Path, split: str) -> list[str]:
    """Every turn of the grounding, region and dialogue files of a split."""
    texts = []
    for task in ("ground", "region", "chat"):
        entries = json.loads((root / "instruct" / f"{split}_{task}.json").read_text())
        texts += [t["value"] for e in entries for t in e["conversations"]]
    assert texts
    return texts


def test_test_split_keeps_every_class_and_meta_says_what_was_held(held_bench):
    test = load_annotations(held_bench, "test").values()
    assert {a["scene"] for a in test} == set(SCENE_CLASSES)
    drawn = {o["class"] for a in test for o in a["objects"]}
    assert set(HELD.objects) <= drawn
    assert Holdout.from_dict(load_meta(held_bench)["holdout"]) == HELD


def test_without_a_holdout_training_shows_every_class(tmp_path):
    root = synthesize(tmp_path / "a", 24, 6, 64, 3)
    train = load_annotations(root, "train").values()
    assert {a["scene"] for a in train} == set(SCENE_CLASSES)
    assert load_meta(root)["holdout"] == {"scenes": [], "objects": []}


@pytest.mark.parametrize(
    "text, message",
    [
        ("scene:castle", "not a scene class"),
        ("object:building", "expected one of"),
        ("3/3", "0 <= fold < folds"),
        ("0/13", "2 <= folds <= 12"),
        ("a/b", "expected K/F"),
        ("colour:red", "expected K/F or scene"),
        ("scene:" + ",".join(SCENE_CLASSES[:-1]), "at least two scene classes"),
    ],
)
def test_bad_holdouts_are_refused_naming_the_problem(text, message):
    with pytest.raises(ConfigError, match=message):
        Holdout.parse(text)


def test_cli_holdout_option(tmp_path):
    result = CliRunner().invoke(
        app,
        ["data", "synth", "--out", str(tmp_path / "s"), "--n-train", "12", "--n-test", "12",
         "--size", "64", "--holdout", "scene:beach;object:ship"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "held out of training" in result.output
    assert load_meta(tmp_path / "s")["holdout"] == {"scenes": ["beach"], "objects": ["ship"]}
