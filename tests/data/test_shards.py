"""Tar shards: written atomically, streamed once per sample across ranks x workers, shuffled
deterministically through a bounded buffer, and loud about corrupt members."""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from geostrata.data import shards as shards_module
from geostrata.data.shards import ShardStream, iter_raw_samples, shuffled, write_shards
from geostrata.errors import AnnotationError, ConfigError, DatasetNotFoundError, ImageError

N_SAMPLES = 40
PER_SHARD = 5


def _png(seed: int) -> tuple[bytes, np.ndarray]:
    pixels = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), pixels


def _records(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        data, _ = _png(i)
        yield {"image": data, "question_id": i, "answer": f"answer {i}", "level": "scene"}


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_shards(_records(N_SAMPLES), out, PER_SHARD)
    return out


def _ids(samples: Any) -> list[int]:
    return [int(s["question_id"]) for s in samples]


def test_write_shards_layout(tmp_path: Path) -> None:
    paths = write_shards(_records(12), tmp_path, samples_per_shard=5)
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert sorted(tmp_path.iterdir()) == paths  # no temporary files left behind
    with tarfile.open(paths[0]) as tar:
        names = tar.getnames()
    assert names[:4] == ["000000000.png", "000000000.json", "000000001.png", "000000001.json"]
    assert len(names) == 10
    assert [len(list(iter_raw_samples(p))) for p in paths] == [5, 5, 2]


def test_roundtrip_pixels_and_metadata(shard_dir: Path) -> None:
    samples = list(ShardStream(shard_dir))
    assert _ids(samples) == list(range(N_SAMPLES))
    for sample in samples[:3] + samples[-2:]:
        i = sample["question_id"]
        np.testing.assert_array_equal(sample["image"], _png(i)[1])
        assert sample["answer"] == f"answer {i}" and sample["image"].dtype == np.uint8
        assert sample["__shard__"].endswith(".tar")


def test_image_path_records_are_copied(tmp_path: Path) -> None:
    data, pixels = _png(7)
    source = tmp_path / "tile.png"
    source.write_bytes(data)
    paths = write_shards([{"image_path": str(source), "label": "forest"}], tmp_path / "s", 4)
    (sample,) = list(ShardStream(paths))
    np.testing.assert_array_equal(sample["image"], pixels)
    assert sample["label"] == "forest" and sample["image_path"] == str(source)


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_once_across_two_ranks_and_two_workers(shard_dir: Path,
                                                            shuffle: bool) -> None:
    seen: dict[int, list[int]] = {}
    for rank in range(2):
        stream = ShardStream(shard_dir, rank=rank, world_size=2, shuffle=shuffle,
                             shuffle_buffer=6, seed=3)
        loader = DataLoader(stream, batch_size=None, num_workers=2,
                            collate_fn=lambda s: s["question_id"])
        seen[rank] = [int(i) for i in loader]
    everything = seen[0] + seen[1]
    assert sorted(everything) == list(range(N_SAMPLES))  # each exactly once
    assert len(seen[0]) == len(seen[1]) == N_SAMPLES // 2  # 8 shards: 2 per reader


def test_reader_split_without_dataloader(shard_dir: Path) -> None:
    stream = ShardStream(shard_dir, rank=1, world_size=2)
    parts = [_ids(stream.iter_reader(worker, 2)) for worker in range(2)]
    assert not set(parts[0]) & set(parts[1])
    other = ShardStream(shard_dir, rank=0, world_size=2)
    rank0 = _ids(other.iter_reader(0, 2)) + _ids(other.iter_reader(1, 2))
    assert sorted(rank0 + parts[0] + parts[1]) == list(range(N_SAMPLES))


def test_shuffle_is_deterministic_per_seed_and_epoch(shard_dir: Path) -> None:
    def order(seed: int, epoch: int = 0) -> list[int]:
        stream = ShardStream(shard_dir, shuffle=True, shuffle_buffer=8, seed=seed)
        stream.set_epoch(epoch)
        return _ids(stream)

    first = order(seed=1)
    assert first == order(seed=1)
    assert sorted(first) == list(range(N_SAMPLES)) and first != list(range(N_SAMPLES))
    assert order(seed=2) != first
    assert order(seed=1, epoch=1) != first


def test_shuffle_buffer_never_holds_more_than_its_size() -> None:
    produced = 0

    def source() -> Iterator[int]:
        nonlocal produced
        for i in range(500):
            produced += 1
            yield i

    out = []
    for item in shuffled(source(), 16, random.Random(0)):
        out.append(item)
        assert produced - len(out) <= 16  # read but not yet yielded = what the buffer holds
    assert sorted(out) == list(range(500)) and out != list(range(500))


def test_stream_reads_lazily(shard_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read = 0
    original = shards_module.iter_raw_samples

    def counting(shard: Any) -> Iterator[Any]:
        nonlocal read
        for raw in original(shard):
            read += 1
            yield raw

    monkeypatch.setattr(shards_module, "iter_raw_samples", counting)
    stream = iter(ShardStream(shard_dir, shuffle=True, shuffle_buffer=4, seed=0))
    next(stream)
    assert read <= 5  # the buffer (4) plus the sample that pushed one out, not a whole corpus
    next(iter(ShardStream(shard_dir)))
    assert read <= 6


def test_corrupt_image_member_names_shard_and_member(tmp_path: Path) -> None:
    bad = {"image": b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "question_id": 0}
    (path,) = write_shards([bad], tmp_path, 4)
    with pytest.raises(ImageError, match=r"shard-000000\.tar: member 000000000\.png"):
        list(ShardStream(path))


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_corrupt_json_and_missing_members_raise_annotation_errors(tmp_path: Path) -> None:
    png = _png(0)[0]
    bad_json = _tar(tmp_path / "a.tar", [("k1.png", png), ("k1.json", b"{not json")])
    with pytest.raises(AnnotationError, match=r"a\.tar: member k1\.json"):
        list(ShardStream([bad_json]))
    no_json = _tar(tmp_path / "b.tar", [("k1.png", png), ("k2.png", png),
                                        ("k2.json", json.dumps({}).encode())])
    with pytest.raises(AnnotationError, match=r"b\.tar: sample 'k1' has no k1\.json"):
        list(ShardStream([no_json]))
    truncated = tmp_path / "c.tar"
    truncated.write_bytes(bad_json.read_bytes()[:700])
    with pytest.raises(AnnotationError, match=r"c\.tar"):
        list(ShardStream([truncated]))


def test_failed_write_leaves_only_complete_shards(tmp_path: Path) -> None:
    def records() -> Iterator[dict[str, Any]]:
        yield from _records(7)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_shards(records(), tmp_path, 5)
    assert [p.name for p in tmp_path.iterdir()] == ["shard-000000.tar"]
    assert len(list(iter_raw_samples(tmp_path / "shard-000000.tar"))) == 5


def test_invalid_inputs(tmp_path: Path, shard_dir: Path) -> None:
    with pytest.raises(ConfigError, match="samples_per_shard"):
        write_shards(_records(1), tmp_path, 0)
    with pytest.raises(AnnotationError, match="needs 'image'"):
        write_shards([{"label": 1}], tmp_path / "x", 2)
    with pytest.raises(AnnotationError, match="not JSON"):
        write_shards([{"image": _png(0)[0], "bad": {1, 2}}], tmp_path / "y", 2)
    with pytest.raises(AnnotationError, match="duplicate"):
        write_shards([{"image": _png(0)[0], "__key__": "a"}] * 2, tmp_path / "z", 2)
    with pytest.raises(DatasetNotFoundError):
        ShardStream(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="rank"):
        ShardStream(shard_dir, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="8 shard"):  # 8 shards, 3 ranks x 3 workers
        ShardStream(shard_dir, rank=0, world_size=3).reader_shards(0, 3)
