"""`geostrata map` on a 20,000 x 20,000 x 4-band scene (3.2 GB of samples) keeps its peak RSS
under 2 GiB: tiles are read as windows, the preview decimated, GDAL's cache bounded.

The scene is sparse (nodata but for three blocks), so the run measures memory, not the model's
speed. The command runs in a fresh process; its peak RSS (ru_maxrss) is what it reports."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.geo.fixtures import UTM, write_sparse_scene

GIB = 2**30
ROOT = Path(__file__).resolve().parents[2]
SIDE = 20_000

MEASURE = """
import json, resource, sys
from geostrata.cli import app
code = app(sys.argv[1:], prog_name="geostrata", standalone_mode=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"code": code or 0, "peak_bytes": peak}))
"""


@pytest.mark.slow  # a fresh process loads the model
def test_map_of_a_20000_px_scene_peaks_under_2gib(tmp_path, trained_model_dir, model_classes):
    scene = write_sparse_scene(tmp_path / "big.tif", SIDE, [(0, 0), (7, 11), (15, 3)], block=1024)
    samples = SIDE * SIDE * 4 * 2
    assert samples > GIB and scene.stat().st_size < 20 * 2**20
    out = tmp_path / "map"
    args = [
        "map",
        str(scene),
        "--model",
        str(trained_model_dir),
        "--out",
        str(out),
        "--tile",
        "1024",
        "--batch-size",
        "4",
        "--classes",
        ",".join(model_classes),
        "--device",
        "cpu",
        "--no-progress",
    ]
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={
            "PYTHONPATH": str(ROOT / "src"),
            "PATH": "/usr/bin:/bin",
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HOME": str(Path.home()),
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, done.stdout[-3000:]
    collection = json.loads((out / "tiles.geojson").read_text())
    # 20 x 20 tiles of 1024 px (the last row and column end at the edge); the three written
    # blocks lie in three different tiles, every other tile is all nodata
    assert collection["tiles_total"] == 400
    assert len(collection["features"]) == 3 and collection["skipped"] == {"nodata": 397}
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::" + UTM.split(":")[1]
    assert (out / "overlay.png").stat().st_size > 0
    assert report["peak_bytes"] < 2 * GIB, f"peak RSS {report['peak_bytes'] / GIB:.2f} GiB"
