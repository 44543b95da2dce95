"""Checkpoints: atomic writes, safe loading, pruning, disk-full, weights loading, RNG states."""

import errno
import os
import pickle
import random
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from geostrata.atomic import remove_dead_temp_dirs
from geostrata.errors import CheckpointError
from geostrata.train import checkpoint as ck


def _save(out, step, value=0.0, keep_last=0):
    weights = {"w": torch.full((2, 3), value), "b": torch.arange(3.0)}
    states = {"optimizer": {"state": {}, "lr": torch.tensor([value])}, "scheduler": {"last": step}}
    return ck.save_checkpoint(out, step, weights, states, {"samples_seen": step * 4}, keep_last)


def test_roundtrip(tmp_path):
    path = _save(tmp_path, 3, value=1.5)
    assert path == tmp_path / "step-00000003"
    loaded = ck.load_checkpoint(path)
    assert loaded.step == 3 and loaded.trainer_state["samples_seen"] == 12
    assert torch.equal(loaded.load_state("optimizer")["lr"], torch.tensor([1.5]))
    assert loaded.load_state("scheduler") == {"last": 3}
    assert not any(p.name.startswith("step-00000003.tmp") for p in tmp_path.iterdir())


def test_crash_between_temp_write_and_rename_keeps_previous(tmp_path, monkeypatch):
    _save(tmp_path, 1, value=1.0)

    def crash(src, dst):
        raise KeyboardInterrupt("power cut")  # not an OSError: nothing may be cleaned up for us

    monkeypatch.setattr(ck.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2, value=2.0)
    monkeypatch.undo()
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert leftovers == [f"step-00000002.tmp-{os.getpid()}"]  # a real crash leaves its temp dir
    latest = ck.latest_checkpoint(tmp_path)
    assert latest == tmp_path / "step-00000001"
    m = nn.Module()
    m.register_buffer("w", torch.zeros(2, 3))
    m.register_buffer("b", torch.zeros(3))
    ck.load_safetensors_weights(m, latest / "model.safetensors")
    assert torch.equal(m.w, torch.ones(2, 3))


def test_latest_ignores_temp_and_incomplete_dirs(tmp_path):
    _save(tmp_path, 1)
    done = _save(tmp_path, 2)
    shutil.copytree(done, tmp_path / "step-00000009.tmp-4242")  # complete content, temp name
    incomplete = shutil.copytree(done, tmp_path / "step-00000007")
    os.remove(incomplete / "trainer_state.json")  # the marker written last never arrived
    (tmp_path / "notes").mkdir()
    assert ck.latest_checkpoint(tmp_path) == done
    with pytest.raises(CheckpointError, match="incomplete"):
        ck.load_checkpoint(incomplete)
    assert ck.latest_checkpoint(tmp_path / "absent") is None


def test_resaving_a_step_replaces_it(tmp_path):
    _save(tmp_path, 4, value=1.0)
    _save(tmp_path, 4, value=2.0)
    got = ck.load_checkpoint(tmp_path / "step-00000004").load_state("optimizer")["lr"]
    assert torch.equal(got, torch.tensor([2.0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004"]


def test_keep_last_prunes_oldest(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, keep_last=2)
    assert [c.step for c in ck.list_checkpoints(tmp_path)] == [3, 4]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_is_refused(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / "optimizer.pt"
    if fmt == "torch_zip":
        torch.save({"state": _Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(CheckpointError, match="refusing to unpickle") as info:
        ck.load_torch_state(path)
    assert str(path) in str(info.value) and "system" in str(info.value)
    assert not marker.exists()


def test_disk_full_names_path_and_keeps_previous(tmp_path, monkeypatch):
    _save(tmp_path, 1, value=1.0)

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full)
    with pytest.raises(CheckpointError, match="disk full") as info:
        _save(tmp_path, 2, value=2.0)
    assert "step-00000002" in str(info.value)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001"]  # temp removed
    assert ck.load_checkpoint(ck.latest_checkpoint(tmp_path)).step == 1


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 5, bias=False)
        self.head.weight = self.embed.weight
        self.norm = nn.LayerNorm(4)


def test_tied_weights_save_and_load(tmp_path):
    torch.manual_seed(0)
    src = _Tied()
    weights = dict(src.named_parameters())  # deduplicated: the tied matrix appears once
    path = ck.save_checkpoint(tmp_path, 1, weights, {}, {})
    dst = _Tied()
    result = ck.load_safetensors_weights(dst, path / "model.safetensors", strict=True)
    assert result.missing == [] and "embed.weight" in result.loaded
    assert torch.equal(dst.head.weight, src.embed.weight) and dst.head.weight is dst.embed.weight


def test_weights_mismatch_lists_keys(tmp_path):
    weights = {"embed.weight": torch.zeros(5, 4), "extra": torch.zeros(1)}
    path = ck.save_checkpoint(tmp_path, 1, weights, {}, {})
    with pytest.raises(CheckpointError, match="missing keys.*norm.weight.*unexpected keys.*extra"):
        ck.load_safetensors_weights(_Tied(), path / "model.safetensors", strict=True)
    loose = ck.load_safetensors_weights(_Tied(), path / "model.safetensors", strict=False)
    assert loose.unexpected == ["extra"] and "norm.bias" in loose.missing
    bad = ck.save_checkpoint(tmp_path, 2, {"embed.weight": torch.zeros(6, 4)}, {}, {})
    with pytest.raises(CheckpointError, match=r"embed.weight: file \(6, 4\) vs module \(5, 4\)"):
        ck.load_safetensors_weights(_Tied(), bad / "model.safetensors", strict=False)


def test_rng_state_roundtrip_through_json(tmp_path):
    import json

    state = json.loads(json.dumps(ck.capture_rng_state()))
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.random(), np.random.rand(), torch.rand(())  # move every generator on
    ck.restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    with pytest.raises(CheckpointError, match="malformed RNG"):
        ck.restore_rng_state({"python": [3]})


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_dirs_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    for name in (f"step-00000002.tmp-{dead}", f"step-00000003.tmp-{alive}",
                 f"model.tmp-{dead}", f"notes.tmp-{dead}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights.bin").write_bytes(b"x" * 10)
    _save(tmp_path, 1)
    removed = remove_dead_temp_dirs(tmp_path)
    assert [p.name for p in removed] == [f"step-00000002.tmp-{dead}"]
    assert [p.name for p in remove_dead_temp_dirs(tmp_path, stem="model")] == [
        f"model.tmp-{dead}"
    ]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [f"notes.tmp-{dead}", "step-00000001", f"step-00000003.tmp-{alive}"]


def test_training_start_removes_what_a_killed_save_left(tmp_path):
    from geostrata.train import train
    from tests.train._toy import toy_config, toy_dataset, toy_model

    stale = tmp_path / f"step-00000004.tmp-{_dead_pid()}"
    stale.mkdir(parents=True)
    cfg = toy_config(str(tmp_path), max_steps=2, save_every=2)
    train(toy_model(), toy_dataset(n=16), None, cfg, resume=True, show_progress=False)
    assert not stale.exists() and (tmp_path / "step-00000002").is_dir()
