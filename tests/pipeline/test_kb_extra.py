"""An entry added at inference time names a class no training image showed.

A tiny model is trained on the synthetic benchmark with the beach class held out (no beach image,
no beach question). At inference it runs with a user's knowledge base that has no beach entry
either, plus one beach entry loaded from a JSONL file the way `--kb-extra` loads it. For beach
images that entry must be the first scene cue and the answer; for other images it must not.
Relational retrieval is what reaches it: the entry's relations (sand, water) match what the
region level retrieves on those images, which classes seen in training taught it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geostrata.knowledge.base import LABEL_MAP_FILE, default_dir
from geostrata.session.samples import SCENE_QUESTION

HELD_OUT = "beach"
ADDED = {
    "id": "scene.user_beach",
    "level": "scene",
    "name": "beach",
    "synonyms": ["seaside", "shore"],
    "description": "A wide band of pale yellow sand along the sea, with the water beside it and "
    "sometimes a few buildings, cars or trees behind the sand.",
    "related": ["region.sand", "region.water"],
    "datasets": ["synthetic"],
}


def _base_without(entry_id: str, folder: Path) -> Path:
    """The shipped base's entry files and label map without `entry_id` (nor references to it)."""
    folder.mkdir()
    for source in sorted(default_dir().glob("*.jsonl")):
        rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
        if source.name != "paraphrases.jsonl":
            rows = [r for r in rows if r["id"] != entry_id]
            for row in rows:
                for key in ("related", "parents"):
                    row[key] = [i for i in row.get(key, []) if i != entry_id]
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (folder / source.name).write_text(text, encoding="utf-8")
    table = (default_dir() / LABEL_MAP_FILE).read_text(encoding="utf-8").splitlines()
    kept = [line for line in table if not line.endswith(f"\t{entry_id}")]
    (folder / LABEL_MAP_FILE).write_text("\n".join(kept) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory):
    """(model folder, data folder) of a tiny model trained without any beach image."""
    from geostrata.demo import DemoProfile, synthesize_once
    from geostrata.train.pipeline import run_experiment

    root = tmp_path_factory.mktemp("kb_extra")
    profile = DemoProfile(
        n_train=240, n_test=96, stage1_steps=30, stage2_steps=90, batch_size=16,
        holdout=f"scene:{HELD_OUT}",
        model={"cue_text": True, "relation_weight": 1.0},
        overrides=("data.captions=false",),
    )  # fmt: skip
    data = synthesize_once(root / "data", profile, seed=0, show_progress=False, workers=1)
    cfg = profile.experiment(data, root / "run", seed=0)
    return run_experiment(cfg, show_progress=False).model_dir, data


def _test_images(data: Path) -> dict[str, list[Path]]:
    from geostrata.data.synthetic import load_annotations

    out: dict[str, list[Path]] = {}
    for ann in load_annotations(data, "test").values():
        out.setdefault(ann["scene"], []).append(data / ann["image"])
    return out


def test_an_entry_added_from_a_jsonl_is_the_top_cue_and_the_answer(held_out_run, tmp_path):
    from geostrata.inference import load_model, predict
    from geostrata.session.session import load_knowledge

    model_dir, data = held_out_run
    extra = tmp_path / "beach.jsonl"
    extra.write_text(json.dumps(ADDED) + "\n", encoding="utf-8")
    base = _base_without("scene.beach", tmp_path / "kb")
    images = _test_images(data)

    def run(knowledge) -> dict[str, list[tuple[str, str]]]:
        loaded = load_model(model_dir, knowledge=knowledge)
        return {
            scene: [(p.cues["scene"][0].id, p.answer) for p in
                    (predict(loaded, str(path), SCENE_QUESTION) for path in paths)]
            for scene, paths in images.items()
        }  # fmt: skip

    without = run(load_knowledge(str(base)))
    assert all(answer != HELD_OUT for rows in without.values() for _, answer in rows)
    added = run(load_knowledge(str(base), extra=[extra]))
    beach = added[HELD_OUT]
    assert len(beach) >= 6
    top = sum(cue == ADDED["id"] for cue, _ in beach) / len(beach)
    named = sum(answer == HELD_OUT for _, answer in beach) / len(beach)
    assert top >= 0.6 and named >= 0.6, (top, named, beach)
    others = [cue for scene, rows in added.items() if scene != HELD_OUT for cue, _ in rows]
    assert sum(cue == ADDED["id"] for cue in others) / len(others) <= 0.2
