"""Figures and files that present evaluation results: confusion matrix, per-type bars, loss
curves, true vs predicted boxes, metrics JSON and a markdown report.

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas, so nothing touches
pyplot's global state or needs a display. Every file is written atomically (temp + rename).
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geostrata.atomic import write_atomic, write_text_atomic
from geostrata.boxes import Box, draw_boxes
from geostrata.errors import CheckpointError, InputError
from geostrata.evaluate.metrics import ClassificationMetrics, GroupAccuracy, VQAMetrics
from geostrata.evaluate.routing import RouterMetrics
from geostrata.textio import read_jsonl

_MAX_ANNOTATED_CLASSES = 30  # beyond this, per-cell numbers are unreadable
TRUE_BOX_COLOR = (0, 200, 0)  # green
PRED_BOX_COLOR = (230, 20, 20)  # red


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Any, path: str | Path) -> Path:
    return write_atomic(path, lambda f: fig.savefig(f, format="png", bbox_inches="tight"))


def plot_confusion(
    cm: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Row-normalised colours (each true class sums to 1) with the raw counts written in."""
    cm = np.asarray(cm)
    n = len(classes)
    if cm.shape != (n, n):
        raise InputError(f"confusion matrix has shape {cm.shape} but there are {n} classes")
    rows = cm.sum(axis=1, keepdims=True)  # (C, 1)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)  # (C, C)
    side = max(4.0, 0.45 * n + 2.0)
    fig = _new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(n), labels=list(classes), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels=list(classes), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= _MAX_ANNOTATED_CLASSES:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    color = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                            color=color)
    return _save_figure(fig, path)


def plot_per_type(
    metrics_by_name: Mapping[str, VQAMetrics], path: str | Path, title: str = "Accuracy per type"
) -> Path:
    """Grouped bars: one group per question type (plus AA and OA), one bar per run; the
    question-only prior, when a run carries one, is the hatched bar of each group."""
    if not metrics_by_name:
        raise InputError("plot_per_type needs at least one run")
    types = sorted({t for m in metrics_by_name.values() for t in m.per_type})
    groups = [*types, "AA", "OA"]
    series = {name: _group_values(m, types) for name, m in metrics_by_name.items()}
    prior = next((m.prior for m in metrics_by_name.values() if m.prior is not None), None)
    n_bars = len(series) + (prior is not None)
    width = 0.8 / n_bars
    fig = _new_figure(max(6.0, 1.1 * len(groups) * max(1, n_bars) * 0.5 + 2.0), 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        ax.bar(x + (k - (n_bars - 1) / 2) * width, values, width, label=name)
    if prior is not None:
        ax.bar(x + (n_bars - 1) / 2 * width, _group_values(prior, types), width,
               label="question-only prior", hatch="//", facecolor="white", edgecolor="gray")
    ax.axvline(len(types) - 0.5, color="gray", linestyle="--", linewidth=0.8)  # types | AA, OA
    ax.set_xticks(x, labels=groups, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save_figure(fig, path)


def plot_router(router: RouterMetrics, path: str | Path) -> Path:
    """Stacked bars: the router's mean weight on each level's expert, per question type (the
    type's own level is named under its bar)."""
    types = sorted(router.per_type)
    fig = _new_figure(max(5.0, 0.9 * len(types) + 2.5), 4.0)
    ax = fig.add_subplot()
    bottom = np.zeros(len(types))
    for level in router.levels:
        values = np.array([router.per_type[t][level] for t in types])
        ax.bar(types, values, bottom=bottom, label=f"{level} expert")
        bottom += values
    labels = [f"{t}\n({router.type_level.get(t, '-')})" for t in types]
    ax.set_xticks(np.arange(len(types)), labels=labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean router weight")
    acc = "-" if router.accuracy is None else f"{100 * router.accuracy:.1f}%"
    ax.set_title(f"Routing per question type (router accuracy {acc})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save_figure(fig, path)


@dataclass
class BoxExample:
    """One grounding answer to show: the image, its true box, the predicted one (None when the
    answer held no box) and a title (the expression and the IoU)."""

    image: np.ndarray  # (H, W, 3) uint8
    truth: Box
    pred: Box | None
    title: str


def plot_boxes(
    examples: Sequence[BoxExample],
    path: str | Path,
    columns: int = 4,
    title: str = "Grounding: true (green) and predicted (red) boxes",
) -> Path:
    """A grid of images with the true box in green and the predicted box in red."""
    if not examples:
        raise InputError("plot_boxes needs at least one example")
    cols = min(columns, len(examples))
    rows = math.ceil(len(examples) / cols)
    fig = _new_figure(2.6 * cols, 2.9 * rows + 0.4)
    for i, ex in enumerate(examples):
        ax = fig.add_subplot(rows, cols, i + 1)
        line = max(2, round(min(ex.image.shape[:2]) / 64))
        drawn = draw_boxes(ex.image, [ex.truth], TRUE_BOX_COLOR, width=line)
        if ex.pred is not None:
            drawn = draw_boxes(drawn, [ex.pred], PRED_BOX_COLOR, width=line)
        ax.imshow(drawn)
        ax.set_axis_off()
        ax.set_title(textwrap.shorten(ex.title, 60), fontsize=7, wrap=True)
    fig.suptitle(title)
    return _save_figure(fig, path)


def examples_markdown(rows: Sequence[Mapping[str, Any]], k: int = 3) -> str:
    """The first `k` generated texts beside their references, as a table."""

    def cell(text: object) -> str:
        return " ".join(str(text).split()).replace("|", "\\|") or "(empty)"

    lines = ["| question | prediction | references |", "|---|---|---|"]
    for row in rows[:k]:
        refs = row.get("references") or [row.get("answer", "")]
        lines.append(
            f"| {cell(row['question'])} | {cell(row['pred'])} | "
            f"{'<br>'.join(cell(r) for r in refs)} |"
        )
    return "\n".join(lines) + "\n"


def _group_values(m: VQAMetrics, types: list[str]) -> list[float]:
    per_type = [m.per_type[t].accuracy if t in m.per_type else 0.0 for t in types]
    return [*per_type, m.average_accuracy, m.overall_accuracy]


def read_history(path: str | Path) -> list[dict[str, float]]:
    """The entries of a ``history.jsonl`` written by the training loop; bad lines are skipped."""
    rows = read_jsonl(path, CheckpointError, skip_bad=True)
    return [entry for _, entry in rows if isinstance(entry, dict) and "step" in entry]


def plot_loss_curves(
    history_jsonl_paths: Sequence[str | Path], path: str | Path, title: str = "Training loss"
) -> Path:
    """One panel per logged loss (``loss`` and every ``*_loss``), one line per run (named after
    the run's directory)."""
    runs = {}
    for p in history_jsonl_paths:
        p = Path(p)
        if not p.is_file():
            raise InputError(f"history file {p} does not exist")
        runs[_run_label(p, runs)] = read_history(p)
    keys = sorted({k for h in runs.values() for e in h for k in e if k.endswith("loss")},
                  key=lambda k: (k != "loss", k))
    if not keys:
        raise InputError(f"no loss entries in {list(map(str, history_jsonl_paths))}")
    fig = _new_figure(5.0 * len(keys), 3.8)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        for name, entries in runs.items():
            points = [(e["step"], e[key]) for e in entries if key in e]
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, label=name, linewidth=1.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save_figure(fig, path)


def _run_label(path: Path, taken: Mapping[str, Any]) -> str:
    """The run's directory name, lengthened with its parent when two runs share it."""
    label = path.parent.name or str(path)
    if label in taken:
        label = f"{path.parent.parent.name}/{label}"
    while label in taken:
        label += "'"
    return label


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_metrics_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Metrics (dataclasses with ``to_dict``, numpy values, plain data) as indented JSON.
    NaN (an empty group) is written as null so the file stays strict JSON."""
    plain = json.loads(json.dumps(dict(data), default=_jsonable))
    return write_text_atomic(path, json.dumps(_nan_to_none(plain), indent=2) + "\n")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def write_report_md(
    path: str | Path, sections: Mapping[str, VQAMetrics | ClassificationMetrics | str]
) -> Path:
    """A markdown report: one ``##`` section per entry; VQA metrics become per-type / per-level /
    count-bin tables with AA and OA (and the question-only prior beside each accuracy),
    classification metrics a summary and a per-class table, strings are kept as prose."""
    lines = ["# GeoStrata evaluation report", ""]
    for title, content in sections.items():
        lines += [f"## {title}", ""]
        if isinstance(content, VQAMetrics):
            lines += _vqa_markdown(content)
        elif isinstance(content, ClassificationMetrics):
            lines += _classification_markdown(content)
        elif isinstance(content, str):
            lines += [content, ""]
        else:
            kind = type(content).__name__
            raise InputError(f"report section {title!r} has unsupported type {kind}")
    return write_text_atomic(path, "\n".join(lines).rstrip() + "\n")


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def _group_table(
    header: str, groups: Mapping[str, GroupAccuracy], prior: Mapping[str, GroupAccuracy] | None
) -> list[str]:
    rows = [f"| {header} | n | accuracy (%) | prior (%) |", "|---|---:|---:|---:|"]
    for key, g in groups.items():
        p = prior.get(key) if prior is not None else None
        prior_acc = _pct(p.accuracy if p else None)
        rows.append(f"| {key} | {g.total} | {_pct(g.accuracy)} | {prior_acc} |")
    return [*rows, ""]


def _vqa_markdown(m: VQAMetrics) -> list[str]:
    p = m.prior
    prior_aa = _pct(p.average_accuracy if p else None)
    prior_oa = _pct(p.overall_accuracy if p else None)
    lines = [
        "| metric | model (%) | question-only prior (%) |",
        "|---|---:|---:|",
        f"| AA (mean of per-type) | {_pct(m.average_accuracy)} | {prior_aa} |",
        f"| OA (all {m.n} questions) | {_pct(m.overall_accuracy)} | {prior_oa} |",
        "",
        "### Per question type",
        "",
        *_group_table("type", m.per_type, p.per_type if p else None),
    ]
    if m.per_level:
        lines += ["### Per semantic level", "", *_group_table("level", m.per_level,
                                                               p.per_level if p else None)]
    if m.count_bins:
        lines += ["### Counting, by true count", "", "| bin | n | exact (%) | same bin (%) |",
                  "|---|---:|---:|---:|"]
        for b in m.count_bins:
            d = b.to_dict()
            lines.append(f"| {b.label} | {b.total} | {_pct(d['exact_accuracy'])} | "
                         f"{_pct(d['binned_accuracy'])} |")
        lines.append("")
    return lines


def _classification_markdown(m: ClassificationMetrics) -> list[str]:
    lines = [
        f"Overall accuracy: **{_pct(m.overall_accuracy)}%** over {m.n} images; mean per-class "
        f"accuracy: **{_pct(m.mean_per_class_accuracy)}%**.",
        "",
    ]
    if m.n_unknown:
        shown = ", ".join(f"`{k}` ({v})" for k, v in list(m.unknown_predictions.items())[:10])
        lines += [f"{m.n_unknown} predictions were not a known class (counted wrong): {shown}.", ""]
    lines += ["| class | n | accuracy (%) |", "|---|---:|---:|"]
    for name in m.classes:
        lines.append(f"| {name} | {m.support[name]} | {_pct(m.per_class_accuracy[name])} |")
    return [*lines, ""]
