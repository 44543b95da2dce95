"""FAISS inner-product indexes over unit vectors: exact for small bases, IVF or HNSW for large,
IVF-PQ (product-quantized codes, ~1/32 of the float32 bytes at D=384, M=48) for bases too big to
hold as float32 vectors.

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

INDEX_KINDS: tuple[str, ...] = ("auto", "flat", "ivf", "hnsw", "ivfpq")
MAX_AUTO_NLIST = 16_384  # 4 * sqrt(N) lists, capped: k-means and list assignment cost grow with it
PQ_MIN_POINTS_PER_CODE = 39  # below ~39 training rows per PQ centroid FAISS warns and codes degrade
ADD_CHUNK = 65_536  # rows per FAISS add for IVF kinds: bounds the residual temporaries


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
    seed: int = 0  # IVF k-means seed and training-sample seed
    pq_m: int = 0  # IVF-PQ sub-quantizers, must divide the dim; 0 = largest divisor <= dim / 8
    pq_bits: int = 8  # bits per sub-quantizer code (2**pq_bits centroids each)
    train_size: int = 0  # rows sampled to train IVF / IVF-PQ; 0 = see `train_rows`
    refine_factor: int = 0  # IVF-PQ: >0 keeps float32 vectors and re-ranks factor*k candidates

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise KnowledgeBaseError(f"IndexConfig.kind={self.kind!r} not in {INDEX_KINDS}")
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise KnowledgeBaseError(f"IndexConfig.{name}={getattr(self, name)} must be >= 1")
        for name in ("nlist", "auto_threshold", "pq_m", "train_size", "refine_factor"):
            if getattr(self, name) < 0:
                raise KnowledgeBaseError(f"IndexConfig.{name}={getattr(self, name)} must be >= 0")
        if not 1 <= self.pq_bits <= 16:
            raise KnowledgeBaseError(f"IndexConfig.pq_bits={self.pq_bits} must be in 1..16")

    def resolved_kind(self, n: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if n < self.auto_threshold else "hnsw"

    def resolved_nlist(self, n: int) -> int:
        """`nlist`, or ~4 * sqrt(n) capped at MAX_AUTO_NLIST; at most n / 39 so k-means trains."""
        nlist = self.nlist or min(int(4 * math.sqrt(max(n, 1))), MAX_AUTO_NLIST)
        return max(1, min(nlist, n // 39 if n >= 39 else 1))

    def resolved_pq_m(self, dim: int) -> int:
        """`pq_m` checked against `dim`, or the largest divisor of dim <= dim / 8 (48 for 384)."""
        if self.pq_m == 0:
            return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)
        if dim % self.pq_m:
            raise KnowledgeBaseError(f"IndexConfig.pq_m={self.pq_m} must divide the dim {dim}")
        return self.pq_m

    def train_rows(self, n: int) -> int:
        """Rows to train on: `train_size` (at most n); by default all rows for IVF (FAISS itself
        samples 256 per list) and, for IVF-PQ, 64 per list but >= 2**16 for the PQ codebooks:
        training cost, not data, is the limit at millions of rows."""
        if self.train_size:
            return min(self.train_size, n)
        if self.resolved_kind(n) != "ivfpq":
            return n
        return min(n, max(64 * self.resolved_nlist(n), 2**16))


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
    if kind == "ivfpq":
        pq_m = config.resolved_pq_m(dim)  # checked even when falling back: a bad config is a bug
        if n < PQ_MIN_POINTS_PER_CODE * 2**config.pq_bits:
            kind = "flat"  # too few rows to train PQ codebooks; exact search is cheap here anyway
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        return index
    nlist = config.resolved_nlist(n)
    if kind == "ivf":
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_m, config.pq_bits,
                             faiss.METRIC_INNER_PRODUCT)
    index.pq.cp.seed = config.seed
    if config.refine_factor:  # exact re-ranking needs the float32 rows too: only if they fit
        return faiss.IndexRefineFlat(index)
    return index


def _ivf_part(index: Any) -> Any:
    """The IVF index itself (inside an IndexRefineFlat wrapper), or None for flat / HNSW."""
    if hasattr(index, "k_factor"):
        import faiss

        index = faiss.downcast_index(index.base_index)
    return index if hasattr(index, "nprobe") else None


def _sample_rows(vectors: np.ndarray, m: int, seed: int) -> np.ndarray:
    if m >= vectors.shape[0]:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(vectors.shape[0], m, replace=False))
    return vectors[rows]  # (m, D)


def _train(index: Any, sample: np.ndarray, config: IndexConfig) -> None:
    """Seeded k-means (and PQ codebooks): builds are repeatable."""
    ivf = _ivf_part(index)
    need = max(ivf.nlist, 2 ** ivf.pq.nbits if hasattr(ivf, "pq") else 1)
    if sample.shape[0] < need:  # FAISS would abort k-means with fewer points than centroids
        raise KnowledgeBaseError(f"IndexConfig.train_size: {sample.shape[0]} training rows < "
                                 f"{need} (nlist={ivf.nlist} lists, 2**pq_bits PQ centroids)")
    ivf.cp.seed = config.seed
    index.train(sample)


class VectorIndex:
    """One FAISS index over unit vectors (rows are numbered in insertion order)."""

    def __init__(self, index: Any, config: IndexConfig) -> None:
        self.index, self.config = index, config
        self._apply_search_params()

    @classmethod
    def build(cls, vectors: np.ndarray, config: IndexConfig | None = None,
              dim: int | None = None) -> VectorIndex:
        """Build (train IVF kinds on `config.train_rows` sampled rows) and fill with `vectors`."""
        config = config or IndexConfig()
        dim = dim if dim is not None else int(vectors.shape[1])
        vectors = _as_matrix(vectors, dim, "VectorIndex.build")
        n = vectors.shape[0]
        index = cls.trained(_sample_rows(vectors, config.train_rows(n), config.seed), config, n)
        index.add(vectors)
        return index

    @classmethod
    def trained(cls, sample: np.ndarray, config: IndexConfig | None = None,
                n: int | None = None) -> VectorIndex:
        """An empty index for about `n` rows (default len(sample)), trained on `sample` (S, D).

        Streamed builds use this: train on a sample, then `add` chunk by chunk, so the full
        (N, D) float32 matrix never has to exist (10M x 384 floats is 15 GB)."""
        config = config or IndexConfig()
        if sample.ndim != 2:
            raise KnowledgeBaseError(f"VectorIndex.trained: sample must be (S, D), got "
                                     f"shape {tuple(sample.shape)}")
        sample = _as_matrix(sample, sample.shape[1], "VectorIndex.trained sample")
        n = sample.shape[0] if n is None else n
        faiss_index = _build_faiss(sample.shape[1], n, config)
        if not faiss_index.is_trained:
            _train(faiss_index, sample, config)
        return cls(faiss_index, config)

    def _apply_search_params(self) -> None:
        if hasattr(self.index, "k_factor") and self.config.refine_factor:
            self.index.k_factor = float(self.config.refine_factor)
        ivf = _ivf_part(self.index)
        if ivf is not None:
            ivf.nprobe = min(self.config.nprobe, ivf.nlist)
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
        # IVF adds compute (rows, D) residuals; chunks bound that copy. HNSW/flat add in one go.
        step = ADD_CHUNK if _ivf_part(self.index) is not None else max(1, vectors.shape[0])
        for start in range(0, vectors.shape[0], step):
            self.index.add(vectors[start : start + step])

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
