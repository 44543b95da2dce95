"""Knowledge-base search benchmark: exact vs IVF vs HNSW on random unit vectors.

For each size N (default 1k and 100k; `--large` adds 1M) and D=384 (MiniLM's width):
build each index kind, tune IVF nprobe / HNSW efSearch to the smallest value reaching the target
recall@10 against exact search, then time one-query and 64-query batches (p50/p99) and measure
memory (serialized index bytes and the process RSS growth while building). Random unit vectors
have no cluster structure, so they are the hardest case for approximate indexes: real
embeddings reach the same recall with cheaper settings.

    .venv/bin/python bench/bench_kb.py [--large] [--threads 1] [--kinds flat,ivf,hnsw]

Prints a table and writes bench/results/kb.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from geostrata.knowledge.index import IndexConfig, TopK, VectorIndex

DIM, K, N_QUERIES, BATCH = 384, 10, 200, 64
NPROBE_GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
EF_GRID = (16, 32, 64, 128, 256, 512, 1024, 2048)
LOWRANK_DIM = 24  # intrinsic dimension of the "lowrank" data


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def unit_vectors(n: int, seed: int, data: str) -> np.ndarray:
    """`random`: uniform on the sphere (no structure: the worst case for ANN indexes).
    `lowrank`: a random 24-dim subspace of R^384 plus 10% isotropic noise, closer to text
    embeddings, whose variance sits in few directions. The subspace is fixed (seed 12345) so
    queries and base share it."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(12345).standard_normal((LOWRANK_DIM, DIM)) / np.sqrt(DIM)
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):  # chunks keep the float64 temporaries small
        m = min(100_000, n - start)
        x = rng.standard_normal((m, DIM))
        if data == "lowrank":
            signal = rng.standard_normal((m, LOWRANK_DIM)) @ basis  # (m, DIM), norm ~ 1
            x = signal * np.sqrt(DIM / LOWRANK_DIM) + 0.1 * x  # noise ~ 10% of the norm
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def recall_at_k(approx: TopK, exact: TopK) -> float:
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx.indices, exact.indices, strict=True))
    return hits / exact.indices.size


def latency_ms(index: VectorIndex, queries: np.ndarray, batch: int, repeats: int) -> dict:
    """p50/p99 milliseconds per call of `search` with `batch` queries."""
    times = []
    for i in range(repeats):
        start = (i * batch) % max(1, len(queries) - batch + 1)
        chunk = queries[start : start + batch]
        t0 = time.perf_counter()
        index.search(chunk, K)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}


def tune(index: VectorIndex, kind: str, queries: np.ndarray, exact: TopK, target: float) -> dict:
    """Smallest nprobe / efSearch reaching `target` recall@10 (or the largest tried)."""
    grid = NPROBE_GRID if kind == "ivf" else EF_GRID
    if kind == "ivf":  # nprobe = nlist is exhaustive; nothing to gain beyond it
        grid = tuple(v for v in grid if v < index.index.nlist) + (index.index.nlist,)
    sweep: dict[int, float] = {}
    for value in grid:
        if kind == "ivf":
            index.index.nprobe = value
        else:
            index.index.hnsw.efSearch = value
        sweep[value] = recall_at_k(index.search(queries, K), exact)
        if sweep[value] >= target:
            break
    return {"param": "nprobe" if kind == "ivf" else "efSearch", "value": value,
            "recall@10": sweep[value], "sweep": sweep}


def bench_kind(kind: str, base: np.ndarray, queries: np.ndarray, exact: TopK | None,
               target: float, nlist: int) -> tuple[dict, TopK | None]:
    rss0, t0 = rss_bytes(), time.perf_counter()
    index = VectorIndex.build(base, IndexConfig(kind=kind, nlist=nlist))
    row = {"kind": kind, "index": index.kind, "build_s": time.perf_counter() - t0,
           "rss_delta_bytes": rss_bytes() - rss0, "index_bytes": index.nbytes()}
    if kind == "flat":
        exact = index.search(queries, K)
        row["recall@10"] = 1.0
    else:
        row["tuning"] = tune(index, kind, queries, exact, target)
        row["recall@10"] = row["tuning"]["recall@10"]
    row["latency_ms_batch1"] = latency_ms(index, queries, 1, len(queries))
    row["latency_ms_batch64"] = latency_ms(index, queries, BATCH, 10 if len(base) > 200_000 else 30)
    del index
    return row, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--large", action="store_true", help="also run N=1M (minutes)")
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--kinds", default="flat,ivf,hnsw", help="flat must come first")
    parser.add_argument("--large-kinds", default="flat,ivf,hnsw", help="kinds for N=1M")
    parser.add_argument("--data", default="random,lowrank", help="random and/or lowrank")
    parser.add_argument("--append", action="store_true",
                        help="keep rows of --out for other (data, n, kind) combinations")
    parser.add_argument("--large-nlist", type=int, default=1024,
                        help="IVF lists at N=1M (4*sqrt(N) lists take too long to train here)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--target", type=float, default=0.95, help="recall@10 to tune for")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "kb.json"))
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s] + ([1_000_000] if args.large else [])
    rows = []
    for data in args.data.split(","):
        queries = unit_vectors(N_QUERIES, seed=1, data=data)
        for n in sizes:
            base = unit_vectors(n, seed=0, data=data)
            kinds = (args.large_kinds if n >= 1_000_000 else args.kinds).split(",")
            exact = None
            for kind in kinds:
                nlist = args.large_nlist if n >= 1_000_000 else 0
                row, exact = bench_kind(kind, base, queries, exact, args.target, nlist)
                rows.append({"data": data, "n": n, "dim": DIM, **row})
                print_row(rows[-1])
            del base
    out = Path(args.out)
    if args.append and out.is_file():
        done = {(r["data"], r["n"], r["kind"]) for r in rows}
        rows = [r for r in json.loads(out.read_text())["rows"]
                if (r["data"], r["n"], r["kind"]) not in done] + rows
    meta = {"threads": args.threads, "k": K, "n_queries": N_QUERIES, "batch": BATCH,
            "target_recall": args.target, "machine": platform.processor() or platform.machine(),
            "faiss": faiss.__version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


def print_row(row: dict) -> None:
    tuning = row.get("tuning")
    param = f"{tuning['param']}={tuning['value']}" if tuning else "-"
    b1, b64 = row["latency_ms_batch1"], row["latency_ms_batch64"]
    print(f"{row['data']:>7} N={row['n']:>8} {row['kind']:>5} {param:>13} "
          f"recall@10={row['recall@10']:.3f} "
          f"b1 p50={b1['p50']:.3f}ms p99={b1['p99']:.3f}ms  b64 p50={b64['p50']:.2f}ms "
          f"p99={b64['p99']:.2f}ms  index={row['index_bytes'] / 2**20:.1f}MiB "
          f"rss+={row['rss_delta_bytes'] / 2**20:.1f}MiB build={row['build_s']:.1f}s", flush=True)


if __name__ == "__main__":
    main()
