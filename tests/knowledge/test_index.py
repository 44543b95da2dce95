import numpy as np
import pytest

from geostrata.errors import KnowledgeBaseError
from geostrata.knowledge.index import IndexConfig, VectorIndex, numpy_search


def unit_vectors(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(n, d, seed, centres=20):
    """Unit vectors around a few centres: the structure real embeddings have."""
    rng = np.random.default_rng(seed)
    c = unit_vectors(centres, d, seed + 1)
    x = c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall(approx, exact):
    hits = [len(set(a) & set(e)) for a, e in zip(approx.indices, exact.indices, strict=True)]
    return sum(hits) / exact.indices.size


def test_faiss_flat_equals_numpy_exact():
    db, q = unit_vectors(300, 24, 0), unit_vectors(7, 24, 1)
    faiss_top = VectorIndex.build(db, IndexConfig(kind="flat")).search(q, 10)
    numpy_top = numpy_search(db, q, 10)
    np.testing.assert_array_equal(faiss_top.indices, numpy_top.indices)
    np.testing.assert_allclose(faiss_top.scores, numpy_top.scores, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(faiss_top.scores, axis=1) <= 1e-6), "not sorted best first"


@pytest.mark.parametrize("config", [IndexConfig(kind="ivf", nlist=16, nprobe=8),
                                    IndexConfig(kind="hnsw", hnsw_m=16, ef_search=64)])
def test_approximate_indexes_recall(config):
    db, q = clustered(3000, 32, 2), clustered(50, 32, 3)
    approx = VectorIndex.build(db, config).search(q, 10)
    assert recall(approx, numpy_search(db, q, 10)) >= 0.9


def test_ivf_with_one_probe_is_worse_than_with_all():
    db, q = unit_vectors(2000, 32, 4), unit_vectors(40, 32, 5)
    exact = numpy_search(db, q, 10)
    index = VectorIndex.build(db, IndexConfig(kind="ivf", nlist=32, nprobe=1))
    low = recall(index.search(q, 10), exact)
    index.index.nprobe = 32
    assert recall(index.search(q, 10), exact) == pytest.approx(1.0)
    assert low < 0.9


def test_padding_when_k_exceeds_rows_and_k_zero():
    db = unit_vectors(3, 8, 6)
    top = VectorIndex.build(db).search(unit_vectors(2, 8, 7), 5)
    assert top.indices.shape == (2, 5) and top.indices.dtype == np.int64
    assert np.all(top.indices[:, 3:] == -1) and np.all(np.isneginf(top.scores[:, 3:]))
    assert sorted(top.indices[0, :3]) == [0, 1, 2]
    empty = VectorIndex.build(db).search(unit_vectors(2, 8, 7), 0)
    assert empty.indices.shape == (2, 0) and empty.scores.shape == (2, 0)
    np.testing.assert_array_equal(numpy_search(db, unit_vectors(2, 8, 7), 5).indices, top.indices)


def test_incremental_add_and_save_load(tmp_path):
    db = unit_vectors(50, 16, 8)
    index = VectorIndex.build(db[:30], IndexConfig(kind="hnsw"))
    index.add(db[30:])
    assert index.ntotal == 50
    assert index.search(db[42:43], 1).indices[0, 0] == 42
    index.save(tmp_path / "x.faiss")
    loaded = VectorIndex.load(tmp_path / "x.faiss", IndexConfig(kind="hnsw", ef_search=77))
    assert loaded.index.hnsw.efSearch == 77
    np.testing.assert_array_equal(loaded.search(db, 3).indices, index.search(db, 3).indices)


def test_bad_shapes_and_config_raise():
    index = VectorIndex.build(unit_vectors(5, 8, 9))
    with pytest.raises(KnowledgeBaseError, match=r"expected shape \(N, 8\), got \(1, 9\)"):
        index.search(np.zeros((1, 9), np.float32), 1)
    with pytest.raises(KnowledgeBaseError, match="kind='annoy'"):
        IndexConfig(kind="annoy")
    assert IndexConfig().resolved_kind(10) == "flat"
    assert IndexConfig().resolved_kind(10**6) == "hnsw"


def lowrank(n, d, seed, rank=8):
    """Unit vectors near a fixed rank-8 subspace (10% noise): the structure PQ codes exploit."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).standard_normal((rank, d))
    x = rng.standard_normal((n, rank)) @ basis / np.sqrt(rank) + 0.1 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def pq_data():
    db, q = lowrank(20_000, 64, 0), lowrank(100, 64, 1)
    return db, q, numpy_search(db, q, 10)


def test_ivfpq_recall_floor_probe_and_refine(pq_data):
    # 8 bytes per 64-dim vector: PQ alone ranks coarsely (~0.5 measured); re-ranking with the
    # float32 rows recovers most of the exact top-10 (~0.95 measured with factor 10).
    db, q, exact = pq_data
    index = VectorIndex.build(db, IndexConfig(kind="ivfpq", nlist=64, pq_m=8, nprobe=16))
    assert index.kind == "IndexIVFPQ" and index.ntotal == 20_000
    probed = recall(index.search(q, 10), exact)
    assert probed >= 0.4
    index.index.nprobe = 1
    assert recall(index.search(q, 10), exact) < probed - 0.05
    refined = VectorIndex.build(db, IndexConfig(kind="ivfpq", nlist=64, pq_m=8, nprobe=16,
                                                refine_factor=10))
    assert refined.kind == "IndexRefineFlat"
    assert recall(refined.search(q, 10), exact) >= max(0.85, probed + 0.2)


def test_ivfpq_streamed_build_equals_one_shot_and_save_load(pq_data, tmp_path):
    db, q, _ = pq_data
    config = IndexConfig(kind="ivfpq", nlist=32, pq_m=8, nprobe=8, train_size=16_384, seed=3)
    whole = VectorIndex.build(db, config)
    sample = db[np.sort(np.random.default_rng(3).choice(len(db), 16_384, replace=False))]
    streamed = VectorIndex.trained(sample, config, n=len(db))
    for start in range(0, len(db), 7_000):  # chunks of a stream: never all rows at once
        streamed.add(db[start : start + 7_000])
    assert streamed.ntotal == whole.ntotal == 20_000
    np.testing.assert_array_equal(streamed.search(q, 10).indices, whole.search(q, 10).indices)
    assert whole.nbytes() < db.nbytes / 4  # codes, not float32 rows
    whole.save(tmp_path / "pq.faiss")
    loaded = VectorIndex.load(tmp_path / "pq.faiss", IndexConfig(kind="ivfpq", nprobe=8))
    assert loaded.index.nprobe == 8 and loaded.kind == "IndexIVFPQ"
    np.testing.assert_array_equal(loaded.search(q, 10).indices, whole.search(q, 10).indices)
    np.testing.assert_allclose(loaded.search(q, 10).scores, whole.search(q, 10).scores)


def test_ivfpq_refine_save_load_applies_search_params(pq_data, tmp_path):
    db, q, _ = pq_data
    config = IndexConfig(kind="ivfpq", nlist=16, pq_m=8, nprobe=4, refine_factor=3)
    index = VectorIndex.build(db[:17_000], config)
    index.save(tmp_path / "r.faiss")
    loaded = VectorIndex.load(tmp_path / "r.faiss", IndexConfig(kind="ivfpq", nprobe=2,
                                                                refine_factor=5))
    assert loaded.index.k_factor == 5.0
    assert faiss_base(loaded).nprobe == 2
    loaded = VectorIndex.load(tmp_path / "r.faiss", config)
    np.testing.assert_array_equal(loaded.search(q, 5).indices, index.search(q, 5).indices)


def faiss_base(index):
    import faiss

    return faiss.downcast_index(index.index.base_index)


def test_ivfpq_bad_config_and_small_sets():
    with pytest.raises(KnowledgeBaseError, match=r"pq_m=10 must divide the dim 64"):
        VectorIndex.build(lowrank(12_000, 64, 2), IndexConfig(kind="ivfpq", pq_m=10))
    with pytest.raises(KnowledgeBaseError, match=r"pq_m=10 must divide"):  # even when tiny
        VectorIndex.build(lowrank(50, 64, 2), IndexConfig(kind="ivfpq", pq_m=10))
    with pytest.raises(KnowledgeBaseError, match=r"pq_bits=0"):
        IndexConfig(kind="ivfpq", pq_bits=0)
    with pytest.raises(KnowledgeBaseError, match=r"train_size=-1"):
        IndexConfig(kind="ivfpq", train_size=-1)
    with pytest.raises(KnowledgeBaseError, match=r"train_size: 100 training rows < 256"):
        VectorIndex.trained(lowrank(100, 64, 3), IndexConfig(kind="ivfpq", nlist=2), n=10**6)
    small = VectorIndex.build(lowrank(500, 64, 4), IndexConfig(kind="ivfpq"))
    assert small.kind == "IndexFlatIP"  # too few rows for PQ codebooks: exact search
    assert IndexConfig().resolved_pq_m(384) == 48 and IndexConfig().resolved_pq_m(64) == 8
    assert IndexConfig(kind="ivfpq").resolved_nlist(10**8) == 16_384
