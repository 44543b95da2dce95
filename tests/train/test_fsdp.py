"""FSDP2 on two CPU processes (gloo) under torchrun: the loop's checkpoints hold the FULL trainable
weights and optimizer state (not rank 0's shard) and leave frozen weights out; a second stage
trains the already sharded model; a crashed run resumes to the uninterrupted run's losses and
weights exactly; such a checkpoint also resumes in one process without FSDP.

Accelerate enables FSDP only on accelerator devices; _fsdp_worker.py switches its state to FSDP
on CPU (see there). ~30 s of CPU (three torchrun launches).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geostrata.train import load_checkpoint, train
from geostrata.train.checkpoint import list_checkpoints
from tests.train._sharded_toy import GRAD_ACCUM, TRAINED, shard_toy_model
from tests.train._toy import toy_config, toy_dataset

WORKER = Path(__file__).with_name("_fsdp_worker.py")

pytestmark = pytest.mark.slow


def _torchrun(out: Path, crash: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(WORKER), str(out), str(crash)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, and one killed after stage 2's step 3, then resumed (stage 1 from
    its last checkpoint, stage 2 from its step 2)."""
    root = tmp_path_factory.mktemp("fsdp")
    ref = _torchrun(root / "ref", crash=0)
    assert ref.returncode == 0, ref.stderr[-6000:]
    crashed = _torchrun(root / "run", crash=3)
    assert crashed.returncode != 0
    assert [c.step for c in list_checkpoints(root / "run" / "stage2")] == [2]
    resumed = _torchrun(root / "run", crash=0)
    assert resumed.returncode == 0, resumed.stderr[-6000:]
    return root


def test_checkpoint_holds_the_full_trainable_weights_and_optimizer_state(runs):
    stage1 = load_file(load_checkpoint(runs / "ref" / "stage1" / "step-00000002").weights_path)
    assert {k: tuple(v.shape) for k, v in stage1.items()} == {
        k: v for k, v in TRAINED.items() if k.startswith("fc1.")
    }
    ckpt = load_checkpoint(runs / "ref" / "stage2" / "step-00000006")
    saved = load_file(ckpt.weights_path)
    gathered = load_file(runs / "ref" / "stage2" / "final.safetensors")  # full, same step
    assert {k: tuple(v.shape) for k, v in saved.items()} == TRAINED  # the frozen bias left out
    for name, value in saved.items():
        torch.testing.assert_close(value, gathered[name], atol=0, rtol=0)
    optim = ckpt.load_state("optimizer")
    assert sorted(optim["state"]) == sorted(TRAINED)  # keyed by name, every trained parameter
    for name, shape in TRAINED.items():
        assert tuple(optim["state"][name]["exp_avg"].shape) == shape
        assert tuple(optim["state"][name]["exp_avg_sq"].shape) == shape
        assert int(optim["state"][name]["step"]) == 6


def test_resume_after_a_crash_is_exact(runs):
    for stage in ("stage1", "stage2"):
        assert _losses(runs / "run" / stage) == _losses(runs / "ref" / stage)
    ref = load_file(runs / "ref" / "stage2" / "final.safetensors")
    got = load_file(runs / "run" / "stage2" / "final.safetensors")
    assert sorted(got) == sorted(ref) == sorted([*TRAINED, "fc2.bias"])
    for name, value in ref.items():
        torch.testing.assert_close(got[name], value, atol=0, rtol=0)


def test_an_fsdp_checkpoint_resumes_in_one_process_without_fsdp(runs, tmp_path):
    ckpt = runs / "ref" / "stage2" / "step-00000006"
    cfg = toy_config(
        str(tmp_path), batch_size=4, grad_accum=GRAD_ACCUM, max_steps=7, save_every=7, keep_last=0
    )
    train(shard_toy_model(), toy_dataset(n=32), None, cfg, resume=ckpt, show_progress=False)
    optim = load_checkpoint(tmp_path / "step-00000007").load_state("optimizer")
    assert sorted(optim["state"]) == [0, 1, 2]  # torch's own index layout again
    assert [int(s["step"]) for s in optim["state"].values()] == [7, 7, 7]  # 6 restored + 1
