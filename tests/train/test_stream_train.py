"""Training on a streamed shard corpus: same result as the in-memory list in the same order,
exact resume mid-epoch and across the epoch boundary, bounded memory."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from geostrata.data import shards as shards_module
from geostrata.data.shards import ShardStream, write_shards
from geostrata.errors import CheckpointError, ConfigError
from geostrata.train import SeededSampleStream, load_checkpoint, train
from tests.train._toy import toy_config, toy_dataset, toy_model

N = 64  # samples in the corpus
PER_SHARD = 8
BUFFER = 8  # shuffle buffer
BATCH, STEPS = 6, 16  # 96 samples: the epoch boundary (64) falls inside step 11's batch


class _Crash(Exception):
    pass


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _to_tensors(sample: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {"x": torch.tensor(sample["x"], dtype=torch.float32),  # (D_IN,)
            "y": torch.tensor(sample["y"], dtype=torch.float32)}  # (1,)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    png = _tiny_png()
    records = ({"image": png, "x": s["x"].tolist(), "y": s["y"].tolist()}  # float32 -> exact JSON
               for s in toy_dataset(n=N))
    out = tmp_path_factory.mktemp("stream_shards")
    write_shards(records, out, PER_SHARD)
    return out


def _stream(shard_dir: Path, **kw: Any) -> ShardStream:
    return ShardStream(shard_dir, shuffle=True, shuffle_buffer=BUFFER, seed=5,
                       transform=_to_tensors, **kw)


def _cfg(out: Path, **kw: Any):
    return toy_config(str(out), **{"batch_size": BATCH, "max_steps": STEPS, "save_every": 4, **kw})


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=f"weights differ at {k}")


def _passes(shard_dir: Path, epochs: list[int]) -> list[dict[str, torch.Tensor]]:
    """The stream's samples for the given epochs, concatenated: the order training must see."""
    stream, out = _stream(shard_dir), []
    for epoch in epochs:
        stream.set_epoch(epoch)
        out.extend(stream)
    return out


def _indexed_in_order(order: list[Any], seed: int) -> list[Any]:
    """A list that the indexed path (one seeded permutation per pass) visits in ``order``."""
    perm = SeededSampleStream(len(order), BATCH, seed).permutation(0)
    data: list[Any] = [None] * len(order)
    for position, index in enumerate(perm):
        data[index] = order[position]
    return data


@pytest.fixture(scope="module")
def stream_run(shard_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted streamed run: (weights, TrainResult)."""
    model = toy_model()
    result = train(model, _stream(shard_dir), None, _cfg(tmp_path_factory.mktemp("ref")),
                   show_progress=False)
    return _weights(model), result


def test_stream_equals_in_memory_list_in_the_same_order(shard_dir, stream_run, tmp_path):
    weights, _ = stream_run
    order = _passes(shard_dir, [0, 1])
    same = [torch.equal(a["x"], b["x"]) for a, b in zip(order[:N], order[N:], strict=True)]
    assert same.count(True) < N  # the second pass is shuffled differently
    reference = toy_model()
    cfg = _cfg(tmp_path / "list")
    train(reference, _indexed_in_order(order, cfg.seed), None, cfg, show_progress=False)
    _assert_same(weights, _weights(reference))
    # Guard: had the loop replayed epoch 0 instead of calling set_epoch(1), weights would differ.
    replayed = toy_model()
    train(replayed, _indexed_in_order(_passes(shard_dir, [0, 0]), cfg.seed), None,
          _cfg(tmp_path / "replayed"), show_progress=False)
    assert not torch.allclose(weights["fc1.weight"], replayed.fc1.weight, atol=1e-6)


def test_epochs_are_counted_for_a_stream_without_len(stream_run):
    _, result = stream_run
    assert result.final_step == STEPS
    epochs = [h["epoch"] for h in result.history]
    assert epochs == [float(step * BATCH // N) for step in range(1, STEPS + 1)]
    assert epochs[0] == 0.0 and epochs[-1] == 1.0  # the boundary was crossed


@pytest.mark.parametrize("crash_step", [5, 13])  # resume in epoch 0, and in epoch 1
def test_resume_after_crash_is_exact(shard_dir, stream_run, tmp_path, monkeypatch, crash_step):
    out = tmp_path / "run"

    def crash(info):
        if info.step == crash_step:
            raise _Crash

    with pytest.raises(_Crash):
        train(toy_model(), _stream(shard_dir), None, _cfg(out), on_step=crash,
              show_progress=False)
    saved = crash_step - 1  # save_every=4 and crash_step = 4k + 1
    consumed = saved * BATCH
    state = load_checkpoint(out / f"step-{saved:08d}").trainer_state
    assert state["stream"] == [{"epoch": consumed // N, "consumed": consumed % N}]
    assert state["samples_seen"] == consumed

    decoded = 0
    original = shards_module.decode_sample

    def counting(raw, bands=None):
        nonlocal decoded
        decoded += 1
        return original(raw, bands)

    monkeypatch.setattr(shards_module, "decode_sample", counting)
    resumed = toy_model(seed=123)  # everything must come from the checkpoint
    train(resumed, _stream(shard_dir), None, _cfg(out), resume=True, show_progress=False)
    _assert_same(stream_run[0], _weights(resumed))
    assert decoded == (STEPS - saved) * BATCH  # the skipped samples were not decoded again


def test_memory_is_bounded_by_buffer_and_batch(shard_dir, tmp_path, monkeypatch):
    read = decoded = collated = 0
    worst = 0  # most samples read from shards but not yet in a collated batch
    read_fn, decode_fn = shards_module.iter_raw_samples, shards_module.decode_sample

    def counting_read(shard) -> Iterator[Any]:
        nonlocal read
        for raw in read_fn(shard):
            read += 1
            yield raw

    def counting_decode(raw, bands=None):
        nonlocal decoded
        decoded += 1
        return decode_fn(raw, bands)

    def collate(batch):
        nonlocal collated, worst
        collated += len(batch)
        assert decoded == collated  # the loop decodes nothing ahead of the batch it collates
        worst = max(worst, read - collated)
        return torch.utils.data.default_collate(batch)

    monkeypatch.setattr(shards_module, "iter_raw_samples", counting_read)
    monkeypatch.setattr(shards_module, "decode_sample", counting_decode)
    train(toy_model(), _stream(shard_dir), collate, _cfg(tmp_path), show_progress=False)
    assert collated == STEPS * BATCH > N  # crossed the epoch boundary
    assert worst == BUFFER  # the shuffle buffer, full, and nothing more


def test_loop_sets_rank_from_the_accelerator(shard_dir, tmp_path):
    stream = _stream(shard_dir, rank=1, world_size=2)  # wrong for this single process
    train(toy_model(), stream, None, _cfg(tmp_path, max_steps=2), show_progress=False)
    assert (stream.rank, stream.world_size) == (0, 1)


def test_one_shot_iterator_fails_clearly_at_its_second_pass(tmp_path):
    samples = toy_dataset(n=10)
    with pytest.raises(ConfigError, match="iterated a second time"):
        train(toy_model(), iter(samples), None, _cfg(tmp_path, max_steps=3),
              show_progress=False)


def test_indexed_checkpoint_cannot_resume_a_stream(shard_dir, tmp_path):
    train(toy_model(), toy_dataset(), None, _cfg(tmp_path, max_steps=4), show_progress=False)
    with pytest.raises(CheckpointError, match="no stream position"):
        train(toy_model(), _stream(shard_dir), None, _cfg(tmp_path, max_steps=6), resume=True,
              show_progress=False)
