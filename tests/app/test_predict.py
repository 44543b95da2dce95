"""Batch prediction: folder / glob / JSONL inputs, one durable row each, resumable after a kill."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geostrata.errors import AnnotationError, DatasetNotFoundError, ImageError, InputError
from geostrata.inference import predict
from geostrata.predict import collect_jobs, predict_all

QUESTIONS = ["Is there a ship?", "What type of scene is this?"]


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def answers(out: Path) -> dict[tuple[str, str], str]:
    return {(r["image"], r["question"]): r["answer"] for r in rows(out)}


@pytest.fixture
def folder(tmp_path, data_dir) -> Path:
    """Three images, one in a subfolder (folders are read recursively)."""
    images = sorted((data_dir / "images").glob("*.png"))[:3]
    (tmp_path / "tiles" / "sub").mkdir(parents=True)
    for image, target in zip(images, ["a.png", "b.png", "sub/c.png"], strict=True):
        shutil.copy(image, tmp_path / "tiles" / target)
    return tmp_path / "tiles"


def test_folder_rows_hold_answer_evidence_and_timing(loaded, folder, tmp_path):
    out = tmp_path / "preds.jsonl"
    summary = predict_all(loaded, collect_jobs(folder, QUESTIONS), out, show_progress=False)
    got = rows(out)
    assert (summary.written, summary.skipped, summary.errors) == (6, 0, 0)
    images = [str((folder / n).absolute()) for n in ("a.png", "b.png", "sub/c.png")]
    assert [(r["image"], r["question"]) for r in got] == [(i, q) for i in images for q in QUESTIONS]
    for row in got:
        expected = predict(loaded, row["image"], row["question"])
        assert row["answer"] == expected.answer
        assert {lv: [c["id"] for c in cs] for lv, cs in row["cues"].items()} == {
            lv: [c.id for c in cs] for lv, cs in expected.cues.items()
        }
        assert row["router"] == pytest.approx(expected.router, abs=1e-3)
        assert row["seconds"] > 0 and row["model"] == str(loaded.path.absolute())


def test_jsonl_and_glob_inputs(tmp_path, folder):
    listing = tmp_path / "ask.jsonl"
    listing.write_text(
        '{"image": "tiles/a.png", "question": "Is there a road?", "id": 7}\n'
        "\n"
        '{"image": "tiles/b.png"}\n',
        encoding="utf-8",
    )
    jobs = collect_jobs(listing, ["Is there a ship?"])
    assert [(j.image.name, j.question, j.source) for j in jobs] == [
        ("a.png", "Is there a road?", {"id": 7}),
        ("b.png", "Is there a ship?", {}),
    ]
    globbed = collect_jobs(str(folder / "**" / "*.png"), ["Q?", "Q?"])  # duplicates asked once
    assert [(j.image.name, j.question) for j in globbed] == [
        ("a.png", "Q?"),
        ("b.png", "Q?"),
        ("c.png", "Q?"),
    ]


def test_bad_inputs_name_what_is_wrong(tmp_path, folder):
    listing = tmp_path / "ask.jsonl"
    listing.write_text('{"image": "tiles/a.png"}\n{"image": "tiles/gone.png", "question": "Q?"}\n')
    with pytest.raises(ImageError, match=r"1 image file\(s\) missing:\n.*gone\.png"):
        collect_jobs(listing, ["Q?"])
    with pytest.raises(AnnotationError, match=r"ask\.jsonl:1: no \"question\""):
        collect_jobs(listing)
    listing.write_text('{"image": "tiles/a.png", "question": ""}\n')
    with pytest.raises(AnnotationError, match=r"ask\.jsonl:1: the question is empty"):
        collect_jobs(listing)
    with pytest.raises(InputError, match="give the question with --question"):
        collect_jobs(folder)
    with pytest.raises(DatasetNotFoundError, match="not a folder, an image"):
        collect_jobs(tmp_path / "nowhere", ["Q?"])
    with pytest.raises(DatasetNotFoundError, match="no images"):
        collect_jobs(str(tmp_path / "*.tif"), ["Q?"])


def test_resume_after_a_cut_line_writes_each_pair_once(loaded, folder, tmp_path):
    jobs = collect_jobs(folder, QUESTIONS)
    reference = tmp_path / "reference.jsonl"
    predict_all(loaded, jobs, reference, show_progress=False)
    out = tmp_path / "preds.jsonl"
    lines = reference.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2], encoding="utf-8")  # a kill
    summary = predict_all(loaded, jobs, out, show_progress=False)
    assert (summary.written, summary.skipped) == (3, 3)
    keys = [(r["image"], r["question"]) for r in rows(out)]
    assert len(keys) == len(set(keys)) == 6 and answers(out) == answers(reference)
    assert predict_all(loaded, jobs, out, show_progress=False).written == 0  # all done


def test_resume_after_sigkill(loaded, folder, tmp_path):
    """A real kill mid-run (each prediction slowed so it lands mid-run), then a rerun."""
    out = tmp_path / "preds.jsonl"
    script = textwrap.dedent(
        f"""
        import time, torch
        import geostrata.inference as inference
        from geostrata.predict import collect_jobs, predict_all
        torch.set_num_threads(1)
        real = inference.predict
        def slow(*args, **kwargs):
            time.sleep(0.5)
            return real(*args, **kwargs)
        inference.predict = slow
        loaded = inference.load_model({str(loaded.path)!r})
        predict_all(loaded, collect_jobs({str(folder)!r}, {QUESTIONS!r}), {str(out)!r},
                    show_progress=False)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 180
    while not (out.is_file() and len(out.read_bytes().splitlines()) >= 2):
        assert child.poll() is None, "the child ended before it was killed"
        assert time.monotonic() < deadline, "the child wrote nothing in time"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = out.read_bytes().count(b"\n")  # complete rows; a cut one is dropped
    assert 2 <= before < 6
    summary = predict_all(loaded, collect_jobs(folder, QUESTIONS), out, show_progress=False)
    keys = [(r["image"], r["question"]) for r in rows(out)]
    assert summary.skipped == before and len(keys) == len(set(keys)) == 6
    for (image, question), answer in answers(out).items():
        assert answer == predict(loaded, image, question).answer


def test_unreadable_image_is_an_error_row_retried_next_run(loaded, folder, tmp_path, corrupt_png):
    good = (folder / "b.png").read_bytes()
    shutil.copy(corrupt_png, folder / "b.png")
    jobs = collect_jobs(folder, QUESTIONS[:1])
    out = tmp_path / "preds.jsonl"
    summary = predict_all(loaded, jobs, out, show_progress=False)
    bad = [r for r in rows(out) if "error" in r]
    assert summary.errors == 1 and len(bad) == 1 and "b.png" in bad[0]["error"]
    assert "cannot decode" in bad[0]["error"] and "answer" not in bad[0]
    (folder / "b.png").write_bytes(good)
    summary = predict_all(loaded, jobs, out, show_progress=False)
    assert (summary.written, summary.skipped, summary.errors) == (1, 2, 0)
    assert sorted(Path(i).name for i, _ in answers(out)) == ["a.png", "b.png", "c.png"]
    assert len(rows(out)) == 3


def test_output_of_another_model_is_refused(loaded, folder, tmp_path):
    out = tmp_path / "preds.jsonl"
    out.write_text('{"image": "x.png", "question": "Q?", "model": "/elsewhere", "answer": "no"}\n')
    with pytest.raises(InputError, match=r"preds\.jsonl:1: a prediction of another model"):
        predict_all(loaded, collect_jobs(folder, QUESTIONS), out, show_progress=False)


def test_cli_predict(trained_model_dir, folder, tmp_path):
    from geostrata.cli import app

    out = tmp_path / "preds.jsonl"
    args = ["predict", str(trained_model_dir), str(folder), "-q", QUESTIONS[0], "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "3 rows written" in result.output and len(rows(out)) == 3
    again = CliRunner().invoke(app, [*args, "--no-progress"])
    assert (
        again.exit_code == 0
        and "0 rows written" in again.output
        and "3 already there" in again.output
    )
    refused = CliRunner().invoke(
        app, ["predict", str(trained_model_dir), str(folder), "--out", str(out)]
    )
    assert refused.exit_code == 1 and "--question" in refused.output
