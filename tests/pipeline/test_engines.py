"""`geostrata train` through both stages under FSDP2 (with LoRA), DeepSpeed ZeRO-2 and ZeRO-3,
each launched as users launch it (`accelerate launch --config_file configs/accelerate/<engine>.yaml
--num_processes 2`, on CPU: gloo), killed (SIGKILL) once stage 2 has written a checkpoint, and
resumed: the resumed run's model must equal the uninterrupted run's.

Each stage has its own engine lifetime (train/pipeline.py): stage 2 runs on a model rebuilt from
stage 1's checkpoint, so neither FSDP's sharding nor ZeRO-3's hooks of stage 1 reach stage 2.
That is what used to break: ZeRO-3 drifted in stage 2 and its stage-2 checkpoint did not resume,
and FSDP failed when stage 2 unfroze LoRA adapters inside units stage 1 had sharded frozen.

Tolerance: none. The same processes, seeds and reduction order give bit-identical weights, and
the resumed run restores every weight, optimizer moment and RNG state exactly, so the final
tensors are compared with atol = rtol = 0 (and every logged loss for equality).
About 25 s per launch, 9 launches, two at a time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from geostrata.data.synthetic import synthesize
from geostrata.train import latest_checkpoint, load_checkpoint
from geostrata.train.engines import DEEPSPEED_DIR

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "accelerate"
STAGE2_STEPS = 6
ENGINES = {
    "fsdp": "fsdp.yaml",
    "zero2": "deepspeed_zero2.yaml",
    "zero3": "deepspeed_zero3.yaml",
}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("engines") / "data", 24, 4, size=64, seed=0)


def _experiment(out: Path, data: Path) -> Path:
    """tiny-effnet with a frozen LLM and LoRA adapters in stage 2 (FSDP's failing case)."""
    stage = {"batch_size": 4, "warmup_steps": 1, "log_every": 1, "save_every": 2, "keep_last": 0}
    cfg = {
        "preset": "tiny-effnet",
        "output_dir": str(out),
        "seed": 0,
        "model": {"use_lora": True, "freeze_llm": True},
        "data": {"kind": "synthetic", "root": str(data)},
        "stage1": {**stage, "max_steps": 2, "lr": 2e-3},
        "stage2": {**stage, "max_steps": STAGE2_STEPS, "lr": 1e-3},
    }
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(engine: str, experiment: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(CONFIGS / ENGINES[engine]), "--num_processes", "2", "--mixed_precision", "no",
           "--main_process_port", str(_free_port()),  # two launches run side by side
           "-m", "geostrata.cli", "train", str(experiment), "--no-eval", *flags]  # fmt: skip
    log = experiment.with_suffix(f".{time.monotonic_ns()}.log")
    with open(log, "wb") as sink:  # a file, not a pipe: a full pipe would stall the launch
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen) -> None:
    rc = proc.wait(timeout=300)
    assert rc == 0, proc.log.read_text(errors="replace")[-6000:]  # type: ignore[attr-defined]


def _kill_after_stage2_checkpoint(proc: subprocess.Popen, out: Path) -> int:
    """SIGKILL every process of the launch once stage 2 has a checkpoint; returns its step."""
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if latest_checkpoint(out / "stage2") is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"not killed mid-stage 2 (rc {proc.returncode})"
    return load_checkpoint(latest_checkpoint(out / "stage2")).step


def _losses(out: Path, stage: str) -> list[float]:
    lines = (out / stage / "history.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.mark.parametrize("engine", list(ENGINES))
def test_two_stages_killed_in_stage2_resume_to_the_uninterrupted_weights(tmp_path, data, engine):
    if engine != "fsdp":
        pytest.importorskip("deepspeed")
    ref_cfg, run_cfg = _experiment(tmp_path / "ref", data), _experiment(tmp_path / "run", data)
    reference = _launch(engine, ref_cfg)  # uninterrupted, beside the run that is killed
    killed_at = _kill_after_stage2_checkpoint(_launch(engine, run_cfg), tmp_path / "run")
    assert 0 < killed_at < STAGE2_STEPS
    resumed = _launch(engine, run_cfg, "--resume")
    _finish(reference)
    _finish(resumed)

    want = load_file(tmp_path / "ref" / "model" / "model.safetensors")
    got = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, atol=0, rtol=0, msg=name)
    for stage in ("stage1", "stage2"):
        assert _losses(tmp_path / "run", stage) == _losses(tmp_path / "ref", stage), stage

    # stage 2 trained the LoRA adapters: its checkpoint holds them whole (not a shard), beside
    # what stage 1 trained; the engine's optimizer state is in the checkpoint its own way
    ckpt = load_checkpoint(tmp_path / "ref" / "stage2" / f"step-{STAGE2_STEPS:08d}")
    saved = load_file(ckpt.weights_path)
    lora = [k for k in saved if "lora_" in k]
    assert lora and all(torch.equal(saved[k], want[k]) for k in lora)
    stage1 = load_file(load_checkpoint(tmp_path / "ref" / "stage1" / "step-00000002").weights_path)
    assert not any("lora_" in k for k in stage1) and set(stage1) - set(saved) == set()
    for name in stage1:
        assert saved[name].shape == want[name].shape, name  # gathered whole
    if engine == "fsdp":
        optimizer = ckpt.load_state("optimizer")  # full, keyed by parameter name
        assert set(lora) <= set(optimizer["state"]) <= set(saved)
    else:
        assert (ckpt.path / DEEPSPEED_DIR).is_dir() and not ckpt.has_state("optimizer")
