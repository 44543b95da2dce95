"""Evaluate a session's model on its evaluation split and write metrics.json, report.md and plots.

VQA: exact match after normalisation, per question type and semantic level, AA and OA, beside the
question-only prior. Scene classification (where the data set has scene labels): closed-set
scoring and free generation, overall and per class, with confusion matrices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geostrata.atomic import write_text_atomic
from geostrata.device import is_main_process
from geostrata.evaluate.metrics import VQAMetrics
from geostrata.evaluate.report import (
    plot_confusion,
    plot_loss_curves,
    plot_per_type,
    write_metrics_json,
    write_report_md,
)
from geostrata.evaluate.runner import (
    SceneEvaluation,
    evaluate_scenes,
    evaluate_vqa,
    retrieval_hits,
    unique_images,
)

NOT_VQA = ("caption", "instruct")  # free-text turns: no exact-match accuracy


@dataclass
class RunMetrics:
    vqa: VQAMetrics | None
    scenes: SceneEvaluation | None
    retrieval: dict[str, float]  # level -> top-k hit rate of the dominant true entry
    report: Path
    metrics_path: Path

    def summary(self) -> dict[str, float]:
        """The headline numbers, for tables and the CLI."""
        out: dict[str, float] = {}
        if self.vqa is not None:
            out |= {"vqa_oa": self.vqa.overall_accuracy, "vqa_aa": self.vqa.average_accuracy}
            if self.vqa.prior is not None:
                out |= {
                    "prior_oa": self.vqa.prior.overall_accuracy,
                    "prior_aa": self.vqa.prior.average_accuracy,
                }
            out |= {f"level_{k}": v.accuracy for k, v in self.vqa.per_level.items()}
            out |= {f"type_{k}": v.accuracy for k, v in self.vqa.per_type.items()}
        if self.scenes is not None:
            out |= {
                "scene_closed": self.scenes.closed_set.overall_accuracy,
                "scene_generated": self.scenes.generation.overall_accuracy,
            }
        out |= {f"retrieval_{k}": v for k, v in self.retrieval.items()}
        return out


def evaluate_session(session: Any, out_dir: str | Path, show_progress: bool = True) -> RunMetrics:
    """Run VQA and scene evaluation for `session` and write every artefact into `out_dir`."""
    out = Path(out_dir)
    task, model, tok = session.task, session.model, session.processor.tokenizer
    batch = session.cfg.eval_batch_size
    show_progress = show_progress and is_main_process()
    vqa_records = [r for r in task.eval if r["qtype"] not in NOT_VQA]
    result = (
        evaluate_vqa(
            model, tok, session.collator(False), vqa_records, task.train, batch, show_progress
        )
        if vqa_records
        else None
    )
    scenes = _scene_eval(session, batch, show_progress)
    retrieval = _retrieval_eval(session, batch)
    vqa = result.metrics if result else None
    if not is_main_process():  # every rank computed (sharded); only rank 0 writes
        return RunMetrics(vqa, scenes, retrieval, out / "report.md", out / "metrics.json")
    out.mkdir(parents=True, exist_ok=True)
    if result is not None:
        _write_predictions(out / "predictions.jsonl", result.predictions)
    sections: dict[str, Any] = {"Run": _run_text(session)}
    if vqa is not None:
        sections["Visual question answering"] = vqa
        plot_per_type({"GeoStrata": vqa}, out / "per_type.png")
    if scenes is not None:
        sections["Scene classification (closed-set scoring)"] = scenes.closed_set
        sections["Scene classification (free generation)"] = scenes.generation
        plot_confusion(scenes.closed_set.confusion, scenes.classes, out / "confusion.png")
    _plot_losses(session, out)
    if retrieval:
        sections["Retrieved knowledge"] = _retrieval_text(retrieval, session.model.config.top_k)
    metrics = {
        "vqa": vqa.to_dict() if vqa else None,
        "retrieval_hit_at_k": retrieval,
        "scene_closed_set": scenes.closed_set.to_dict() if scenes else None,
        "scene_generation": scenes.generation.to_dict() if scenes else None,
    }
    metrics_path = write_metrics_json(out / "metrics.json", metrics)
    report = write_report_md(out / "report.md", sections)
    return RunMetrics(vqa, scenes, retrieval, report, metrics_path)


def _retrieval_eval(session: Any, batch: int) -> dict[str, float]:
    config = session.model.config
    if config.baseline == "llava" or not config.retrieval or config.top_k == 0:
        return {}
    images = [p for p in unique_images(session.task.eval) if p in session.task.truths]
    if not images:
        return {}
    return retrieval_hits(
        session.model,
        session.collator(False),
        images,
        session.task.truths,
        session.knowledge,
        session.task.dataset,
        batch,
    )


def _retrieval_text(hits: dict[str, float], k: int) -> str:
    rows = "\n".join(f"| {level} | {100 * rate:.1f} |" for level, rate in hits.items())
    return (
        "How often the top-{k} retrieved cues of each level contain the image's dominant true "
        "entry (scene label, largest land cover, most frequent object):\n\n"
        f"| level | hit@{k} (%) |\n|---|---|\n{rows}\n"
    ).replace("{k}", str(k))


def _scene_eval(session: Any, batch: int, show_progress: bool) -> SceneEvaluation | None:
    task = session.task
    if not task.scene_classes:
        return None
    images = [p for p in unique_images(task.eval) if p in task.truths and task.truths[p].scene]
    if not images:
        return None
    labels = [task.truths[p].scene for p in images]
    return evaluate_scenes(
        session.model,
        session.processor,
        session.collator(False),
        images,
        labels,
        task.scene_classes,
        session.knowledge,
        task.dataset,
        batch,
        show_progress,
    )


def _plot_losses(session: Any, out: Path) -> None:
    root = Path(session.cfg.output_dir)
    histories = [
        p
        for p in (root / "stage1" / "history.jsonl", root / "stage2" / "history.jsonl")
        if p.is_file()
    ]
    if histories:
        plot_loss_curves(histories, out / "loss.png")


def _run_text(session: Any) -> str:
    cfg = session.cfg
    return (
        f"Preset `{cfg.preset}`, overrides `{cfg.model}`, data `{cfg.data.kind}` at "
        f"`{cfg.data.root}` ({len(session.task.train)} training / {len(session.task.eval)} "
        f"evaluation records), seed {cfg.seed}."
    )


def _write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomic: a kill mid-write leaves the previous file (or none), never a cut one."""
    lines = (json.dumps({k: v for k, v in row.items() if k != "image"}) + "\n" for row in rows)
    write_text_atomic(path, "".join(lines))
