"""Fuzz the data files not covered by tests/data/test_fuzz_loaders.py: a synthesized benchmark's
annotations/*.jsonl and meta.json. Each either loads into what the training loaders need, or
raises a GeoStrataError naming the file (and the line for line-based files).
"""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

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

