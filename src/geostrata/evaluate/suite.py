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
from geostrata.evaluate.consistency import ConsistencyMetrics, consistency_metrics
from geostrata.evaluate.metrics import VQAMetrics
from geostrata.evaluate.report import (
    plot_confusion,
    plot_loss_curves,
    plot_per_type,
    plot_router,
    write_metrics_json,
    write_report_md,
)
from geostrata.evaluate.routing import RouterMetrics, router_metrics
from geostrata.evaluate.runner import (
    ClassMapper,
    SceneEvaluation,
    evaluate_scenes,
    evaluate_vqa,
    hit_rates,
    retrieval_hits,
    unique_images,
)
from geostrata.evaluate.zeroshot import ZeroShotMetrics, zero_shot_metrics

NOT_VQA = ("caption", "instruct")  # free-text turns: no exact-match accuracy


@dataclass
class RunMetrics:
    vqa: VQAMetrics | None
    scenes: SceneEvaluation | None
    retrieval: dict[str, float]  # level -> top-k hit rate of the dominant true entry
    report: Path
    metrics_path: Path
    router: RouterMetrics | None = None
    zeroshot: ZeroShotMetrics | None = None
    consistency: ConsistencyMetrics | None = None

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
        if self.router is not None and self.router.accuracy is not None:
            out["router_accuracy"] = self.router.accuracy
        if self.consistency is not None:
            out |= _present({
                "all_levels_correct": self.consistency.all_levels_correct,
                "contradiction_rate": self.consistency.contradiction_rate,
            })  # fmt: skip
        return out | (_zero_shot_summary(self.zeroshot) if self.zeroshot else {})


def _present(values: dict[str, float | None]) -> dict[str, float]:
    return {k: v for k, v in values.items() if v is not None}


def _zero_shot_summary(z: ZeroShotMetrics) -> dict[str, float]:
    parts = {
        "scene_open": z.scene_open,
        "scene_generated": z.scene_generated,
        "scene_closed": z.scene_closed,
        "presence": z.presence,
        "retrieval_scene": z.scene_retrieval,
    }
    out: dict[str, float | None] = {}
    for name, m in parts.items():
        if m is not None:
            out[f"{name}_seen"], out[f"{name}_unseen"] = m.seen, m.unseen
    return _present(out)


def evaluate_session(session: Any, out_dir: str | Path, show_progress: bool = True) -> RunMetrics:
    """Run every evaluation for `session` and write its artefacts into `out_dir` (rank 0)."""
    out = Path(out_dir)
    task, batch = session.task, session.cfg.eval_batch_size
    show_progress = show_progress and is_main_process()
    vqa_records = [r for r in task.eval if r["qtype"] not in NOT_VQA]
    result = (
        evaluate_vqa(
            session.model,
            session.processor.tokenizer,
            session.collator(False),
            vqa_records,
            task.train,
            batch,
            show_progress,
        )
        if vqa_records
        else None
    )
    rows = result.predictions if result else []
    scenes = _scene_eval(session, batch, show_progress)
    hits = _retrieval_eval(session, batch)
    metrics = RunMetrics(
        result.metrics if result else None,
        scenes,
        hit_rates(hits),
        out / "report.md",
        out / "metrics.json",
        router_metrics(session.model, session.processor.question_encoder, vqa_records),
        zero_shot_metrics(task.unseen, rows, task.truths, scenes, hits),
        _consistency_eval(session, rows),
    )
    if is_main_process():  # every rank computed (sharded); only rank 0 writes
        _write_artefacts(session, out, metrics, rows)
    return metrics


def _write_artefacts(session: Any, out: Path, m: RunMetrics, rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        _write_predictions(out / "predictions.jsonl", rows)
    sections: dict[str, Any] = {"Run": _run_text(session)}
    if m.vqa is not None:
        sections["Visual question answering"] = m.vqa
        plot_per_type({"GeoStrata": m.vqa}, out / "per_type.png")
    if m.scenes is not None:
        sections["Scene classification (closed-set scoring)"] = m.scenes.closed_set
        sections["Scene classification (free generation)"] = m.scenes.generation
        plot_confusion(m.scenes.closed_set.confusion, m.scenes.classes, out / "confusion.png")
    if m.zeroshot is not None:
        sections["Seen and unseen classes"] = m.zeroshot.markdown()
    if m.router is not None:
        sections["Routing by semantic level"] = m.router.markdown() + "\n![router](router.png)\n"
        plot_router(m.router, out / "router.png")
    if m.consistency is not None:
        sections["Multi-level consistency"] = m.consistency.markdown()
    _plot_losses(session, out)
    if m.retrieval:
        sections["Retrieved knowledge"] = _retrieval_text(m.retrieval, session.model.config.top_k)
    write_metrics_json(m.metrics_path, _metrics_json(m))
    write_report_md(m.report, sections)


def _metrics_json(m: RunMetrics) -> dict[str, Any]:
    def plain(x: Any) -> Any:
        return x.to_dict() if x is not None else None

    return {
        "vqa": plain(m.vqa),
        "retrieval_hit_at_k": m.retrieval,
        "scene_closed_set": plain(m.scenes.closed_set if m.scenes else None),
        "scene_generation": plain(m.scenes.generation if m.scenes else None),
        "zero_shot": plain(m.zeroshot),
        "router": plain(m.router),
        "consistency": plain(m.consistency),
    }


def _consistency_eval(session: Any, rows: list[dict[str, Any]]) -> ConsistencyMetrics | None:
    task = session.task
    objects = task.labels.get("object", [])
    if not rows or not task.scene_classes or not objects:
        return None
    mapper = ClassMapper(task.scene_classes, session.knowledge, task.dataset)
    return consistency_metrics(rows, task.truths, objects, mapper)


def _retrieval_eval(session: Any, batch: int) -> dict[str, dict[str, bool]]:
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
