"""`geostrata data check`: counts of a clean data set of every kind, and every problem of a
broken one named with its file and line (or entry / object), exit code 1."""

import json

import pytest
from typer.testing import CliRunner

from geostrata.cli import app
from geostrata.data.check import READERS, CheckOptions, check_dataset
from geostrata.data.synthetic import synthesize
from geostrata.errors import ConfigError
from geostrata.session.experiment import DATA_KINDS
from tests.data.fixtures import (
    bench_lines,
    geochat_task_lines,
    instruct_records,
    karpathy_document,
    rsvg_files,
    rsvqa_documents,
    vrsbench_documents,
    write_bench,
    write_dior_rsvg,
    write_geochat_tasks,
    write_instruct,
    write_karpathy,
    write_rsvqa,
    write_scene_folder,
    write_vrsbench,
)


def _clean(kind, root):
    """A clean data set of `kind` under root; returns (folder, options, expected records)."""
    if kind == "synthetic":
        return synthesize(root, 4, 2, size=32, seed=0), CheckOptions(), {"train", "test"}
    if kind == "rsvqa":
        for split in ("train", "test"):
            write_rsvqa(root, rsvqa_documents(), prefix="LR", split=split,
                        image_dir="Images_LR", image_ext=".tif")  # fmt: skip
        return root, CheckOptions(), {"train", "test"}
    if kind == "folder":
        paths = write_scene_folder(root, ["beach", "forest"], 2)
        (root / "train.txt").write_text(f"{paths[0].name}\nforest/forest01.png\n", "utf-8")
        return root, CheckOptions(("train.txt",)), {"", "train.txt"}
    if kind == "instruct":
        write_instruct(root, instruct_records(2))
        return root, CheckOptions(), {"instruct.json"}
    if kind == "geochat_bench":
        write_bench(root, bench_lines(2))  # images/{i}.png under the root
        lines = [{**line, "image_id": "images/train_0"} for line in geochat_task_lines()]
        write_geochat_tasks(root, lines)
        return root, CheckOptions(), {"bench.jsonl", "referring.jsonl"}
    if kind == "karpathy_captions":
        write_karpathy(root, karpathy_document(6))
        return root, CheckOptions(), {"train", "val", "test"}
    if kind == "dior_rsvg":
        write_dior_rsvg(root, rsvg_files(), {"train": [0, 1, 2], "val": [3], "test": [4]})
        return root, CheckOptions(), {"train", "val", "test"}
    write_vrsbench(root, vrsbench_documents())
    return root, CheckOptions(), {"eval"}


def test_every_data_kind_can_be_checked():
    assert set(READERS) == set(DATA_KINDS)


@pytest.mark.parametrize("kind", DATA_KINDS)
def test_clean_data_sets_pass_with_counts(tmp_path, kind):
    root, options, splits = _clean(kind, tmp_path / kind)
    report = check_dataset(root, kind, options)
    assert report.ok, report.lines()
    assert set(report.records) == splits and report.images > 0
    assert all(sum(tasks.values()) > 0 for tasks in report.records.values()), report.records
    assert report.lines()[-1] == "OK: 0 problems, 0 missing images"


def test_broken_dior_rsvg_reports_every_problem(tmp_path):
    files = rsvg_files()
    files["00010"]["objects"][0]["box"] = None  # index 3: no <bndbox>
    files["00001"]["objects"][1]["text"] = None  # index 1: no description
    write_dior_rsvg(tmp_path, files, {"train": [0, 1, 9], "val": [3, "three"], "test": [4]})
    (tmp_path / "JPEGImages" / "00010.jpg").unlink()  # index 4's image
    report = check_dataset(tmp_path, "dior_rsvg")
    assert not report.ok
    expected = [
        "train.txt:3: index 9 out of range",
        "00001.xml: object 1 (index 1): no <description>",
        "val.txt:2: expected an object index",
        "00010.xml: object 0 (dam): missing <bndbox> (index 3)",
    ]
    assert len(report.problems) == len(expected), report.problems
    for problem, text in zip(report.problems, expected, strict=True):
        assert text in problem, (text, problem)
    assert report.missing_images == [str(tmp_path / "JPEGImages" / "00010.jpg")]
    assert report.records == {"train": {"ground": 1}, "val": {}, "test": {"ground": 1}}
    assert report.classes == {"object classes": ["dam", "ship", "vehicle", "windmill"]}


def test_broken_files_of_other_kinds_report_every_problem(tmp_path):
    lines = bench_lines(4)
    lines[1] = '{"question_id": 1, "image": '  # line 2: bad JSON
    del lines[3]["ground_truth"]  # line 4: missing key
    write_bench(tmp_path / "bench", lines)
    report = check_dataset(tmp_path / "bench", "geochat_bench")
    assert [p.split(": ", 1)[1][:7] for p in report.problems] == ["line 2,", "line 4:"]
    assert report.records == {"bench.jsonl": {"vqa": 2}}

    document = karpathy_document(4)
    document["images"][0]["split"] = "tset"
    del document["images"][3]["sentences"][1]["raw"]
    write_karpathy(tmp_path / "cap", document)
    report = check_dataset(tmp_path / "cap", "karpathy_captions")
    assert ["images[0]" in report.problems[0], "images[3]" in report.problems[1]] == [True, True]

    documents = rsvqa_documents()
    documents["questions"]["questions"][0]["img_id"] = 99
    documents["questions"]["questions"][2]["type"] = 7
    write_rsvqa(tmp_path / "rsvqa", documents, prefix="LR", image_dir="Images_LR")
    report = check_dataset(tmp_path / "rsvqa", "rsvqa", CheckOptions(("train", "val")))
    assert len(report.problems) == 3, report.problems  # two questions, and no val split
    assert "question id 0" in report.problems[0] and "question id 2" in report.problems[1]
    assert "split 'val' not found" in report.problems[2]


def test_unknown_kind_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown data kind 'dior'"):
        check_dataset(tmp_path, "dior")


def test_cli_exit_codes_and_output(tmp_path):
    clean = tmp_path / "clean"
    write_vrsbench(clean, vrsbench_documents())
    result = CliRunner().invoke(app, ["data", "check", str(clean), "--kind", "vrsbench"])
    assert result.exit_code == 0, result.output
    assert "eval: 6 records (caption 2, ground 2, vqa 2)" in result.output

    broken = tmp_path / "broken"
    documents = vrsbench_documents()
    documents["ground"][1]["ground_truth"] = "{<1><2>}"
    documents["vqa"] = json.dumps(documents["vqa"])[:-2]  # cut short: not JSON
    write_vrsbench(broken, documents)
    result = CliRunner().invoke(app, ["data", "check", str(broken), "--kind", "vrsbench"])
    assert result.exit_code == 1, result.output
    assert "VRSBench_EVAL_referring.json: entry 1: {<1><2>} is not a box" in result.output
    assert "VRSBench_EVAL_vqa.json: invalid JSON at line" in result.output
    assert "FAILED: 2 problems" in result.output and "Traceback" not in result.output

    result = CliRunner().invoke(app, ["data", "check", str(broken), "--kind", "nope"])
    assert result.exit_code == 2 and "unknown data kind 'nope'" in result.output
