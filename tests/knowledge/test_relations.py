"""Relations between levels: both directions, the parents hierarchy, redundant relations once."""

from geostrata.knowledge.base import KnowledgeBase
from geostrata.knowledge.relations import relation_table
from geostrata.knowledge.schema import Entry

from .conftest import entry


def _entries():
    rows = [
        entry("scene.airport", "scene", "airport", related=["object.airplane", "region.water"]),
        entry("scene.river", "scene", "river", related=["region.water", "region.inland"]),
        entry("scene.lot", "scene", "lot"),
        entry("object.aircraft", "object", "aircraft"),
        entry("object.airplane", "object", "airplane", parents=["object.aircraft"]),
        entry("object.small", "object", "small aircraft", parents=["object.airplane"]),
        entry("object.helicopter", "object", "helicopter", parents=["object.aircraft"]),
        entry("object.car", "object", "car", related=["scene.lot"]),
        entry("region.water", "region", "water"),
        entry("region.inland", "region", "inland water", parents=["region.water"]),
        entry("region.sea", "region", "sea", parents=["region.water"]),
    ]
    return [Entry(**row) for row in rows]


SCENES = ["scene.airport", "scene.river", "scene.lot"]
OBJECTS = ["object.aircraft", "object.airplane", "object.small", "object.helicopter", "object.car"]
REGIONS = ["region.water", "region.inland", "region.sea"]


def test_a_relation_fits_itself_its_kinds_and_its_broader_entries():
    table = relation_table(_entries(), SCENES, OBJECTS)
    # airport -> airplane: airplane, its kind small aircraft and its broader aircraft; not the
    # sibling helicopter
    assert table.matrix[0].tolist() == [1, 1, 1, 0, 0]
    assert table.counts.tolist() == [1, 0, 1]


def test_relations_count_in_both_directions():
    table = relation_table(_entries(), SCENES, OBJECTS)
    assert table.matrix[2].tolist() == [0, 0, 0, 0, 1]  # only car -> lot was written


def test_a_relation_implied_by_a_broader_one_counts_once():
    table = relation_table(_entries(), SCENES, REGIONS)
    assert table.counts.tolist() == [1, 1, 0]  # river -> water and inland water (a kind of it)
    assert table.matrix[1].tolist() == [1, 1, 1]  # the sea is a kind of water too


def test_the_default_base_relates_every_synthetic_scene_to_finer_levels(hashing, tmp_path):
    """Relational retrieval needs each class's covers / objects: every scene entry of the
    synthetic benchmark has a relation among the synthetic region or object entries."""
    kb = KnowledgeBase.load("default", encoder=hashing, cache_dir=tmp_path)
    scenes = [e.id for e in kb.entries if e.level.value == "scene" and "synthetic" in e.datasets]
    assert len(scenes) == 12
    rows = [kb.level_ids("scene").index(s) for s in scenes]
    synthetic = {
        lv: [i for i, e in enumerate(kb.level_ids(lv)) if "synthetic" in kb.get(e).datasets]
        for lv in ("region", "object")
    }
    for row, scene in zip(rows, scenes, strict=True):
        found = [kb.relations("scene", lv).matrix[row, synthetic[lv]].sum() for lv in synthetic]
        assert sum(found) > 0, scene
