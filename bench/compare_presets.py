"""Tiny vs pretrained LLM, ImageNet vs aerial tower: the same demo budget, data and seed per preset.

Each preset runs `geostrata.demo.run_demo` (profile `smol` by default: 400 train / 100 test
synthetic images, 60 + 250 steps at batch 8) in its own process, so wall time and peak RSS
(`wait4` of that process) are its own. The benchmark is synthesized from the same seed in every
run; the script checks that the annotation files are byte-identical across runs.

    OMP_NUM_THREADS=1 python bench/compare_presets.py                      # all four
    python bench/compare_presets.py --presets tiny-effnet,tiny-geoembed    # a subset

Writes bench/results/presets.json (merged with earlier runs of other presets) and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# name -> overrides of the demo profile (dotted, as `geostrata demo --set`)
PRESETS: dict[str, list[str]] = {
    "tiny-effnet": ["preset=tiny-effnet"],
    "tiny-geoembed": ["preset=tiny-geoembed"],
    "smol": ["preset=smol"],
    "smol-geoembed": [  # the smol preset with the aerial tower at its own 128 px and [-1, 1]
        "preset=smol",
        "model.vision_tower=geoembed_resnet18",
        "model.image_size=128",
        "model.object_max_tokens=256",
    ],
}
COLUMNS = (
    "vqa_oa", "vqa_aa", "level_scene", "level_region", "level_object", "scene_closed",
    "scene_generated", "prior_oa",
)  # fmt: skip


def run_one(name: str, profile: str, seed: int, out: Path) -> None:
    """Child process: one preset's demo; prints its figures as one JSON line."""
    from geostrata.demo import run_demo

    result = run_demo(out, profile, seed, resume=True, show_progress=False, extra=PRESETS[name])
    figures = {"summary": result.summary, "wall_s": result.wall_s, "stages": result.stage_wall_s}
    print("RESULT " + json.dumps(figures))


def data_hash(data_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(data_dir.rglob("*.json")):
        digest.update(path.relative_to(data_dir).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def measure(name: str, profile: str, seed: int, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--one", name, "--profile", profile, "--seed", str(seed),
           "--out", str(out)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{stdout[-2000:]}")
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    figures = json.loads(line.removeprefix("RESULT "))
    return {
        **figures,
        "process_wall_s": time.perf_counter() - t0,
        "peak_rss_gib": usage.ru_maxrss / 2**20,  # KiB on Linux
        "data_sha256": data_hash(out / "data"),
        "load_1min_at_end": os.getloadavg()[0],  # the machine is shared: context for the wall
        "overrides": PRESETS[name],
    }


def table(results: dict[str, dict]) -> str:
    head = ["preset", *COLUMNS, "wall (min)", "peak RSS (GiB)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, r in results.items():
        cells = [f"{100 * r['summary'][c]:.1f}" if c in r["summary"] else "–" for c in COLUMNS]
        cells += [f"{r['process_wall_s'] / 60:.1f}", f"{r['peak_rss_gib']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--profile", default="smol")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "compare")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "presets.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return run_one(args.one, args.profile, args.seed, args.out)
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(PRESETS))
    if unknown:
        raise SystemExit(f"unknown presets {unknown}; expected some of {sorted(PRESETS)}")
    old = json.loads(args.json.read_text()) if args.json.is_file() else {}
    results = dict(old.get("runs", {}))
    for name in names:
        print(f"{name} ...", flush=True)
        results[name] = measure(name, args.profile, args.seed, args.out / name)
        print(f"  {results[name]['process_wall_s'] / 60:.1f} min", flush=True)
        hashes = {r["data_sha256"] for r in results.values()}
        if len(hashes) > 1:
            print(f"warning: the presets saw different data ({hashes})", flush=True)
        payload = {
            "profile": args.profile,
            "seed": args.seed,
            "threads": os.environ.get("OMP_NUM_THREADS", "default"),
            "runs": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(args.json)
    print(table(results))


if __name__ == "__main__":
    main()
