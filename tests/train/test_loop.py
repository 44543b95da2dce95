"""The training loop: schedule, data order, exact resume, gradient accumulation, history."""

import json
import math
import random

import numpy as np
import pytest
import torch

from geostrata.errors import CheckpointError, ConfigError
from geostrata.train import SeededSampleStream, latest_checkpoint, train
from geostrata.train.loop import build_optimizer, build_scheduler
from tests.train._toy import toy_config, toy_dataset, toy_model


class _Crash(Exception):
    pass


def _crash_at(step):
    def on_step(info):
        if info.step == step:
            raise _Crash(f"simulated crash after step {step}")

    return on_step


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=f"weights differ at {k}")


def test_schedule_warmup_then_cosine_to_floor(tmp_path):
    cfg = toy_config(str(tmp_path), max_steps=10, warmup_steps=4, lr=0.1, min_lr_ratio=0.2)
    opt = build_optimizer(list(torch.nn.Linear(2, 2).named_parameters()), cfg)
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(cfg.max_steps + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for step in range(4):  # linear warm-up from 0
        assert lrs[step] == pytest.approx(0.1 * step / 4)
    for step in range(4, 11):
        progress = (step - 4) / 6
        expected = 0.1 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * progress)))
        assert lrs[step] == pytest.approx(expected)
    assert lrs[4] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.02)


def test_weight_decay_spares_biases(tmp_path):
    cfg = toy_config(str(tmp_path), weight_decay=0.5)
    opt = build_optimizer(list(torch.nn.Linear(3, 2).named_parameters()), cfg)
    groups = opt.param_groups
    decays = sorted((g["weight_decay"], tuple(p.ndim for p in g["params"])) for g in groups)
    assert decays == [(0.0, (1,)), (0.5, (2,))]


def test_sample_stream_is_seeded_and_restartable():
    full = SeededSampleStream(10, batch_size=3, seed=7)
    it = iter(full)
    batches = [next(it) for _ in range(8)]  # 24 samples: crosses two epoch boundaries
    flat = [i for b in batches for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert flat[:10] != flat[10:20]  # a new permutation each epoch
    restarted = iter(SeededSampleStream(10, batch_size=3, seed=7, start=9))
    assert [next(restarted) for _ in range(5)] == batches[3:]
    other_seed = iter(SeededSampleStream(10, batch_size=3, seed=8))
    assert [next(other_seed) for _ in range(4)] != batches[:4]


def test_sample_stream_shards_processes():
    shards = [
        iter(SeededSampleStream(12, 2, seed=1, num_processes=3, process_index=p)) for p in range(3)
    ]
    single = iter(SeededSampleStream(12, 6, seed=1))
    for _ in range(4):
        assert [i for s in shards for i in next(s)] == next(single)


def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
    data = toy_dataset()
    ref_model = toy_model()
    ref = train(ref_model, data, None, toy_config(str(tmp_path / "ref")), show_progress=False)

    out = str(tmp_path / "crash")
    crashed = toy_model()
    with pytest.raises(_Crash):
        train(crashed, data, None, toy_config(out), on_step=_crash_at(5), show_progress=False)
    assert latest_checkpoint(out).name == "step-00000004"

    resumed_model = toy_model(seed=123)  # different init: everything must come from the checkpoint
    torch.manual_seed(99)  # global RNGs as a new process has them: the checkpoint must reset them
    random.seed(99)
    np.random.seed(99)
    resumed = train(resumed_model, data, None, toy_config(out), resume=True, show_progress=False)
    _assert_same_weights(_weights(ref_model), _weights(resumed_model), atol=0)  # bit-identical
    assert resumed.final_step == ref.final_step == 8
    assert [h["step"] for h in resumed.history] == list(range(1, 9))
    for a, b in zip(ref.history, resumed.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["lr"] == pytest.approx(b["lr"])
    lines = (tmp_path / "crash" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 9))  # no duplicate 5
    assert not torch.equal(ref_model.fc1.weight, toy_model().fc1.weight)  # training moved it


def test_resume_without_restored_rng_would_differ(tmp_path):
    """Guards the exactness test above: dropout makes the RNG matter for the result."""
    data = toy_dataset()
    a, b = toy_model(), toy_model()
    train(a, data, None, toy_config(str(tmp_path / "a"), seed=3), show_progress=False)
    train(b, data, None, toy_config(str(tmp_path / "b"), seed=4), show_progress=False)
    assert not torch.allclose(a.fc1.weight, b.fc1.weight, atol=1e-6)


def test_grad_accumulation_matches_large_batch(tmp_path):
    data = toy_dataset(n=32)
    big, small = toy_model(dropout=0.0), toy_model(dropout=0.0)
    cfg_big = toy_config(str(tmp_path / "big"), batch_size=8, grad_accum=1, max_steps=6)
    cfg_acc = toy_config(str(tmp_path / "acc"), batch_size=4, grad_accum=2, max_steps=6)
    r_big = train(big, data, None, cfg_big, show_progress=False)
    r_acc = train(small, data, None, cfg_acc, show_progress=False)
    np.testing.assert_allclose([h["loss"] for h in r_acc.history],
                               [h["loss"] for h in r_big.history], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([h["grad_norm"] for h in r_acc.history],
                               [h["grad_norm"] for h in r_big.history], rtol=1e-5)
    _assert_same_weights(_weights(big), _weights(small), atol=1e-5)


def test_history_logs_named_losses_and_step_info(tmp_path):
    seen = []
    result = train(toy_model(), toy_dataset(), None, toy_config(str(tmp_path), log_every=2),
                   on_step=seen.append, show_progress=False)
    assert [h["step"] for h in result.history] == [2, 4, 6, 8]
    entry = result.history[-1]
    assert {"loss", "mse_loss", "reg_loss", "lr", "samples_per_s", "grad_norm"} <= entry.keys()
    assert entry["loss"] == pytest.approx(entry["mse_loss"] + entry["reg_loss"], rel=1e-5)
    assert [i.step for i in seen] == list(range(1, 9))
    assert [i.checkpoint is not None for i in seen] == [s % 2 == 0 for s in range(1, 9)]
    assert seen[0].lr == 0.0 and seen[2].lr == pytest.approx(seen[0].lr + 0.01)
    assert result.samples_per_s > 0 and result.checkpoint == latest_checkpoint(tmp_path)
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("step-"))
    assert kept == ["step-00000006", "step-00000008"]  # keep_last=2


def test_only_given_params_train_and_are_saved(tmp_path):
    model = toy_model()
    before = _weights(model)
    result = train(model, toy_dataset(), None, toy_config(str(tmp_path), max_steps=2),
                   params=[model.fc2.weight], show_progress=False)
    after = _weights(model)
    assert torch.equal(before["fc1.weight"], after["fc1.weight"])
    assert not torch.equal(before["fc2.weight"], after["fc2.weight"])
    from safetensors.torch import load_file

    assert set(load_file(result.checkpoint / "model.safetensors")) == {"fc2.weight"}


def test_fresh_run_refuses_a_directory_with_checkpoints(tmp_path):
    cfg = toy_config(str(tmp_path), max_steps=2)
    train(toy_model(), toy_dataset(), None, cfg, show_progress=False)
    with pytest.raises(CheckpointError, match="resume=True"):
        train(toy_model(), toy_dataset(), None, toy_config(str(tmp_path), max_steps=2),
              show_progress=False)


def test_resume_from_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        train(toy_model(), toy_dataset(), None, toy_config(str(tmp_path)),
              resume=tmp_path / "step-00000099", show_progress=False)


def test_mismatched_accelerator_is_rejected(tmp_path):
    from accelerate import Accelerator

    with pytest.raises(ConfigError, match="grad_accum"):
        train(toy_model(), toy_dataset(), None, toy_config(str(tmp_path), grad_accum=2),
              accelerator=Accelerator(gradient_accumulation_steps=1), show_progress=False)


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    model = toy_model()
    first = train(model, toy_dataset(), None, toy_config(str(tmp_path), max_steps=3),
                  show_progress=False)
    before = _weights(model)
    again = train(model, toy_dataset(), None, toy_config(str(tmp_path), max_steps=3), resume=True,
                  show_progress=False)
    assert again.final_step == 3 and again.checkpoint == first.checkpoint
    _assert_same_weights(before, _weights(model), atol=0)
    assert len(again.history) == 3


def test_empty_dataset_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="empty dataset"):
        train(toy_model(), [], None, toy_config(str(tmp_path)), show_progress=False)


def test_a_dataset_without_indexing_is_refused_naming_its_type(tmp_path):
    with pytest.raises(ConfigError, match="indexed dataset .* got generator"):
        train(toy_model(), (s for s in toy_dataset()), None, toy_config(str(tmp_path)),
              show_progress=False)
