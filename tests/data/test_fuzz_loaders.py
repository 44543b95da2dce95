"""Property tests: any input either loads or raises a GeoStrataError, never another exception.

Random bytes and damaged real files go into read_image; mutated and random JSON into the RSVQA
and instruction loaders; random lines into split files. A decoder's own exception leaking out
would crash a training run on one bad file instead of naming it.
"""

import copy
import io
import json

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from geostrata.data.folder import SceneFolderDataset
from geostrata.data.images import read_image
from geostrata.data.instruct import GeoChatBenchDataset, InstructionDataset
from geostrata.data.rsvqa import LEVELS, RSVQADataset
from geostrata.errors import GeoStrataError
from tests.data.fixtures import (
    bench_lines,
    instruct_records,
    rgb_array,
    rsvqa_documents,
    write_bench,
    write_instruct,
    write_rsvqa,
    write_scene_folder,
)

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_PIXELS = 4096  # mutated headers may claim huge sizes: keep any allocation tiny
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"GIF89a", b"BM"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 12)
    | st.integers()
    | st.floats()
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
text_lines = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)


def _valid_files() -> dict[str, bytes]:
    """One small valid file per decoder path, to be truncated and bit-flipped."""
    files = {}
    for fmt in ("PNG", "JPEG", "BMP", "GIF"):
        buffer = io.BytesIO()
        Image.fromarray(rgb_array(0, 12, 12)).save(buffer, format=fmt)
        files[fmt.lower()] = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(np.arange(144, dtype=np.uint16).reshape(12, 12) * 300).save(buffer, "PNG")
    files["png16"] = buffer.getvalue()
    for name, stack in (("rgb", rgb_array(1, 12, 12)), ("s2", np.ones((13, 6, 6), np.uint16))):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, stack)
        files[name] = buffer.getvalue()
    return files


def _check_image_outcome(path) -> None:
    try:
        image = read_image(path, max_pixels=MAX_PIXELS)
    except GeoStrataError:
        return
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


@FUZZ
@given(magic=st.sampled_from(MAGIC), body=st.binary(max_size=600))
def test_random_bytes_into_read_image(tmp_path, magic, body):
    path = tmp_path / "random.img"
    path.write_bytes(magic + body)
    _check_image_outcome(path)


@pytest.fixture(scope="module")
def valid_files():
    return _valid_files()


@FUZZ
@given(data=st.data())
def test_damaged_valid_files_into_read_image(tmp_path, valid_files, data):
    name = data.draw(st.sampled_from(sorted(valid_files)))
    content = bytearray(valid_files[name])
    for _ in range(data.draw(st.integers(0, 3))):
        content[data.draw(st.integers(0, len(content) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(content)))
    path = tmp_path / f"damaged.{name}"
    path.write_bytes(bytes(content[:cut]))
    _check_image_outcome(path)


def _mutate(document, data):
    """Replace or delete one node of a JSON tree found by a short random walk, or corrupt text."""
    if data.draw(st.booleans()):
        text = json.dumps(document)
        cut = data.draw(st.integers(0, len(text)))
        return text[:cut] + data.draw(st.text(max_size=3)) + text[cut + 1 :]
    document = copy.deepcopy(document)
    parent, key, node = None, None, document
    for _ in range(data.draw(st.integers(0, 4))):
        if not isinstance(node, dict | list) or not node:
            break
        keys = sorted(node) if isinstance(node, dict) else range(len(node))
        key = data.draw(st.sampled_from(list(keys)))
        parent, node = node, node[key]
    if parent is None:
        return data.draw(json_values)
    if data.draw(st.booleans()):
        del parent[key]
    else:
        parent[key] = data.draw(json_values)
    return document


def _write_json(path, value) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")


@FUZZ
@given(data=st.data())
def test_mutated_rsvqa_json(tmp_path, data):
    documents = rsvqa_documents(n_images=3)
    paths = write_rsvqa(tmp_path, documents)
    kind = data.draw(st.sampled_from(sorted(documents)))
    _write_json(paths[kind], _mutate(documents[kind], data))
    try:
        dataset = RSVQADataset(tmp_path, "train", prefix="SYN", image_ext=".png")
    except GeoStrataError:
        return
    assert all(record["level"] in LEVELS for record in dataset.records)
    assert all(isinstance(record["answer"], str) for record in dataset.records)


@FUZZ
@given(data=st.data())
def test_mutated_instruction_json(tmp_path, data):
    records = instruct_records(2)
    path = write_instruct(tmp_path, records)
    _write_json(path, _mutate(records, data))
    try:
        dataset = InstructionDataset(path, tmp_path)
    except GeoStrataError:
        return
    questions = [record["question"] for record in dataset.records]
    assert all(isinstance(q, str) and "<image>" not in q for q in questions)


@FUZZ
@given(data=st.data())
def test_mutated_bench_jsonl(tmp_path, data):
    lines = bench_lines(2)
    index = data.draw(st.integers(0, 1))
    mutated = _mutate(lines[index], data)
    lines[index] = mutated if isinstance(mutated, str) else json.dumps(mutated)
    path = write_bench(tmp_path, lines)
    try:
        dataset = GeoChatBenchDataset(path, tmp_path)
    except GeoStrataError:
        return
    assert all(record["level"] in LEVELS for record in dataset.records)


@FUZZ
@given(data=st.data())
def test_random_split_file_lines(tmp_path, data):
    if not (tmp_path / "scenes").exists():
        write_scene_folder(tmp_path / "scenes", ["beach", "river"], per_class=2)
    valid = ["scenes/beach/beach00.png", "river01.png", "river/river00.png beach", "beach"]
    lines = data.draw(st.lists(st.sampled_from(valid) | text_lines, max_size=6))
    split = tmp_path / "split.txt"
    split.write_text("\n".join(lines), encoding="utf-8")
    try:
        dataset = SceneFolderDataset(tmp_path / "scenes", split_file=split)
    except GeoStrataError:
        return
    assert all(record["label"] in ("beach", "river") for record in dataset.records)
