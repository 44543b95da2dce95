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
