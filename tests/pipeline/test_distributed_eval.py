"""`geostrata eval` under torchrun: shards evaluated by 2 CPU processes and gathered give exactly
the metrics of a single-process run on the same data."""

import json

import pytest

from tests.pipeline.launch import geostrata

pytestmark = pytest.mark.slow


def test_two_process_evaluation_equals_single_process(trained_model_dir, tmp_path):
    geostrata("eval", str(trained_model_dir), "--out", str(tmp_path / "one"))
    geostrata("eval", str(trained_model_dir), "--out", str(tmp_path / "two"), processes=2)
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one["vqa"]["n"] > 0 and one == two
    preds = [(tmp_path / d / "predictions.jsonl").read_text() for d in ("one", "two")]
    assert preds[0] == preds[1]
