"""What a run adds to its knowledge base comes back with the model (knowledge/additions.py)."""

import json

from geostrata.knowledge import Entry, HashingEncoder, KnowledgeBase
from geostrata.knowledge.additions import Additions


def test_additions_round_trip_and_a_file_given_again_keeps_its_version(tmp_path):
    folder = tmp_path / "extra"
    folder.mkdir()
    mine = {
        "id": "scene.quarry_pit",
        "level": "scene",
        "name": "quarry pit",
        "description": "terraced grey benches cut into a hillside",
    }
    (folder / "mine.jsonl").write_text(json.dumps(mine) + "\n", encoding="utf-8")
    (folder / "label_map.tsv").write_text("mine\tQP\tscene.quarry_pit\n", encoding="utf-8")
    kb = KnowledgeBase.load(encoder=HashingEncoder(32), cache_dir=tmp_path / "c", extra=[folder])
    new = Entry("scene.made_up", "scene", "made up", "made up")
    added = Additions.of_files([folder], kb).plus([new])
    assert added.label_map == {"mine": {"QP": "scene.quarry_pit"}}
    added.save(tmp_path / "saved")

    fresh = KnowledgeBase.load(encoder=HashingEncoder(32), cache_dir=tmp_path / "c")
    Additions.restore(tmp_path / "saved", fresh)
    assert fresh.resolve("QP", "mine") == "scene.quarry_pit" and fresh.get("scene.made_up")
    again = KnowledgeBase.load(
        encoder=HashingEncoder(32), cache_dir=tmp_path / "c", extra=[folder / "mine.jsonl"]
    )  # the same file, for this run
    Additions.restore(tmp_path / "saved", again)  # no duplicate-id error
    assert sum(e.id == "scene.quarry_pit" for e in again.entries) == 1
    Additions.restore(tmp_path / "nothing", again)  # a model without additions
