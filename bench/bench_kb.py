"""Knowledge-base search benchmark: exact vs IVF vs HNSW on random unit vectors.

For each size N (default 1k and 100k; `--large` adds 1M) and D=384 (MiniLM's width):
build each index kind, tune IVF nprobe / HNSW efSearch to the smallest value reaching the target
recall@10 against exact search, then time one-query and 64-query batches (p50/p99) and measure
memory (serialized index bytes and the process RSS growth while building). Random unit vectors
have no cluster structure, so they are the hardest case for approximate indexes: real
embeddings reach the same recall with cheaper settings.

    .venv/bin/python bench/bench_kb.py [--large] [--threads 1] [--kinds flat,ivf,hnsw]

Prints a table and writes bench/results/kb.json.

`--scale N` runs only the at-scale case: IVF-PQ over N rows streamed 100k at a time (never all
N x 384 floats), exact top-10 of held-out queries kept by a streamed scan, build time, peak RSS,
latency and recall per nprobe; merged under "scale" in the JSON (`--docs FILE` adds the row to
the table in docs/knowledge.md). `--budget-s` stops adding rows in time; the row says how many
it reached. 10M on 2 threads:

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 .venv/bin/python bench/bench_kb.py \
        --scale 10000000 --threads 2 --docs docs/knowledge.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
from rich.progress import Progress, TextColumn

from geostrata.knowledge.index import IndexConfig, TopK, VectorIndex

DIM, K, N_QUERIES, BATCH = 384, 10, 200, 64
NPROBE_GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
EF_GRID = (16, 32, 64, 128, 256, 512, 1024, 2048)
LOWRANK_DIM = 24  # intrinsic dimension of the "lowrank" data
T = TypeVar("T")


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
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):  # chunks keep the float64 temporaries small
        out[start : start + min(100_000, n - start)] = _rows(rng, min(100_000, n - start), data)
    return out


def _rows(rng: np.random.Generator, m: int, data: str,
          dtype: type[np.floating] = np.float64) -> np.ndarray:
    """(m, DIM) float32 unit rows; float32 draws (the --scale stream) are ~5x faster."""
    basis = np.random.default_rng(12345).standard_normal((LOWRANK_DIM, DIM)) / np.sqrt(DIM)
    x = rng.standard_normal((m, DIM), dtype=dtype)
    if data == "lowrank":  # in place: the stream makes 10M of these rows
        signal = rng.standard_normal((m, LOWRANK_DIM), dtype=dtype) @ basis.astype(dtype)
        x *= 0.1  # noise ~ 10% of the norm
        x += signal * np.sqrt(DIM / LOWRANK_DIM)  # (m, DIM), signal norm ~ 1
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32, copy=False)  # (m, DIM)


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

# ---- --scale N: one IVF-PQ index over N streamed rows ------------------------------------------

SCALE_CHUNK = 100_000  # rows generated, added and scanned at a time (150 MiB float32)
SCALE_NPROBES = (4, 16, 64, 256)
DOCS_MARKER = "<!-- scale-rows: bench_kb.py --scale --docs adds rows above this line -->"


def stream_chunks(n: int, seed: int, data: str) -> Iterator[tuple[int, np.ndarray]]:
    """(start, rows) chunks of N i.i.d. unit vectors; chunk i has its own seed, so a stream is
    repeatable and the full (N, D) matrix never exists."""
    for i, start in enumerate(range(0, n, SCALE_CHUNK)):
        rng = np.random.default_rng([seed, i])
        yield start, _rows(rng, min(SCALE_CHUNK, n - start), data, np.float32)


class StreamedExact:
    """Exact top-k of fixed queries over rows seen chunk by chunk (merge of per-chunk top-k)."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries, self.k = queries, k
        self.scores = np.full((len(queries), k), -np.inf, np.float32)  # (B, k)
        self.indices = np.full((len(queries), k), -1, np.int64)  # (B, k)

    def update(self, rows: np.ndarray, start: int) -> None:
        import faiss

        scores, idx = faiss.knn(self.queries, rows, min(self.k, len(rows)),
                                metric=faiss.METRIC_INNER_PRODUCT)  # (B, k) each
        both_s = np.concatenate([self.scores, scores], axis=1)  # (B, 2k)
        both_i = np.concatenate([self.indices, idx + start], axis=1)  # (B, 2k)
        best = np.argsort(-both_s, axis=1, kind="stable")[:, : self.k]  # (B, k)
        self.scores = np.take_along_axis(both_s, best, axis=1)
        self.indices = np.take_along_axis(both_i, best, axis=1)

    def topk(self) -> TopK:
        return TopK(self.scores, self.indices)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def timed(items: Iterator[T], timing: dict, key: str) -> Iterator[T]:
    """Yield from `items`, adding the time spent producing each to timing[key]."""
    while True:
        t0 = time.perf_counter()
        item = next(items, None)
        timing[key] += time.perf_counter() - t0
        if item is None:
            return
        yield item


def train_on_stream_head(chunks: Iterator[tuple[int, np.ndarray]], config: IndexConfig,
                         n: int) -> tuple[VectorIndex, list[tuple[int, np.ndarray]]]:
    """Train on the first rows of the stream (i.i.d. rows, so a fair sample of the base);
    returns the index and the held chunks, still to be added."""
    held: list[tuple[int, np.ndarray]] = []
    while sum(len(rows) for _, rows in held) < config.train_rows(n):
        held.append(next(chunks))
    sample = np.concatenate([rows for _, rows in held])[: config.train_rows(n)]  # (S, D)
    return VectorIndex.trained(sample, config, n), held


def stream_build(args: argparse.Namespace, config: IndexConfig,
                 exact: StreamedExact) -> tuple[VectorIndex, dict]:
    """Train, then add and scan exactly chunk by chunk until N rows, the time budget
    (`--budget-s`, checked before each chunk) or the RSS cap (`--max-rss-gib`) is reached."""
    n, t_start = args.scale, time.perf_counter()
    timing = {"gen_s": 0.0, "train_s": 0.0, "add_s": 0.0, "exact_s": 0.0}
    chunks = timed(stream_chunks(n, seed=0, data=args.scale_data), timing, "gen_s")
    t0 = time.perf_counter()
    index, held = train_on_stream_head(chunks, config, n)
    timing["train_s"] = time.perf_counter() - t0 - timing["gen_s"]
    stopped, last_chunk_s, t_mark = "", 0.0, time.perf_counter()
    with Progress(*Progress.get_default_columns(), TextColumn("{task.fields[note]}")) as bar:
        task = bar.add_task(f"ivfpq {args.scale_data}", total=n, note="")
        for start, rows in itertools.chain(held, chunks):
            held = []  # the training rows are dropped once added
            t0 = time.perf_counter()
            index.add(rows)
            t1 = time.perf_counter()
            exact.update(rows, start)
            timing["add_s"] += t1 - t0
            timing["exact_s"] += time.perf_counter() - t1
            bar.update(task, advance=len(rows), note=f"RSS {rss_bytes() / 2**30:.1f} GiB")
            now = time.perf_counter()  # a chunk's wall time: generate + add + exact scan
            last_chunk_s, t_mark = max(last_chunk_s, now - t_mark), now
            if index.ntotal < n and now - t_start + 1.5 * last_chunk_s > args.budget_s:
                stopped = f"time budget {args.budget_s:.0f}s"
                break
            if rss_bytes() > args.max_rss_gib * 2**30:
                stopped = f"RSS cap {args.max_rss_gib} GiB"
                break
    timing["build_s"] = timing["train_s"] + timing["add_s"]
    return index, {**timing, "stream_s": time.perf_counter() - t_start, "stopped": stopped}


def probe_sweep(index: VectorIndex, queries: np.ndarray, exact: TopK, nprobes: list[int],
                b64_repeats: int) -> list[dict]:
    """Recall@10 and one-query latency from the same per-query calls, then 64-query batches."""
    ivf = index.index
    out = []
    for nprobe in nprobes:
        ivf.nprobe = nprobe
        times, found = [], []
        for q in range(len(queries)):
            t0 = time.perf_counter()
            found.append(index.search(queries[q : q + 1], K).indices[0])
            times.append((time.perf_counter() - t0) * 1e3)
        approx = TopK(np.zeros((len(found), K), np.float32), np.stack(found))
        out.append({"nprobe": nprobe, "recall@10": recall_at_k(approx, exact),
                    "latency_ms_batch1": {"p50": float(np.percentile(times, 50)),
                                          "p99": float(np.percentile(times, 99))},
                    "latency_ms_batch64": latency_ms(index, queries, BATCH, b64_repeats)})
    ivf.nprobe = index.config.nprobe
    return out


def run_scale(args: argparse.Namespace) -> dict:
    """Build IVF-PQ over `--scale` streamed rows and measure build, memory, latency, recall."""
    n = args.scale
    nlist = args.scale_nlist or min(int(4 * math.sqrt(n)), args.max_nlist)
    config = IndexConfig(kind="ivfpq", nlist=nlist, pq_m=args.pq_m, nprobe=args.scale_nprobe,
                         train_size=args.train_size, seed=0)
    queries = unit_vectors(N_QUERIES, seed=1, data=args.scale_data)  # held out: other seed
    exact = StreamedExact(queries, K)
    index, timing = stream_build(args, config, exact)
    if index.kind != "IndexIVFPQ":
        raise SystemExit(f"--scale {n}: built {index.kind}, too few rows for IVF-PQ")
    peak = peak_rss_bytes()  # before nbytes(): serializing copies the codes
    nlist = int(index.index.nlist)  # IndexConfig keeps >= 39 rows per list
    headline = min(args.scale_nprobe, nlist)
    nprobes = sorted({p for p in SCALE_NPROBES if p < nlist} | {headline})
    sweep = probe_sweep(index, queries, exact.topk(), nprobes, args.b64_repeats)
    head = next(r for r in sweep if r["nprobe"] == headline)
    index.index.nprobe = headline  # true top-10 among 100 PQ candidates: what re-ranking reaches
    in_100 = recall_at_k(index.search(queries, 100), exact.topk())
    index_bytes = index.nbytes()
    return {"data": args.scale_data, "n_target": n, "n": index.ntotal, "dim": DIM,
            "kind": "ivfpq", "index": index.kind, "nlist": int(index.index.nlist),
            "pq_m": int(index.index.pq.M),
            "pq_bits": config.pq_bits, "train_rows": config.train_rows(n), **timing,
            "index_bytes": index_bytes, "bytes_per_vector": index_bytes / index.ntotal,
            "peak_rss_bytes": peak, "threads": args.threads, "n_queries": N_QUERIES, "k": K,
            "nprobe": head["nprobe"], "recall@10": head["recall@10"], "recall_10_in_100": in_100,
            "latency_ms_batch1": head["latency_ms_batch1"],
            "latency_ms_batch64": head["latency_ms_batch64"], "sweep": sweep,
            "machine": platform.processor() or platform.machine()}


def save_scale(row: dict, out: Path) -> None:
    """Merge `row` into out["scale"], replacing the row of the same data and target N."""
    doc = json.loads(out.read_text()) if out.is_file() else {}
    key = (row["data"], row["n_target"])
    rows = [r for r in doc.get("scale", []) if (r["data"], r["n_target"]) != key]
    doc["scale"] = sorted(rows + [row], key=lambda r: (r["data"], r["n_target"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))


def scale_md_row(row: dict) -> str:
    reached = f"{row['n']:,}"
    if row["stopped"]:
        reached += f" (of {row['n_target']:,}: {row['stopped']})"
    b1, b64 = row["latency_ms_batch1"], row["latency_ms_batch64"]
    return (f"| {row['data']} | {reached} | IVF{row['nlist']},PQ{row['pq_m']}x{row['pq_bits']} | "
            f"{row['threads']} | {row['nprobe']} | {row['recall@10']:.3f} | "
            f"{b1['p50']:.2f} / {b1['p99']:.2f} | {b64['p50']:.0f} / {b64['p99']:.0f} | "
            f"{row['train_s']:.0f} + {row['add_s']:.0f} | {row['index_bytes'] / 2**20:.0f} | "
            f"{row['peak_rss_bytes'] / 2**30:.2f} |")


def update_docs(path: Path, row: dict) -> None:
    """Put the row above DOCS_MARKER in `path`, replacing one for the same data and target N."""
    lines = path.read_text().splitlines()
    if DOCS_MARKER not in lines:
        raise SystemExit(f"{path}: no line {DOCS_MARKER!r} to add the scale row above")
    target = f"{row['n_target']:,}"

    def same(line: str) -> bool:  # "| data | N |" or "| data | n (of N: why) |"
        cells = [c.strip() for c in line.split("|")]
        return len(cells) > 3 and cells[1] == row["data"] and (
            cells[2] == target or f"(of {target}:" in cells[2])

    lines = [x for x in lines if not same(x)]
    at = lines.index(DOCS_MARKER)
    while at > 0 and not lines[at - 1].startswith("|"):
        at -= 1  # rows go right under the table, before any blank line
    lines.insert(at, scale_md_row(row))
    path.write_text("\n".join(lines) + "\n")


def print_scale(row: dict) -> None:
    print("| nprobe | recall@10 | 1 query p50/p99 ms | batch 64 p50/p99 ms |")
    for r in row["sweep"]:
        b1, b64 = r["latency_ms_batch1"], r["latency_ms_batch64"]
        print(f"| {r['nprobe']} | {r['recall@10']:.3f} | {b1['p50']:.2f} / {b1['p99']:.2f} | "
              f"{b64['p50']:.1f} / {b64['p99']:.1f} |")
    print(f"rows {row['n']:,}/{row['n_target']:,} {row['stopped'] or 'complete'}; "
          f"gen {row['gen_s']:.0f}s train {row['train_s']:.0f}s add {row['add_s']:.0f}s "
          f"exact scan {row['exact_s']:.0f}s; index {row['index_bytes'] / 2**20:.0f} MiB "
          f"({row['bytes_per_vector']:.1f} B/vector); "
          f"peak RSS {row['peak_rss_bytes'] / 2**30:.2f} GiB; "
          f"true top-10 in the top-100 at nprobe {row['nprobe']}: {row['recall_10_in_100']:.3f}")
    print(scale_md_row(row))

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
    add_scale_args(parser)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    if args.scale:
        row = run_scale(args)
        print_scale(row)
        save_scale(row, Path(args.out))
        if args.docs:
            update_docs(Path(args.docs), row)
        print(f"merged into {args.out} under 'scale'; docs row: {args.docs or 'not asked'}")
        return
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
    kept = json.loads(out.read_text()) if out.is_file() else {}  # keeps the "scale" rows
    out.write_text(json.dumps({**kept, "meta": meta, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


def add_scale_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--scale N: IVF-PQ over N streamed rows (only that runs)")
    group.add_argument("--scale", type=int, default=0, help="rows, e.g. 10000000")
    group.add_argument("--scale-data", default="lowrank", choices=("lowrank", "random"))
    group.add_argument("--scale-nlist", type=int, default=0, help="0 = 4*sqrt(N), <= --max-nlist")
    group.add_argument("--max-nlist", type=int, default=4096,
                       help="cap: list assignment costs nlist*D flops per added row")
    group.add_argument("--pq-m", type=int, default=48, help="sub-quantizers (divides 384)")
    group.add_argument("--scale-nprobe", type=int, default=64, help="nprobe of the headline row")
    group.add_argument("--train-size", type=int, default=0, help="0 = IndexConfig.train_rows")
    group.add_argument("--budget-s", type=float, default=660,
                       help="stop adding rows before this many seconds of train + add + scan")
    group.add_argument("--max-rss-gib", type=float, default=20.0, help="stop adding above this RSS")
    group.add_argument("--b64-repeats", type=int, default=5, help="64-query calls per nprobe")
    group.add_argument("--docs", default="", help="also add the row to this markdown file")


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
