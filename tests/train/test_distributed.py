"""Two CPU processes under torchrun: a crashed run resumes to the uninterrupted weights.

Slow-ish (three torchrun launches, ~40 s of CPU); part of the default suite so CI runs it.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geostrata.train import load_checkpoint

WORKER = Path(__file__).with_name("_ddp_worker.py")

pytestmark = pytest.mark.slow


def _torchrun(out: Path, crash: int) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(out), str(crash)]
    return subprocess.run(cmd, capture_output=True, timeout=300).returncode


def test_two_process_crash_and_resume_is_exact(tmp_path):
    assert _torchrun(tmp_path / "ref", crash=0) == 0
    assert _torchrun(tmp_path / "run", crash=3) != 0
    state = load_checkpoint(tmp_path / "run" / "step-00000002").trainer_state
    assert state["num_processes"] == 2 and len(state["rng"]) == 2
    assert state["rng"][0]["torch"] != state["rng"][1]["torch"]  # ranks draw different dropout
    assert _torchrun(tmp_path / "run", crash=0) == 0
    ref = load_file(tmp_path / "ref" / "final.safetensors")
    got = load_file(tmp_path / "run" / "final.safetensors")
    for name, value in ref.items():
        torch.testing.assert_close(got[name], value, atol=1e-6, rtol=0)
