"""FAISS inner-product indexes over unit vectors: exact for small bases, IVF or HNSW for large.

The knowledge base keeps one `VectorIndex` per level, so level filtering is free. Search pads
missing hits (k larger than the index) with index -1 and score -inf, and k=0 gives (B, 0) arrays.
`numpy_search` is an exact reference kept to cross-check FAISS in tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geostrata.errors import KnowledgeBaseError

INDEX_KINDS: tuple[str, ...] = ("auto", "flat", "ivf", "hnsw")


@dataclass
class IndexConfig:
    """Which FAISS index to build and how hard approximate ones search."""

    kind: str = "auto"  # auto: flat below `auto_threshold` rows, else hnsw
    auto_threshold: int = 20_000
    nlist: int = 0  # IVF lists; 0 = about 4 * sqrt(N)
    nprobe: int = 32  # IVF lists visited per query
    hnsw_m: int = 32  # HNSW neighbours per node
    ef_construction: int = 80
    ef_search: int = 128  # HNSW candidate list per query
    seed: int = 0  # IVF k-means seed

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise KnowledgeBaseError(f"IndexConfig.kind={self.kind!r} not in {INDEX_KINDS}")
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise KnowledgeBaseError(f"IndexConfig.{name}={getattr(self, name)} must be >= 1")
        if self.nlist < 0 or self.auto_threshold < 0:
            raise KnowledgeBaseError("IndexConfig.nlist and auto_threshold must be >= 0")

    def resolved_kind(self, n: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if n < self.auto_threshold else "hnsw"


@dataclass(frozen=True)
class TopK:
    """Batched top-k: best first; index -1 and score -inf where fewer than k rows exist."""

    scores: np.ndarray  # (B, k) float32
    indices: np.ndarray  # (B, k) int64


def _as_matrix(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise KnowledgeBaseError(f"{what}: expected shape (N, {dim}), got {tuple(x.shape)}")
    return x


def _empty_topk(b: int, k: int) -> TopK:
    return TopK(np.full((b, k), -np.inf, np.float32), np.full((b, k), -1, np.int64))


def numpy_search(database: np.ndarray, queries: np.ndarray, k: int) -> TopK:
    """Exact inner-product top-k with NumPy (reference for tests), same padding as FAISS."""
    b, n = queries.shape[0], database.shape[0]
    out = _empty_topk(b, k)
    kk = min(k, n)
    if kk == 0:
        return out
    scores = queries.astype(np.float32) @ database.astype(np.float32).T  # (B, N)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :kk]  # (B, kk)
    out.indices[:, :kk] = order
    out.scores[:, :kk] = np.take_along_axis(scores, order, axis=1)
    return out


def _build_faiss(dim: int, n: int, config: IndexConfig) -> Any:
    import faiss

    kind = config.resolved_kind(n)
    if kind == "ivf" and n < 39:
        kind = "flat"  # too few rows to train IVF centroids; exact search is cheap here anyway
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        return index
    # IVF needs ~39 training points per list; clamp so small sets still train.
    nlist = config.nlist or int(4 * math.sqrt(max(n, 1)))
    nlist = max(1, min(nlist, n // 39 if n >= 39 else 1))
    return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)


class VectorIndex:
    """One FAISS index over unit vectors (rows are numbered in insertion order)."""

    def __init__(self, index: Any, config: IndexConfig) -> None:
        self.index, self.config = index, config
        self._apply_search_params()

    @classmethod
    def build(cls, vectors: np.ndarray, config: IndexConfig | None = None,
              dim: int | None = None) -> VectorIndex:
        """Build (train if IVF) and fill an index with `vectors` (N, D)."""
        config = config or IndexConfig()
        dim = dim if dim is not None else int(vectors.shape[1])
        vectors = _as_matrix(vectors, dim, "VectorIndex.build")
        faiss_index = _build_faiss(dim, vectors.shape[0], config)
        if not faiss_index.is_trained:
            faiss_index.cp.seed = config.seed  # k-means init is seeded: builds are repeatable
            faiss_index.train(vectors)
        index = cls(faiss_index, config)
        index.add(vectors)
        return index

    def _apply_search_params(self) -> None:
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = min(self.config.nprobe, self.index.nlist)
        if hasattr(self.index, "hnsw"):
            self.index.hnsw.efSearch = self.config.ef_search

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        return type(self.index).__name__

    def add(self, vectors: np.ndarray) -> None:
        """Append rows; an IVF index keeps its trained centroids (retrain via `build`)."""
        vectors = _as_matrix(vectors, self.dim, "VectorIndex.add")
        if vectors.shape[0]:
            self.index.add(vectors)

    def search(self, queries: np.ndarray, k: int) -> TopK:
        """Top-k of `queries` (B, D); pads with -1 / -inf beyond the number of rows."""
        if k < 0:
            raise KnowledgeBaseError(f"search: k={k} must be >= 0")
        queries = _as_matrix(queries, self.dim, "search queries")
        out = _empty_topk(queries.shape[0], k)
        kk = min(k, self.ntotal)
        if kk == 0 or queries.shape[0] == 0:
            return out
        scores, indices = self.index.search(queries, kk)  # (B, kk) each
        missing = indices < 0  # approximate indexes may find fewer than kk
        scores[missing] = -np.inf
        out.scores[:, :kk], out.indices[:, :kk] = scores, indices
        return out

    def nbytes(self) -> int:
        """Serialized size: a fair memory figure for the index structures."""
        import faiss

        return int(faiss.serialize_index(self.index).size)

    def save(self, path: str | Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, config: IndexConfig | None = None) -> VectorIndex:
        import faiss

        if not Path(path).is_file():
            raise KnowledgeBaseError(f"{path}: no such index file")
        return cls(faiss.read_index(str(path)), config or IndexConfig())
