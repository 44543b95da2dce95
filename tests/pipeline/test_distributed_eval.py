"""`geostrata eval` under torchrun: shards evaluated by 2 CPU processes and gathered give exactly
the metrics of a single-process run on the same data."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-8000:]


def test_two_process_evaluation_equals_single_process(trained_model_dir, tmp_path):
    _run(
        [
            sys.executable,
            "-m",
            "geostrata.cli",
            "eval",
            str(trained_model_dir),
            "--out",
            str(tmp_path / "one"),
        ]
    )
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "geostrata.cli",
            "eval",
            str(trained_model_dir),
            "--out",
            str(tmp_path / "two"),
        ]
    )
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one["vqa"]["n"] > 0 and one == two
    preds = [(tmp_path / d / "predictions.jsonl").read_text() for d in ("one", "two")]
    assert preds[0] == preds[1]
