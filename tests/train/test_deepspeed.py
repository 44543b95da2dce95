"""DeepSpeed ZeRO-2 / ZeRO-3 on two CPU processes (gloo) under torchrun: the loop's checkpoints
hold the full trainable weights (plus DeepSpeed's own sharded optimizer checkpoint), and a crashed
run resumes to the uninterrupted run's losses and weights exactly.

DeepSpeed is an optional extra (``pip install -e ".[deepspeed]"``, which ``.ci/run`` installs):
skipped where it is absent. Verified with deepspeed 0.19.8 and its CPU accelerator; ~30 s per stage.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geostrata.train import load_checkpoint
from geostrata.train.checkpoint import list_checkpoints
from geostrata.train.engines import DEEPSPEED_DIR
from tests.train._sharded_toy import TRAINED

pytest.importorskip("deepspeed")

WORKER = Path(__file__).with_name("_deepspeed_worker.py")

pytestmark = pytest.mark.slow


def _torchrun(out: Path, crash: int, stage: int) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ACCELERATE_USE_DEEPSPEED": "true",
        "DS_ACCELERATOR": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(out),
        str(crash),
        str(stage),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "history.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_checkpoints_hold_full_weights_and_resume_exactly(tmp_path, stage):
    ref = _torchrun(tmp_path / "ref", crash=0, stage=stage)
    assert ref.returncode == 0, ref.stderr[-6000:]
    assert _torchrun(tmp_path / "run", crash=3, stage=stage).returncode != 0
    assert [c.step for c in list_checkpoints(tmp_path / "run")] == [2]
    resumed = _torchrun(tmp_path / "run", crash=0, stage=stage)
    assert resumed.returncode == 0, resumed.stderr[-6000:]

    ckpt = load_checkpoint(tmp_path / "ref" / "step-00000006")
    saved = load_file(ckpt.weights_path)
    gathered = load_file(tmp_path / "ref" / "final.safetensors")
    assert {k: tuple(v.shape) for k, v in saved.items()} == TRAINED  # full; frozen bias left out
    for name, value in saved.items():
        torch.testing.assert_close(value, gathered[name], atol=0, rtol=0)
    assert (ckpt.path / DEEPSPEED_DIR).is_dir() and not ckpt.has_state("optimizer")

    assert _losses(tmp_path / "run") == _losses(tmp_path / "ref")
    got = load_file(tmp_path / "run" / "final.safetensors")
    for name, value in gathered.items():
        torch.testing.assert_close(got[name], value, atol=0, rtol=0)
