"""KnowledgeBase behaviour on small user bases with the fast hashing encoder."""

import numpy as np
import pytest

from geostrata.errors import KnowledgeBaseError
from geostrata.knowledge import Entry, IndexConfig, KnowledgeBase, Retriever
from geostrata.knowledge.encoder import HashingEncoder

from .conftest import entry

ROWS = [
    entry("scene.harbor", "scene", "harbor", "boats moored along piers in calm water",
          synonyms=["port"]),
    entry("scene.forest", "scene", "forest", "dark green canopy of tree crowns"),
    entry("scene.parking_lot", "scene", "parking lot", "rows of cars on asphalt",
          synonyms=["Parking", "car park"]),
    entry("object.ship", "object", "ship", "a long hull on water", related=["scene.harbor"]),
    entry("object.car", "object", "car", "a small vehicle in a parking bay"),
    entry("region.water", "region", "water", "smooth dark water surface"),
    entry("attribute.dense", "attribute", "dense", "packed close together"),
]


@pytest.fixture
def kb(write_jsonl, tmp_path, hashing):
    return KnowledgeBase.load(write_jsonl(ROWS), encoder=hashing, cache_dir=tmp_path / "cache")


def test_implements_the_retriever_protocol(kb):
    assert isinstance(kb, Retriever)
    assert kb.dim == 64 and kb.encoder_name == "hashing-64-n3"
    vectors = kb.level_embeddings("scene")
    assert vectors.shape == (3, 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_search_returns_only_the_requested_level(kb):
    queries = kb.encode_text(["boats in a harbor", "a car", "water"])
    for level in ("scene", "object", "region"):
        result = kb.search(queries, level, k=2)
        allowed = set(kb.level_ids(level))
        assert all(set(ids) <= allowed for ids in result.ids)
        for ids, rows in zip(result.ids, result.indices, strict=True):
            assert ids == [kb.level_ids(level)[r] for r in rows if r >= 0]
    hits = kb.search_text(["boats moored along piers"], "scene", k=1)[0]
    assert hits[0].entry.id == "scene.harbor" and hits[0].rank == 0


def test_k_beyond_level_size_pads_and_k_zero_is_empty(kb):
    queries = kb.encode_text(["dense", "packed"])
    result = kb.search(queries, "attribute", k=3)
    assert result.indices.shape == (2, 3)
    assert np.all(result.indices[:, 1:] == -1) and np.all(np.isneginf(result.scores[:, 1:]))
    assert result.ids == [["attribute.dense"], ["attribute.dense"]]
    empty = kb.search(queries, "scene", k=0)
    assert empty.indices.shape == (2, 0) and empty.ids == [[], []]
    with pytest.raises(KnowledgeBaseError, match="unknown level 'planet'"):
        kb.search(queries, "planet", k=1)


def test_resolve_by_name_synonym_and_unknown(kb):
    assert kb.resolve("Parking") == "scene.parking_lot"
    assert kb.resolve("parking_lot") == "scene.parking_lot"
    assert kb.resolve("Car-Park") == "scene.parking_lot"
    assert kb.resolve("ships") == "object.ship"
    with pytest.raises(KnowledgeBaseError, match=r"unknown label 'parkng lot'.*parking lot"):
        kb.resolve("parkng lot")
    with pytest.raises(KnowledgeBaseError):
        kb.resolve("harbor", level="object")


def test_incremental_add(kb):
    kb.add([Entry(id="object.boat", level="object", name="rowing boat",
                  description="a tiny hull with oars", parents=["object.ship"])])
    assert kb.level_ids("object")[-1] == "object.boat"
    assert kb.level_embeddings("object").shape[0] == 3
    assert kb.search_text(["a tiny hull with oars"], "object", 1)[0][0].entry.id == "object.boat"
    with pytest.raises(KnowledgeBaseError, match="duplicate id 'object.boat'"):
        kb.add([Entry(id="object.boat", level="object", name="x", description="y")])


def test_save_load_round_trip(kb, tmp_path):
    queries = kb.encode_text(["boats", "trees"])
    kb.save(tmp_path / "saved")
    loaded = KnowledgeBase.load(tmp_path / "saved", cache_dir=tmp_path / "cache")
    assert loaded.encoder_name == kb.encoder_name
    assert [e.id for e in loaded.entries] == [e.id for e in kb.entries]
    for level in ("scene", "object"):
        assert loaded.level_ids(level) == kb.level_ids(level)
        np.testing.assert_array_equal(loaded.level_embeddings(level), kb.level_embeddings(level))
        np.testing.assert_array_equal(loaded.search(queries, level, 2).indices,
                                      kb.search(queries, level, 2).indices)
    with pytest.raises(KnowledgeBaseError, match="saved with encoder 'hashing-64-n3'"):
        KnowledgeBase.load(tmp_path / "saved", encoder=HashingEncoder(32))


def test_embedding_cache_hit_skips_encoding(write_jsonl, tmp_path):
    path, cache = write_jsonl(ROWS), tmp_path / "cache"
    first = HashingEncoder(64)
    KnowledgeBase.load(path, encoder=first, cache_dir=cache)
    assert first.calls > 0 and list(cache.glob("*.npy")) and list(cache.glob("*.json"))
    second = HashingEncoder(64)
    kb = KnowledgeBase.load(path, encoder=second, cache_dir=cache)
    assert second.calls == 0
    other_texts = write_jsonl([*ROWS[:-1], entry("attribute.dense", "attribute", "dense", "new")],
                              "changed.jsonl")
    KnowledgeBase.load(other_texts, encoder=second, cache_dir=cache)
    assert second.calls > 0
    assert kb.stats().n_entries == len(ROWS)


def test_extra_user_files_and_approximate_index(write_jsonl, tmp_path, hashing):
    extra = write_jsonl([entry("object.tank", "object", "storage tank", "white discs",
                               related=["scene.harbor"])], "extra.jsonl")
    kb = KnowledgeBase.load(write_jsonl(ROWS), encoder=hashing, cache_dir=tmp_path,
                            extra=[extra], index_config=IndexConfig(kind="hnsw"))
    assert "object.tank" in kb.level_ids("object")
    assert kb.stats().index_kinds["object"] == "IndexHNSWFlat"
    assert kb.get("object.tank").related == ["scene.harbor"]
    with pytest.raises(KnowledgeBaseError, match="unknown entry id 'object.nope'"):
        kb.get("object.nope")
