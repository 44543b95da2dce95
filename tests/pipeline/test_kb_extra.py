"""An entry added at inference time names a class no training image showed.

A small model is trained on the synthetic benchmark with the meadow class held out (no meadow
image, no meadow question). At inference it runs with a user's knowledge base of the data set's
classes that lacks meadows, plus one meadow entry loaded from a JSONL file the way `--kb-extra`
loads it (`load_knowledge(base, extra=[file])`). For meadow images that entry must be the first
scene cue and the answer (a cue pointer names it); for other images it must rarely be.
Relational retrieval is what reaches it: the entry's relation (grassland) fits what the region
level retrieves on those images, which classes seen in training taught it (grass lies under
residential areas, playgrounds and airports).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geostrata.knowledge.base import LABEL_MAP_FILE, default_dir
from geostrata.session.samples import SCENE_QUESTION

HELD_OUT, HELD_ID = "meadow", "scene.meadow"
ADDED = {
    "id": "scene.user_meadow",
    "level": "scene",
    "name": "meadow",
    "synonyms": ["grassland scene"],
    "description": "Open land under an even carpet of grass, with a few scattered trees and no "
    "buildings, fields or roads.",
    "related": ["region.grassland"],
    "datasets": ["synthetic"],
}
# Relational retrieval with a strong weight (4: a perfect relation match outweighs any cosine
# gap); the budget is the smallest at which the answer follows the cue (with 60 stage-2 steps
# of 16 the model still answered "no" to every scene question).
PROFILE = {
    "n_train": 240, "n_test": 72, "stage1_steps": 20, "stage2_steps": 80, "batch_size": 32,
    "holdout": f"scene:{HELD_OUT}", "model": {"cue_text": True, "relation_weight": 4.0},
    "overrides": ("data.tasks=[vqa]",),
}  # fmt: skip


def user_base(folder: Path, without: str) -> Path:
    """A user's base: the shipped entries of the synthetic data set's classes (relations to
    other entries dropped) and its label-map rows, without the entry `without`."""
    rows = []
    for source in sorted(default_dir().glob("*.jsonl")):
        if source.name != "paraphrases.jsonl":
            lines = source.read_text(encoding="utf-8").splitlines()
            rows += [json.loads(line) for line in lines]
    kept = [r for r in rows if "synthetic" in r["datasets"] and r["id"] != without]
    ids = {r["id"] for r in kept}
    for row in kept:
        for key in ("related", "parents"):
            row[key] = [i for i in row.get(key, []) if i in ids]
    folder.mkdir(parents=True)
    text = "".join(json.dumps(r) + "\n" for r in kept)
    (folder / "entries.jsonl").write_text(text, encoding="utf-8")
    table = (default_dir() / LABEL_MAP_FILE).read_text(encoding="utf-8").splitlines()
    lines = [table[0]] + [t for t in table[1:] if t.split("\t")[0] == "synthetic"]
    lines = [t for t in lines if t.split("\t")[-1] in ids or t == table[0]]
    (folder / LABEL_MAP_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory):
    """(model folder, data folder) of a tiny model trained without any meadow image."""
    from geostrata.demo import DemoProfile, synthesize_once
    from geostrata.train.pipeline import run_experiment

    root = tmp_path_factory.mktemp("kb_extra")
    profile = DemoProfile(**PROFILE)
    data = synthesize_once(root / "data", profile, seed=0, show_progress=False, workers=1)
    cfg = profile.experiment(data, root / "run", seed=0)
    return run_experiment(cfg, show_progress=False).model_dir, data


def images_by_class(data: Path) -> dict[str, list[Path]]:
    from geostrata.data.synthetic import load_annotations

    out: dict[str, list[Path]] = {}
    for ann in load_annotations(data, "test").values():
        out.setdefault(ann["scene"], []).append(data / ann["image"])
    return out


def top_cue_and_answer(loaded, images) -> dict[str, list[tuple[str, str]]]:
    """scene class -> (first scene cue, answer to the scene question) per test image."""
    from geostrata.inference import predict

    return {
        scene: [(p.cues["scene"][0].id, p.answer) for p in
                (predict(loaded, str(path), SCENE_QUESTION) for path in paths)]
        for scene, paths in images.items()
    }  # fmt: skip


def _share(rows: list[tuple[str, str]], cue: str | None = None, answer: str | None = None):
    return sum(c == cue or a == answer for c, a in rows) / len(rows)


@pytest.mark.slow
def test_an_entry_added_from_a_jsonl_is_the_top_cue_and_the_answer(held_out_run, tmp_path):
    from geostrata.inference import load_model
    from geostrata.session.session import load_knowledge

    model_dir, data = held_out_run
    extra = tmp_path / "meadow.jsonl"
    extra.write_text(json.dumps(ADDED) + "\n", encoding="utf-8")
    base = user_base(tmp_path / "kb", without=HELD_ID)
    images = images_by_class(data)
    held = {HELD_OUT: images[HELD_OUT]}
    assert len(held[HELD_OUT]) >= 5

    without = top_cue_and_answer(load_model(model_dir, knowledge=load_knowledge(str(base))), held)
    assert _share(without[HELD_OUT], answer=ADDED["name"]) == 0  # nothing to name it from
    knowledge = load_knowledge(str(base), extra=[extra])
    loaded = load_model(model_dir, knowledge=knowledge)
    added = top_cue_and_answer(loaded, images)
    top = _share(added[HELD_OUT], cue=ADDED["id"])
    named = _share(added[HELD_OUT], answer=ADDED["name"])
    assert top >= 0.6 and named >= 0.6, (top, named, added[HELD_OUT])
    others = [row for scene, rows in added.items() if scene != HELD_OUT for row in rows]
    assert _share(others, cue=ADDED["id"]) <= 0.25, added
    # the relations are what reach it: ranked by the visual score alone it is first less often
    loaded.model.set_relation_weight(0.0, knowledge)
    visual = top_cue_and_answer(loaded, held)
    assert _share(visual[HELD_OUT], cue=ADDED["id"]) < top, visual
