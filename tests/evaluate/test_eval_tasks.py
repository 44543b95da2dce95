"""`geostrata eval --task ground` end to end on the tiny trained model and hand-made grounding
records (the record convention of notes/tasks.md): metrics.json, predictions, report table and
the figure of true and predicted boxes; the generation budgets fit a box and a caption."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from geostrata.boxes import Box, iou, parse_box
from geostrata.cli import app
from geostrata.evaluate.tasks import MAX_NEW_TOKENS, unique_images
from geostrata.session import session as session_module
from geostrata.session.samples import ground_question

BOXES = [[5, 5, 60, 70], [40, 40, 45, 44], [10, 60, 30, 90], [0, 0, 100, 100], [70, 10, 90, 20]]
EXPRESSIONS = ["the large field", "the small car", "the pond", "the whole scene", "a building"]


def ground_records(images):
    return [
        {
            "image_path": path,
            "image_id": path,
            "question_id": f"ground:{i}",
            "question": ground_question(expr),
            "answer": Box.of(box).text(),
            "expression": expr,
            "box": box,
            "task": "ground",
            "qtype": "ground",
            "level": "object",
        }
        for i, (path, box, expr) in enumerate(zip(images, BOXES, EXPRESSIONS, strict=False))
    ]


@pytest.fixture
def ground_data(monkeypatch):
    """The model's own evaluation data with only grounding records in its evaluation split."""
    real = session_module.load_task

    def with_ground(cfg):
        task = real(cfg)
        task.eval = ground_records(unique_images(task.eval))
        return task

    monkeypatch.setattr(session_module, "load_task", with_ground)


def test_eval_task_ground_writes_metrics_predictions_and_the_box_figure(
    trained_model_dir, tmp_path, ground_data
):
    out = tmp_path / "report"
    args = ["eval", str(trained_model_dir), "--task", "ground", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"] == ["ground"]
    assert not (out / "predictions.jsonl").exists()  # that one holds VQA answers
    assert metrics["vqa"] is None and metrics["scene_closed_set"] is None
    g = metrics["grounding"]
    rows = [
        json.loads(line) for line in (out / "predictions_ground.jsonl").read_text().splitlines()
    ]
    assert len(rows) == g["overall"]["n"] == len(BOXES)
    # the figures follow from the written answers: recomputed here from the predictions file
    ious = []
    for row in rows:
        box = parse_box(row["pred"])
        assert row["pred_box"] == (box.as_list() if box else None)
        ious.append(iou(box, Box.of(row["box"])) if box else 0.0)
        assert row["iou"] == pytest.approx(ious[-1])
    assert g["overall"]["mean_iou"] == pytest.approx(sum(ious) / len(ious))
    assert g["overall"]["acc_50"] == pytest.approx(sum(v >= 0.5 for v in ious) / len(ious))
    assert g["n_unparseable"] == sum(r["pred_box"] is None for r in rows)
    assert set(g["per_size"]) == {"small", "medium", "large"}
    report = (out / "report.md").read_text()
    assert "## Visual grounding" in report and "![boxes](boxes.png)" in report
    assert "Tasks evaluated: ground." in report
    assert "## Visual question answering" not in report
    figure = np.asarray(Image.open(out / "boxes.png").convert("RGB")).astype(int)
    assert min(figure.shape[:2]) > 150
    green = (figure[..., 1] > 150) & (figure[..., 0] < 80) & (figure[..., 2] < 80)
    assert green.sum() > 100  # the true boxes are drawn
    assert "ground_miou" in result.output


def test_eval_refuses_a_task_the_data_lacks_and_an_unknown_task(trained_model_dir, tmp_path):
    runner = CliRunner()
    lacking = runner.invoke(app, ["eval", str(trained_model_dir), "--task", "ground",
                                  "--out", str(tmp_path / "a"), "--device", "cpu"])  # fmt: skip
    assert lacking.exit_code == 1
    assert "holds no ground data" in lacking.output and "vqa" in lacking.output
    unknown = runner.invoke(app, ["eval", str(trained_model_dir), "--task", "vqa,grond"])
    assert unknown.exit_code == 1 and "did you mean 'ground'" in unknown.output
    assert not (tmp_path / "a").exists()


def test_generation_budgets_fit_a_box_and_a_caption(trained_model_dir):
    from geostrata.inference import load_model
    from geostrata.session.experiment import DataConfig
    from geostrata.session.samples import load_task

    loaded = load_model(trained_model_dir, device="cpu")
    widest = Box(100, 100, 100, 100).text()  # the most characters a box can have
    lengths = [len(loaded.processor.answer_ids(t)) for t in (widest, Box(3, 7, 45, 9).text())]
    assert max(lengths) <= MAX_NEW_TOKENS["ground"]
    task = load_task(DataConfig(**{**vars(loaded.cfg.data)}))
    captions = [r["answer"] for r in task.eval if r.get("task") == "caption"]
    assert captions
    longest = max(len(loaded.processor.answer_ids(c)) for c in captions)
    assert longest <= MAX_NEW_TOKENS["caption"]


def region_records(images):
    from geostrata.session.samples import region_question

    texts = ["a patch of green grass", "a grey road crossing", "water near the shore"]
    return [
        {
            "image_path": path,
            "image_id": path,
            "question_id": f"region:{i}",
            "question": region_question(Box.of(box)),
            "answer": text,
            "references": [text, f"{text} in the image"],
            "box": box,
            "task": "region",
            "qtype": "region",
            "level": "object",
        }
        for i, (path, box, text) in enumerate(zip(images, BOXES, texts, strict=False))
    ]


def test_region_and_ground_records_are_scored_together_through_the_library(
    trained_model_dir, tmp_path, monkeypatch
):
    from geostrata.evaluate.suite import evaluate_session
    from geostrata.session import open_session

    real = session_module.load_task

    def mixed(cfg):
        task = real(cfg)
        images = unique_images(task.eval)
        task.eval = ground_records(images[:2]) + region_records(images[2:])
        return task

    monkeypatch.setattr(session_module, "load_task", mixed)
    session = open_session(trained_model_dir, show_progress=False, device="cpu")
    m = evaluate_session(session, tmp_path / "r", show_progress=False)  # every task it holds
    assert m.tasks == ["cls", "ground", "region"]  # its images have scene labels: cls too
    assert m.captions is None and m.vqa is None and m.scenes is not None
    assert m.regions.n == 3 and m.regions.n_references == 6 and m.grounding.overall.n == 2
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["region"]["bleu_4"] == pytest.approx(m.regions.bleu_4)
    assert saved["region"]["cider"] == pytest.approx(m.regions.cider)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## Region description" in report and "| BLEU-1 |" in report
    assert "## Visual grounding" in report and (tmp_path / "r" / "boxes.png").is_file()
    assert {"region_cider", "ground_acc50"} <= set(m.summary())


def test_eval_scores_a_dior_rsvg_split_read_by_its_loader(trained_model_dir, tmp_path):
    from tests.data.fixtures import rsvg_files, write_dior_rsvg

    data = write_dior_rsvg(tmp_path / "rsvg", rsvg_files(), {"train": [0, 1], "test": [2, 3, 4]})
    out = tmp_path / "report"
    args = ["eval", str(trained_model_dir), "--kind", "dior_rsvg", "--data", str(data)]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"] == ["ground"]  # every task the data holds: grounding only
    assert metrics["grounding"]["overall"]["n"] == 3
    assert (out / "boxes.png").is_file() and "## Visual grounding" in (
        out / "report.md"
    ).read_text()
