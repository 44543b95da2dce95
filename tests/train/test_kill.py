"""A training process killed with SIGKILL resumes to the same weights as an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from geostrata.train import latest_checkpoint, load_checkpoint, train
from tests.train._toy import toy_config, toy_dataset, toy_model

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 12

pytestmark = pytest.mark.slow


def _run_and_kill(out: Path, min_step: int, timeout_s: float = 120.0) -> int:
    """Start the toy script, SIGKILL it as soon as a checkpoint >= min_step exists."""
    path = os.pathsep.join([str(REPO / "src"), str(REPO)])  # this checkout, not an installed one
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.train._toy", str(out), str(MAX_STEPS), "0.25"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            latest = latest_checkpoint(out)
            if latest is not None and load_checkpoint(latest).step >= min_step:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    return load_checkpoint(latest_checkpoint(out)).step


def test_sigkilled_run_resumes_exactly(tmp_path):
    out = tmp_path / "killed"
    killed_at = _run_and_kill(out, min_step=3)
    assert 3 <= killed_at < MAX_STEPS

    cfg = toy_config(str(out), max_steps=MAX_STEPS, save_every=1, keep_last=3)
    resumed = toy_model(seed=99)
    result = train(resumed, toy_dataset(), None, cfg, resume=True, show_progress=False)

    reference = toy_model()
    ref_cfg = toy_config(str(tmp_path / "ref"), max_steps=MAX_STEPS, save_every=1, keep_last=3)
    train(reference, toy_dataset(), None, ref_cfg, show_progress=False)
    for name, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name  # bit-identical
    assert [h["step"] for h in result.history] == list(range(1, MAX_STEPS + 1))
