"""InstructionDataset (LLaVA/GeoChat JSON) and GeoChatBenchDataset (JSONL)."""

import logging

import numpy as np
import pytest

from geostrata.data.instruct import GeoChatBenchDataset, InstructionDataset, strip_image_token
from geostrata.errors import AnnotationError, DatasetNotFoundError, ImageError
from tests.data.fixtures import (
    bench_lines,
    instruct_records,
    rgb_array,
    write_bench,
    write_instruct,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<image>\nWhat is here?", "What is here?"),
        ("What is here?\n<image>", "What is here?"),
        ("Look <image> here", "Look here"),
        ("no token", "no token"),
    ],
)
def test_strip_image_token(text, expected):
    assert strip_image_token(text) == expected


def test_one_sample_per_turn_pair(tmp_path):
    path = write_instruct(tmp_path, instruct_records(3))
    data = InstructionDataset(path, tmp_path)
    assert len(data) == 1 + 2 + 3
    record = data.records[2]
    assert record == {
        "image_path": str(tmp_path / "images" / "1.png"),
        "image_id": "images/1.png",
        "id": "rec1",
        "qtype": "instruct",
        "level": "scene",
        "turn": 1,
        "question_id": "rec1:1",
        "question": "Question 1.1?",
        "answer": "Answer 1.1",
    }
    assert data.records[1]["question"] == "Question 1.0?"  # <image>\n removed
    np.testing.assert_array_equal(data[1]["image"], rgb_array(1))


def test_system_turns_skipped_and_text_only_records_warned(tmp_path, caplog):
    records = instruct_records(1)
    records[0]["conversations"].insert(0, {"from": "system", "value": "Be brief."})
    records.append({"id": "chat", "conversations": [{"from": "human", "value": "hi"}]})
    path = write_instruct(tmp_path, records)
    with caplog.at_level(logging.WARNING):
        data = InstructionDataset(path, tmp_path)
    assert len(data) == 1 and "skipped 1 records without an image" in caplog.text


@pytest.mark.parametrize(
    ("turns", "pattern"),
    [
        ([("human", "a"), ("human", "b")], r"entry 0, turn 1: two human turns in a row"),
        ([("gpt", "a")], r"entry 0, turn 0: gpt turn without a preceding human turn"),
        ([("human", "a"), ("gpt", "b"), ("human", "c")], r"entry 0: the last human turn"),
        ([("robot", "a")], r"entry 0, turn 0: unknown speaker 'robot'"),
    ],
)
def test_bad_turn_order(tmp_path, turns, pattern):
    conversations = [{"from": role, "value": value} for role, value in turns]
    record = {"id": 1, "image": "a.png", "conversations": conversations}
    path = write_instruct(tmp_path, [record])
    with pytest.raises(AnnotationError, match=r"instruct\.json: " + pattern):
        InstructionDataset(path, tmp_path)


def test_instruction_file_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="instruction file not found"):
        InstructionDataset(tmp_path / "none.json", tmp_path)
    records = instruct_records(2)
    del records[1]["conversations"][0]["value"]
    path = write_instruct(tmp_path, records)
    with pytest.raises(AnnotationError, match=r"entry 1, turn 0: missing key 'value'"):
        InstructionDataset(path, tmp_path)
    path.write_text('[{"id": 1,\n "image": "a.png" "conversations": []}]')
    with pytest.raises(AnnotationError, match=r"instruct\.json: invalid JSON at line 2, column"):
        InstructionDataset(path, tmp_path)
    path.write_text('{"id": 1}')
    with pytest.raises(AnnotationError, match="expected a list"):
        InstructionDataset(path, tmp_path)
    with pytest.raises(DatasetNotFoundError, match="image folder not found"):
        InstructionDataset(path, tmp_path / "no_images")


def test_missing_images_named_on_read_and_all_at_once(tmp_path):
    path = write_instruct(tmp_path, instruct_records(3), with_images=False)
    data = InstructionDataset(path, tmp_path)
    with pytest.raises(ImageError, match=r"images/0\.png: image file not found"):
        data[0]
    assert len(data.missing_images()) == 3
    with pytest.raises(ImageError, match=r"3 image file\(s\) missing[\s\S]*1\.png[\s\S]*2\.png"):
        data.check_images()


def test_bench_round_trip_with_categories(tmp_path):
    lines = bench_lines(3)
    lines[1]["category"] = "rural_urban"
    lines[2]["type"] = "count"
    lines[2]["ground_truth"] = 4
    data = GeoChatBenchDataset(write_bench(tmp_path, lines), tmp_path)
    assert [(r["qtype"], r["level"]) for r in data.records] == [
        ("instruct", "scene"), ("rural_urban", "scene"), ("count", "object"),
    ]
    assert data.records[0]["question"] == "Q0?" and data.records[2]["answer"] == "4"
    assert data.records[0]["question_id"] == "0"
    np.testing.assert_array_equal(data[2]["image"], rgb_array(2))


def test_bench_bad_line_names_file_and_line(tmp_path):
    lines = bench_lines(3)
    lines[1] = '{"question_id": 1, "image": '
    path = write_bench(tmp_path, lines)
    with pytest.raises(AnnotationError, match=r"bench\.jsonl: line 2, column \d+: invalid JSON"):
        GeoChatBenchDataset(path, tmp_path)
    lines[1] = "[1, 2]"
    path = write_bench(tmp_path, lines)
    with pytest.raises(AnnotationError, match=r"line 2: expected a JSON object"):
        GeoChatBenchDataset(path, tmp_path)
    lines = bench_lines(3)
    del lines[2]["ground_truth"]
    path = write_bench(tmp_path, lines)
    with pytest.raises(AnnotationError, match=r"line 3: missing key 'ground_truth'"):
        GeoChatBenchDataset(path, tmp_path)


def test_bench_missing_image_and_blank_lines(tmp_path):
    path = write_bench(tmp_path, bench_lines(2), with_images=False)
    path.write_text(path.read_text() + "\n\n")
    data = GeoChatBenchDataset(path, tmp_path)
    assert len(data) == 2
    with pytest.raises(ImageError, match=r"images/1\.png: image file not found"):
        data[1]
