"""The parts of FSDP / DeepSpeed support that need neither: DeepSpeed's config filled from the
training config before ``prepare``, a gradient norm DeepSpeed does not report, the optimizer state
re-keyed between torch's index layout and FSDP's name layout, the staged (multi-writer) checkpoint
directory, and the refusals. The real runs are in test_fsdp.py (toy) and
tests/pipeline/test_engines.py."""

from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from geostrata.errors import CheckpointError, ConfigError
from geostrata.train import checkpoint as ck
from geostrata.train import train
from geostrata.train.engines import (
    DEEPSPEED_DIR,
    DeepSpeedEngine,
    fill_deepspeed_config,
    norm_value,
    optimizer_state_by,
)
from geostrata.train.loop import _prepare, build_optimizer
from tests.train._toy import toy_config, toy_dataset, toy_model

AUTO = {
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "zero_optimization": {"stage": 3},
}


def test_deepspeed_config_takes_batch_geometry_and_clipping_from_cfg(tmp_path):
    ds = {k: (dict(v) if isinstance(v, dict) else v) for k, v in AUTO.items()}
    cfg = toy_config(str(tmp_path), batch_size=4, grad_accum=3, max_grad_norm=0.5)
    assert fill_deepspeed_config(ds, cfg, num_processes=8) == []
    assert ds == {
        "train_micro_batch_size_per_gpu": 4,
        "train_batch_size": 96,
        "gradient_accumulation_steps": 3,
        "gradient_clipping": 0.5,
        "zero_optimization": {"stage": 3},
    }


def test_deepspeed_config_explicit_values_are_overridden_and_named(tmp_path):
    ds = {
        "train_micro_batch_size_per_gpu": 16,
        "gradient_clipping": 1.0,
        "gradient_accumulation_steps": 2,
    }
    cfg = toy_config(str(tmp_path), batch_size=4, grad_accum=2, max_grad_norm=0.0)
    notes = fill_deepspeed_config(ds, cfg, num_processes=2)
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["train_batch_size"] == 16
    assert ds["gradient_clipping"] == 0.0  # clipping off: DeepSpeed must not clip either
    assert len(notes) == 2
    assert "train_micro_batch_size_per_gpu=16" in notes[0] and "gradient_clipping=1.0" in notes[1]


def _fake_accelerator(distributed_type, ds_config=None, fsdp2=True):
    """Just what _prepare touches; ``prepare`` records the DeepSpeed config it is called with."""
    seen = {}

    def prepare(model, optimizer):
        seen["config"] = dict(ds_config or {})
        return model, optimizer

    plugin = SimpleNamespace(deepspeed_config=ds_config)
    return SimpleNamespace(
        distributed_type=distributed_type,
        is_fsdp2=fsdp2,
        gradient_accumulation_steps=2,
        num_processes=2,
        state=SimpleNamespace(deepspeed_plugin=plugin),
        prepare=prepare,
        unwrap_model=lambda m: m,
        print=lambda *a: seen.setdefault("printed", []).append(a),
    ), seen


def test_prepare_fills_the_deepspeed_config_before_accelerate_reads_it(tmp_path):
    ds = {k: (dict(v) if isinstance(v, dict) else v) for k, v in AUTO.items()}
    acc, seen = _fake_accelerator(DistributedType.DEEPSPEED, ds)
    cfg = toy_config(str(tmp_path), batch_size=4, grad_accum=2)
    run = _prepare(toy_model(), cfg, None, acc)
    assert seen["config"]["train_micro_batch_size_per_gpu"] == 4
    assert seen["config"]["gradient_accumulation_steps"] == 2
    assert seen["config"]["train_batch_size"] == 16
    assert type(run.engine) is DeepSpeedEngine and "printed" not in seen


def test_fsdp_version_1_is_refused(tmp_path):
    acc, _ = _fake_accelerator(DistributedType.FSDP, fsdp2=False)
    with pytest.raises(ConfigError, match="fsdp_version: 2"):
        _prepare(toy_model(), toy_config(str(tmp_path), grad_accum=2), None, acc)


def test_norm_value_accepts_what_clip_grad_norm_returns():
    assert norm_value(None) is None  # DeepSpeed without a norm
    assert norm_value(2.5) == 2.5  # DeepSpeed's engine norm
    assert norm_value(torch.tensor(1.25)) == 1.25
    dtensor_like = SimpleNamespace(full_tensor=lambda: torch.tensor(0.75))  # FSDP2
    assert norm_value(dtensor_like) == 0.75


def test_a_step_without_a_reported_grad_norm_logs_none(tmp_path, monkeypatch):
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", lambda self, *a, **k: None)
    cfg = toy_config(str(tmp_path), max_steps=2, save_every=0)
    result = train(toy_model(), toy_dataset(), None, cfg, show_progress=False)
    assert result.final_step == 2
    assert all("grad_norm" not in entry for entry in result.history)


def _stepped_adamw():
    model = toy_model()
    named = list(model.named_parameters())
    opt = build_optimizer(named, toy_config("unused"))
    batch = toy_dataset(4)
    x = torch.stack([b["x"] for b in batch])
    y = torch.stack([b["y"] for b in batch])
    model(x, y).loss.backward()
    opt.step()
    order = [n for g in opt.param_groups for p in g["params"] for n, q in named if q is p]
    return opt, order


def test_optimizer_state_rekeys_between_index_and_name_layouts():
    opt, order = _stepped_adamw()
    by_index = opt.state_dict()
    by_name = optimizer_state_by(by_index, order, by_name=True)
    assert sorted(by_name["state"]) == sorted(order)
    assert [g["params"] for g in by_name["param_groups"]] == [
        [order[i] for i in g["params"]] for g in by_index["param_groups"]
    ]
    assert optimizer_state_by(by_name, order, by_name=True) is by_name  # already so: unchanged
    back = optimizer_state_by(by_name, order, by_name=False)
    assert back["param_groups"] == by_index["param_groups"]
    for i, state in by_index["state"].items():
        for key, value in state.items():
            assert torch.equal(back["state"][i][key], value)
    opt.load_state_dict(back)  # torch accepts it


def test_optimizer_state_naming_an_unknown_parameter_is_refused():
    opt, order = _stepped_adamw()
    by_name = optimizer_state_by(opt.state_dict(), order, by_name=True)
    with pytest.raises(CheckpointError, match="does not"):
        optimizer_state_by(by_name, order[:-1], by_name=False)


def test_staged_checkpoint_keeps_other_writers_files(tmp_path):
    staged = ck.begin_staging(tmp_path, 5)
    (staged / DEEPSPEED_DIR).mkdir()
    (staged / DEEPSPEED_DIR / "rank1.pt").write_bytes(b"shard")
    assert ck.list_checkpoints(tmp_path) == []  # a staging directory is never a checkpoint
    path = ck.save_checkpoint(tmp_path, 5, {"w": torch.ones(2)}, {}, {}, staged=staged)
    assert path == tmp_path / "step-00000005" and not staged.exists()
    assert (path / DEEPSPEED_DIR / "rank1.pt").read_bytes() == b"shard"
    assert ck.load_checkpoint(path).step == 5


def test_staged_checkpoint_needs_its_directory(tmp_path):
    with pytest.raises(CheckpointError, match="staging directory"):
        ck.save_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, {}, {}, staged=tmp_path / "gone")


def test_a_deepspeed_checkpoint_is_not_resumed_without_deepspeed(tmp_path):
    cfg = toy_config(str(tmp_path), max_steps=2, save_every=2)
    train(toy_model(), toy_dataset(), None, cfg, show_progress=False)
    path = tmp_path / "step-00000002"
    (path / "optimizer.pt").unlink()  # as DeepSpeed saves it: its own files instead
    (path / DEEPSPEED_DIR).mkdir()
    with pytest.raises(CheckpointError, match="saved under DeepSpeed"):
        train(toy_model(), toy_dataset(), None, cfg, resume=True, show_progress=False)
