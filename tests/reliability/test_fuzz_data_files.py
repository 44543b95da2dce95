"""Fuzz the data files not covered by tests/data/test_fuzz_loaders.py: a synthesized benchmark's
annotations/*.jsonl and meta.json, and streaming tar shards (truncated, bit-flipped, random
members). Each either loads into what the training loaders need, or raises a GeoStrataError
naming the file (and the line for line-based files).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from geostrata.data.shards import ShardStream, write_shards
from geostrata.data.synthetic import load_annotations, load_meta, synthesize
from geostrata.data.targets import Truth
from geostrata.errors import AnnotationError
from tests.reliability._fuzz import FUZZ, damage_bytes, json_values, mutate_tree, outcome

pytestmark = pytest.mark.timeout(120)  # small inputs: a hang fails fast


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A real, tiny synthesized benchmark whose files the tests damage (copies, never it)."""
    return synthesize(tmp_path_factory.mktemp("bench"), 3, 2, size=48, seed=0)


def _copy(bench, tmp_path):
    root = tmp_path / "bench"
    if not root.exists():
        shutil.copytree(bench, root)
    return root


@FUZZ
@given(data=st.data())
def test_mutated_annotations(bench, tmp_path, data):
    root = _copy(bench, tmp_path)
    lines = (bench / "annotations" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    if data.draw(st.booleans(), label="duplicate a line"):
        records.append(records[0])
    records = mutate_tree(records, data, json_values)
    rows = records if isinstance(records, list) else [records]
    content = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode("utf-8")
    if data.draw(st.booleans(), label="damage bytes"):
        content = damage_bytes(content, data)
    path = root / "annotations" / "train.jsonl"
    path.write_bytes(content)
    loaded = outcome(lambda: load_annotations(root, "train"), path, line=True)
    if loaded is not None:
        for image_id, ann in loaded.items():
            assert type(image_id) is int and ann["id"] == image_id
            truth = Truth.from_annotation(ann)  # what the training loader does with each line
            assert isinstance(truth.scene, str)


def test_duplicate_annotation_id_is_refused_not_overwritten(bench, tmp_path):
    root = _copy(bench, tmp_path)
    path = root / "annotations" / "train.jsonl"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    path.write_text(path.read_text(encoding="utf-8") + first + "\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=rf"{path}:4: key 'id': duplicate image id 0"):
        load_annotations(root, "train")


@FUZZ
@given(data=st.data())
def test_mutated_meta(bench, tmp_path, data):
    root = _copy(bench, tmp_path)
    meta = json.loads((bench / "meta.json").read_text(encoding="utf-8"))
    content = json.dumps(mutate_tree(meta, data, json_values), indent=2).encode("utf-8")
    if data.draw(st.booleans(), label="damage bytes"):
        content = damage_bytes(content, data)
    (root / "meta.json").write_bytes(content)
    loaded = outcome(lambda: load_meta(root), root / "meta.json")
    if loaded is not None:
        for key in ("scene_classes", "land_covers", "object_classes"):
            assert all(isinstance(name, str) for name in loaded[key])


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def valid_shard(tmp_path_factory):
    records = [{"image": _png(i), "question": f"q{i}", "answer": str(i)} for i in range(3)]
    return write_shards(records, tmp_path_factory.mktemp("shards"), samples_per_shard=3)[0]


def _read_all(path) -> list[dict]:
    return list(ShardStream(path, rank=0, world_size=1))


def _check_samples(samples: list[dict]) -> None:
    for sample in samples:
        image = sample["image"]
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        assert isinstance(sample["__key__"], str)


@FUZZ
@given(data=st.data())
def test_damaged_shard(valid_shard, tmp_path, data):
    content = bytearray(valid_shard.read_bytes())
    for _ in range(data.draw(st.integers(0, 4), label="flips")):
        content[data.draw(st.integers(0, len(content) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(content)), label="cut")
    path = tmp_path / "damaged.tar"
    path.write_bytes(bytes(content[:cut]))
    samples = outcome(lambda: _read_all(path), path)
    if samples is not None:
        _check_samples(samples)
        assert len(samples) <= 3


MEMBER_NAMES = ["a.png", "a.json", "b.png", "b.json", "b.txt", "c.JSON", "d/e.png", "d/e.json",
                "a.tif", ".json", "noext", "f.PNG", "f.json"]


def _member_bytes(data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["png", "json", "list", "binary"]), label="content")
    if kind == "png":
        return _png(data.draw(st.integers(0, 3)))
    if kind == "json":
        return json.dumps(data.draw(json_values)).encode("utf-8")
    return b"[1, 2]" if kind == "list" else data.draw(st.binary(max_size=64))


@FUZZ
@given(data=st.data(), names=st.lists(st.sampled_from(MEMBER_NAMES), min_size=1, max_size=6))
def test_random_shard_members(tmp_path, data, names):
    path = tmp_path / "random.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            payload = _member_bytes(data)
            info = tarfile.TarInfo(name)
            if data.draw(st.integers(0, 9), label="link") == 0:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
                continue
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    samples = outcome(lambda: _read_all(path), path)
    if samples is not None:
        _check_samples(samples)
