"""The README's main job, end to end on CPU: synthesize, train both stages, checkpoint, evaluate,
report -- then resume a finished run (nothing retrained) -- with the quick profile."""

import json

from typer.testing import CliRunner

from geostrata.cli import app
from geostrata.demo import PROFILES


def test_quick_demo_trains_evaluates_and_beats_the_question_prior(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = out / "report"
    for name in (
        "report.md",
        "metrics.json",
        "predictions.jsonl",
        "per_type.png",
        "confusion.png",
        "loss.png",
    ):
        assert (report / name).stat().st_size > 0, name
    metrics = json.loads((report / "metrics.json").read_text())
    vqa = metrics["vqa"]
    # Image use must be visible: the model beats the question-only prior on the same questions.
    assert vqa["overall_accuracy"] > vqa["prior"]["overall_accuracy"] + 0.05
    n_classes = len(metrics["scene_closed_set"]["classes"])
    assert metrics["scene_closed_set"]["overall_accuracy"] > 2.0 / n_classes  # well above chance
    # every test image's caption is scored against its references (pycocoevalcap)
    assert metrics["caption"]["n"] == PROFILES["quick"].n_test
    assert "## Captioning" in (report / "report.md").read_text()
    assert "report:" in result.output

    # Resume a finished run: both stages are complete, so nothing trains again.
    stage2 = out / "run" / "stage2" / "history.jsonl"
    before = stage2.read_text()
    again = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--resume"])
    assert again.exit_code == 0, again.output
    assert stage2.read_text() == before
    last = json.loads(before.strip().splitlines()[-1])
    assert last["step"] == PROFILES["quick"].stage2_steps
