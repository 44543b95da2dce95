"""Faults the kill test cannot aim at precisely, simulated in-process on the toy model.

Already covered elsewhere (and listed in docs/reliability.md): a crash between a checkpoint's
temp write and its rename (tests/train/test_checkpoint.py::
test_crash_between_temp_write_and_rename_keeps_previous), a full disk while checkpointing
(::test_disk_full_names_path_and_keeps_previous), a tampered optimizer.pt
(::test_malicious_pickle_is_refused), one SIGKILL of the toy loop (tests/train/test_kill.py).
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from geostrata.errors import CheckpointError
from geostrata.evaluate.report import write_metrics_json
from geostrata.session import save_session
from geostrata.train import checkpoint as ck
from geostrata.train import history, train
from tests.train._toy import toy_config, toy_dataset, toy_model

STEPS = 6


def _run(out: Path, resume: bool = False):
    model = toy_model(seed=5 if resume else 0)  # a resumed run must not depend on its init
    cfg = toy_config(str(out), max_steps=STEPS, save_every=2, keep_last=0)
    result = train(model, toy_dataset(), None, cfg, resume=resume, show_progress=False)
    return model, result


def _history_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / history.HISTORY_FILE).read_text().splitlines()]


@pytest.fixture
def finished(tmp_path):
    """A complete toy run (checkpoints at 2, 4, 6) and its final weights."""
    model, result = _run(tmp_path / "run")
    return tmp_path / "run", {k: v.clone() for k, v in model.state_dict().items()}, result


def _same_weights(model, want) -> None:
    for name, value in want.items():
        torch.testing.assert_close(model.state_dict()[name], value, atol=1e-6, rtol=0)


def test_cut_state_file_falls_back_to_previous_checkpoint(finished):
    """A newest checkpoint whose marker file is cut short is skipped; resume redoes its steps."""
    out, want, _ = finished
    state = out / "step-00000006" / ck.STATE_FILE
    state.write_text(state.read_text()[:40])
    assert ck.latest_checkpoint(out) == out / "step-00000004"
    model, result = _run(out, resume=True)
    _same_weights(model, want)
    assert [h["step"] for h in result.history] == list(range(1, STEPS + 1))


def test_half_written_history_line_is_dropped_on_resume(finished):
    """A kill mid-append leaves half a JSON line; resume rewinds the file to whole entries."""
    out, want, first = finished
    shutil.rmtree(out / "step-00000006")  # killed after logging step 6, before its save
    with open(out / history.HISTORY_FILE, "a", encoding="utf-8") as f:
        f.write('{"step": 7, "loss": 0.12')  # no newline: the write was cut
    model, result = _run(out, resume=True)
    _same_weights(model, want)
    lines = _history_lines(out)
    assert [e["step"] for e in lines] == list(range(1, STEPS + 1))
    assert [e["loss"] for e in lines] == pytest.approx([e["loss"] for e in first.history])


def test_damaged_weights_in_newest_checkpoint_name_the_file(finished):
    """Damage after the fact (not a crash: weights are fsync'ed before the marker) is loud."""
    out, _, _ = finished
    weights = out / "step-00000006" / ck.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=str(weights)):
        _run(out, resume=True)


def test_disk_full_while_logging_names_history_file(tmp_path, monkeypatch):
    real_open = open

    def full(path, mode="r", *args, **kwargs):
        if str(path).endswith(history.HISTORY_FILE) and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(history, "open", full, raising=False)
    with pytest.raises(CheckpointError, match=rf"{history.HISTORY_FILE}: .*No space left"):
        _run(tmp_path / "run")


def test_metrics_json_write_interrupted_keeps_previous(tmp_path, monkeypatch):
    path = write_metrics_json(tmp_path / "metrics.json", {"vqa": {"n": 3}})

    def crash(src, dst):
        raise KeyboardInterrupt("killed between write and rename")

    monkeypatch.setattr("geostrata.atomic.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_metrics_json(path, {"vqa": {"n": 4}})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"vqa": {"n": 3}}


class _Saver:
    """Stands in for model / processor: writes one file, or crashes like a kill would."""

    def __init__(self, name: str, crash: bool = False) -> None:
        self.name, self.crash = name, crash

    def save_pretrained(self, folder: Path, state_dict: dict | None = None) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / self.name).write_text("new")
        if self.crash:
            raise KeyboardInterrupt("killed mid-save")


def test_model_folder_save_is_atomic(tmp_path):
    """Killed mid-save: the previous model folder stays whole, none is half-written."""
    cfg = SimpleNamespace(output_dir=str(tmp_path), save=lambda p: Path(p).write_text("cfg"))
    good = SimpleNamespace(
        cfg=cfg, model=_Saver("model.safetensors"), processor=_Saver("tok"), added=None
    )
    folder = save_session(good)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["experiment.yaml", "model.safetensors", "tok"]
    (folder / "model.safetensors").write_text("old")
    bad = SimpleNamespace(
        cfg=cfg, model=_Saver("model.safetensors"), processor=_Saver("tok", True), added=None
    )
    with pytest.raises(KeyboardInterrupt):
        save_session(bad)
    assert (folder / "model.safetensors").read_text() == "old"
    assert (folder / "experiment.yaml").is_file()
