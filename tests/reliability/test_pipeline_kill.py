"""SIGKILL the REAL two-stage pipeline again and again; nothing may be lost or changed.

tests/train/test_kill.py kills the training loop on a toy model once. Here the whole
`run_experiment` (tokenizer, knowledge base, frozen-tower feature cache, stage 1, stage 2, model
save) runs in a child process (tests/reliability/_pipeline_run.py) that is killed at three random
steps of stage 2 (a kill may land mid-checkpoint: checkpoints come every 2 steps), then once in
the middle of the evaluation that follows. Each time it is resumed with resume=True. The final
model.safetensors must equal an uninterrupted run's tensor for tensor, the training history must
read as one run with the same losses, and the re-run evaluation must write a complete report.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geostrata.data.synthetic import synthesize
from geostrata.train import latest_checkpoint, load_checkpoint
from tests.reliability import _pipeline_run as script

REPO = Path(__file__).resolve().parents[2]
KILLS = 3


def _launch(data: Path, out: Path, logs: Path, *flags: str) -> subprocess.Popen:
    """Start the pipeline script; its output goes to files (a full pipe would stall it)."""
    path = os.pathsep.join([str(REPO / "src"), str(REPO)])  # this checkout, not an installed one
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    logs.mkdir(parents=True, exist_ok=True)
    n = len(list(logs.glob("*.out")))
    stdout, stderr = open(logs / f"{n}.out", "wb"), open(logs / f"{n}.err", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "tests.reliability._pipeline_run", str(data),
                             str(out), *flags], cwd=REPO, env=env, stdout=stdout, stderr=stderr)
    proc.log = logs / f"{n}.out", logs / f"{n}.err"  # type: ignore[attr-defined]
    return proc


def _tail(proc: subprocess.Popen) -> str:
    return "".join(p.read_text(errors="replace")[-1500:] for p in proc.log)  # type: ignore[attr-defined]


def _history(path: Path) -> list[dict]:
    """Complete entries of a history.jsonl (a kill may leave its last line cut short)."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def _kill_when(proc: subprocess.Popen, ready, timeout_s: float = 240.0) -> None:
    """SIGKILL `proc` as soon as `ready()` holds; fail if it finished or hung first."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    if proc.poll() is None and time.monotonic() >= deadline:
        proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"not killed (rc {proc.returncode}):\n{_tail(proc)}"


def _kill_in_stage2(data: Path, out: Path, logs: Path, rng: random.Random, kills_left: int,
                    resume: bool) -> int:
    """One launch, killed at a random stage-2 step beyond any already logged; returns that step."""
    history = out / "stage2" / "history.jsonl"
    done = max((e["step"] for e in _history(history)), default=0)
    room = max(1, (script.STAGE2_STEPS - 1 - done) // kills_left)
    target = done + rng.randint(1, room)
    proc = _launch(data, out, logs, *(["--resume"] if resume else []))
    _kill_when(proc, lambda: max((e["step"] for e in _history(history)), default=0) >= target)
    return max(e["step"] for e in _history(history))


def _kill_in_eval(data: Path, out: Path, logs: Path, rng: random.Random) -> None:
    """Resume; once training is done and evaluation runs, kill after a random delay."""
    proc = _launch(data, out, logs, "--resume", "--eval")
    started: list[float] = []
    delay = rng.uniform(0.0, 1.5)

    def in_eval() -> bool:
        if not started and "trained" in proc.log[0].read_text():  # type: ignore[attr-defined]
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] >= delay

    _kill_when(proc, in_eval)
    metrics = out / script.REPORT_DIR / "metrics.json"
    if metrics.exists():  # written atomically: absent or whole, never half
        json.loads(metrics.read_text(encoding="utf-8"))


def _assert_same_history(got: list[dict], want: list[dict]) -> None:
    assert [e["step"] for e in got] == [e["step"] for e in want]
    for a, b in zip(got, want, strict=True):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-6, abs_tol=1e-6), (a, b)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_killed_pipeline_resumes_to_identical_model(tmp_path):
    seed = int(os.environ.get("GEOSTRATA_KILL_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    profile = script.profile()
    data = synthesize(tmp_path / "data", profile.n_train, profile.n_test, profile.size, script.SEED)
    reference = _launch(data, tmp_path / "ref", tmp_path / "logs-ref")  # runs alongside
    out, logs = tmp_path / "killed", tmp_path / "logs"
    killed_at = [_kill_in_stage2(data, out, logs, rng, KILLS - k, resume=k > 0)
                 for k in range(KILLS)]
    assert len(set(killed_at)) == KILLS and max(killed_at) < script.STAGE2_STEPS, (seed, killed_at)
    print(f"GEOSTRATA_KILL_SEED={seed}: stage-2 kills after logged steps {killed_at}")
    _kill_in_eval(data, out, logs, rng)
    final = _launch(data, out, logs, "--resume", "--eval")
    assert final.wait(timeout=300) == 0, _tail(final)
    assert reference.wait(timeout=300) == 0, _tail(reference)

    got = load_file(out / "model" / "model.safetensors")
    want = load_file(tmp_path / "ref" / "model" / "model.safetensors")
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert torch.allclose(got[name], tensor, atol=1e-6, rtol=0), (seed, killed_at, name)
    for stage in ("stage1", "stage2"):
        _assert_same_history(_history(out / stage / "history.jsonl"),
                             _history(tmp_path / "ref" / stage / "history.jsonl"))
    assert load_checkpoint(latest_checkpoint(out / "stage2")).step == script.STAGE2_STEPS

    report = out / script.REPORT_DIR
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    predictions = (report / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert metrics["vqa"]["n"] == len(predictions) > 0
    assert all(isinstance(json.loads(line)["pred"], str) for line in predictions)
