"""bench/bench_gpu.py on the CPU with the tiny preset: the script that produces the GPU figures in
docs/scaling.md must keep running, and its derived figures must follow from what it timed."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "bench_gpu.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_cpu_smoke_run_writes_consistent_figures(bench, tmp_path):
    out = tmp_path / "gpu.json"
    args = ["--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--seq-lens", "48",
            "--micro-batches", "1,2", "--steps", "1", "--warmup", "1", "--gen-tokens", "3",
            "--gen-batches", "2", "--gen-repeats", "1", "--decode", "dynamic,static",
            "--out", str(out)]
    data = bench.main(args)
    assert json.loads(out.read_text()) == data  # the file holds what was returned
    assert [(r["seq_len"], r["micro_batch"]) for r in data["train"]] == [(48, 1), (48, 2)]
    for row in data["train"]:
        assert math.isfinite(row["loss"]) and row["loss"] > 0
        assert row["tokens_per_s"] == pytest.approx(row["micro_batch"] * 48 / row["step_median_s"])
        assert row["predicted"]["memory_gib"] > 0 and row["peak_allocated_gib"] is None
    assert [g["decode"] for g in data["generate"]] == ["dynamic", "static"]
    for gen in data["generate"]:
        assert (gen["batch"], gen["new_tokens"]) == (2, 3)
        assert gen["total_s"] > 0 and gen["first_token_s"] > 0  # no timing relation: CPU noise
        assert gen["llm_weight_bytes"] > 0 and gen["bandwidth_bound_per_token_s"] is None  # CPU
    assert data["parameters"]["trainable"] > 0 and data["predicted_for_gpu"] == "h100"


def test_too_short_sequence_is_refused(bench, tmp_path):
    with pytest.raises(SystemExit, match="needs more than"):
        bench.main(["--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--seq-lens",
                    "10", "--micro-batches", "1", "--gen-batches", "", "--out",
                    str(tmp_path / "x.json")])


def test_qlora_saves_the_llm_folder_then_refuses_without_bitsandbytes(bench, tmp_path):
    from geostrata.errors import ConfigError

    folder = tmp_path / "llm"
    with pytest.raises(ConfigError, match="bitsandbytes|CUDA GPU"):
        bench.main(["--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--seq-lens",
                    "48", "--micro-batches", "1", "--gen-batches", "", "--qlora-dir",
                    str(folder), "--out", str(tmp_path / "q.json")])  # fmt: skip
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))


def test_trace_holds_one_profiled_step(bench, tmp_path):
    trace = tmp_path / "trace.json"
    bench.main(["--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--seq-lens", "48",
                "--micro-batches", "1", "--steps", "1", "--warmup", "0", "--gen-batches", "",
                "--trace", str(trace), "--out", str(tmp_path / "t.json")])  # fmt: skip
    events = json.loads(trace.read_text())["traceEvents"]
    assert any("AdamW" in str(e.get("name")) for e in events)
    assert "aten::" in trace.with_suffix(".txt").read_text()
