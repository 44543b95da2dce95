"""Report figures and files: valid, non-empty PNGs; strict JSON; markdown tables."""

import json

import numpy as np
import pytest
from PIL import Image

from geostrata.errors import InputError
from geostrata.evaluate import (
    classification_metrics,
    plot_confusion,
    plot_loss_curves,
    plot_per_type,
    vqa_accuracy,
    write_metrics_json,
    write_report_md,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, min_side=100):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert min(im.size) >= min_side
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 5  # something was drawn, not a blank canvas


def _vqa(seed, with_prior):
    rng = np.random.default_rng(seed)
    types, levels = ["presence", "count", "comp", "area"], ["scene", "region", "object"]
    records = []
    for i in range(40):
        answer = str(rng.integers(0, 3))
        pred = answer if rng.random() < 0.3 + 0.15 * (i % 4) else "x"
        records.append({"pred": pred, "answer": answer, "qtype": types[i % 4],
                        "level": levels[i % 3], "question": f"q{i % 5}"})
    train = [dict(r, question=f"q{i % 5}") for i, r in enumerate(records)] if with_prior else None
    return vqa_accuracy(records, train_records=train)


def test_plot_confusion(tmp_path):
    classes = ["airport", "bare land", "baseball field", "beach", "bridge"]
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 60)
    y_pred = np.where(rng.random(60) < 0.7, y_true, rng.integers(0, 5, 60))
    m = classification_metrics([classes[i] for i in y_true], [classes[i] for i in y_pred], classes)
    out = plot_confusion(m.confusion, classes, tmp_path / "figs" / "cm.png")
    _assert_png(out)
    with pytest.raises(InputError, match="shape"):
        plot_confusion(np.zeros((2, 2)), classes, tmp_path / "bad.png")


def test_plot_per_type_with_prior(tmp_path):
    runs = {"geostrata": _vqa(0, with_prior=True), "llava baseline": _vqa(1, with_prior=False)}
    _assert_png(plot_per_type(runs, tmp_path / "per_type.png"))
    with pytest.raises(InputError):
        plot_per_type({}, tmp_path / "empty.png")


def test_plot_loss_curves(tmp_path):
    paths = []
    for run, scale in (("run_a", 1.0), ("run_b", 0.5)):
        (tmp_path / run).mkdir()
        path = tmp_path / run / "history.jsonl"
        lines = [json.dumps({"step": s, "loss": scale * 3 / s, "align_loss": 0.1 / s})
                 for s in range(1, 30)]
        path.write_text("\n".join(lines) + "\n{\"step\": 30, \"lo")  # a line cut by a kill
        paths.append(path)
    _assert_png(plot_loss_curves(paths, tmp_path / "loss.png"))
    with pytest.raises(InputError, match="does not exist"):
        plot_loss_curves([tmp_path / "nope.jsonl"], tmp_path / "x.png")


def test_write_metrics_json_is_strict_and_atomic(tmp_path):
    cls = classification_metrics(["a", "a"], ["a", "b"], ["a", "b"])  # class b has no samples
    path = write_metrics_json(tmp_path / "out" / "metrics.json",
                              {"vqa": _vqa(0, True), "cls": cls, "n": np.int64(3)})
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert data["cls"]["per_class_accuracy"]["b"] is None
    assert data["cls"]["confusion"] == [[1, 1], [0, 0]] and data["n"] == 3
    assert data["vqa"]["prior"]["n"] == 40
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_write_report_md(tmp_path):
    vqa = _vqa(0, with_prior=True)
    cls = classification_metrics(["a", "b", "b"], ["a", "b", "zebra"], ["a", "b"])
    text = write_report_md(tmp_path / "report.md", {
        "RSVQA-LR (synthetic)": vqa, "Scene classification": cls, "Notes": "Tiny run."
    }).read_text()
    assert "## RSVQA-LR (synthetic)" in text and "Tiny run." in text
    aa_row = next(line for line in text.splitlines() if line.startswith("| AA"))
    assert f"{100 * vqa.average_accuracy:.1f}" in aa_row
    assert f"{100 * vqa.prior.average_accuracy:.1f}" in aa_row
    for t, g in vqa.per_type.items():
        assert f"| {t} | {g.total} | {100 * g.accuracy:.1f} |" in text
    assert "### Per semantic level" in text and "`zebra` (1)" in text
    with pytest.raises(InputError, match="unsupported"):
        write_report_md(tmp_path / "bad.md", {"x": 3})


def test_plot_boxes_draws_the_true_box_green_and_the_predicted_box_red(tmp_path):
    from geostrata.boxes import Box
    from geostrata.evaluate.report import BoxExample, plot_boxes

    gray = np.full((96, 96, 3), 128, dtype=np.uint8)
    examples = [
        BoxExample(gray, Box(10, 10, 60, 60), Box(30, 30, 90, 90), "the field (IoU 0.2)"),
        BoxExample(gray.copy(), Box(5, 5, 20, 20), None, "a car (no box in the answer)"),
    ]
    path = plot_boxes(examples, tmp_path / "boxes.png")
    _assert_png(path)
    figure = np.asarray(Image.open(path).convert("RGB")).astype(int)
    r, g, b = figure[..., 0], figure[..., 1], figure[..., 2]
    green = (g > 150) & (r < 80) & (b < 80)
    red = (r > 150) & (g < 80) & (b < 80)
    assert green.sum() > 100 and red.sum() > 100
    assert not np.any(examples[0].image != 128)  # the examples' images are left as they were
    # the red box is in the left panel only: the second answer held no box
    assert red[:, figure.shape[1] // 2 :].sum() == 0
    with pytest.raises(InputError, match="at least one"):
        plot_boxes([], tmp_path / "none.png")


def test_examples_markdown_escapes_table_cells():
    from geostrata.evaluate.report import examples_markdown

    rows = [{"question": "Describe.", "pred": "a | b", "answer": "x", "references": ["r1", "r2"]},
            {"question": "Describe.", "pred": "", "answer": "only"}]  # fmt: skip
    text = examples_markdown(rows)
    assert "| Describe. | a \\| b | r1<br>r2 |" in text
    assert "| Describe. | (empty) | only |" in text
