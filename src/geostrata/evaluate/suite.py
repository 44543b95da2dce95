"""Evaluate a session's model on its evaluation split and write metrics.json, report.md and plots.

Every task the split holds is scored, or those asked for (evaluate/tasks.py): VQA by exact match
after normalisation, per question type and semantic level, AA and OA, beside the question-only
prior; scene classification (where the data set has scene labels) by closed-set scoring and free
generation, overall and per class, with confusion matrices; captions and region descriptions by
BLEU / METEOR / ROUGE-L / CIDEr against their references; grounding by Acc@0.5 / Acc@0.25 / mean
IoU, by object size, with a figure of true and predicted boxes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geostrata.atomic import write_text_atomic
from geostrata.boxes import Box
from geostrata.data.images import read_image
from geostrata.device import is_main_process
from geostrata.evaluate.captioning import CaptionMetrics, CaptionScorer, shared_scorer
from geostrata.evaluate.consistency import ConsistencyMetrics, consistency_metrics
from geostrata.evaluate.grounding import GroundingMetrics
from geostrata.evaluate.grounding import score_rows as score_grounding
from geostrata.evaluate.metrics import VQAMetrics
from geostrata.evaluate.report import (
    BoxExample,
    examples_markdown,
    plot_boxes,
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
    answer_records,
    evaluate_scenes,
    evaluate_vqa,
    hit_rates,
    retrieval_hits,
)
from geostrata.evaluate.tasks import (
    TEXT_TASKS,
    records_of,
    scene_images,
    select_tasks,
    tasks_in,
    unique_images,
)
from geostrata.evaluate.zeroshot import ZeroShotMetrics, zero_shot_metrics

BOX_FIGURE_EXAMPLES = 8  # grounding answers drawn in boxes.png


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
    # the generative tasks (scored on rank 0 only: METEOR is one Java process)
    captions: CaptionMetrics | None = None
    regions: CaptionMetrics | None = None
    grounding: GroundingMetrics | None = None
    tasks: list[str] = field(default_factory=list)  # the tasks evaluated

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
        out |= _caption_summary("caption", self.captions) | _caption_summary("region", self.regions)
        if self.grounding is not None:
            g = self.grounding
            out |= {
                "ground_acc50": g.overall.acc_50,
                "ground_acc25": g.overall.acc_25,
                "ground_miou": g.overall.mean_iou,
                "ground_unparseable": g.unparseable_rate,
            }
        return out | (self.zeroshot.summary() if self.zeroshot else {})


def _caption_summary(prefix: str, m: CaptionMetrics | None) -> dict[str, float]:
    if m is None:
        return {}
    return {f"{prefix}_bleu4": m.bleu_4, f"{prefix}_meteor": m.meteor,
            f"{prefix}_rouge_l": m.rouge_l, f"{prefix}_cider": m.cider}  # fmt: skip


def _present(values: dict[str, float | None]) -> dict[str, float]:
    return {k: v for k, v in values.items() if v is not None}


def evaluate_session(
    session: Any,
    out_dir: str | Path,
    show_progress: bool = True,
    tasks: Sequence[str] | None = None,
) -> RunMetrics:
    """Run the evaluations of `tasks` (default: every task the evaluation split holds, see
    evaluate/tasks.py) for `session` and write the artefacts into `out_dir` (rank 0)."""
    out = Path(out_dir)
    data, batch = session.task, session.cfg.eval_batch_size
    chosen = select_tasks(tasks, tasks_in(data))
    show_progress = show_progress and is_main_process()
    # METEOR's JVM loads for seconds: started first, it loads while the model answers
    wants_text = is_main_process() and any(t in chosen for t in TEXT_TASKS)
    scorer = shared_scorer() if wants_text else None
    metrics, rows = _evaluate(session, chosen, batch, show_progress, scorer, out)
    if is_main_process():  # every rank computed (sharded); only rank 0 writes
        _write_artefacts(session, out, metrics, rows)
    return metrics


def _evaluate(
    session: Any,
    chosen: list[str],
    batch: int,
    show_progress: bool,
    scorer: CaptionScorer | None,
    out: Path,
) -> tuple[RunMetrics, dict[str, list[dict[str, Any]]]]:
    data = session.task
    vqa_records = records_of(data.eval, "vqa") if "vqa" in chosen else []
    result = (
        evaluate_vqa(
            session.model,
            session.processor.tokenizer,
            session.collator(False),
            vqa_records,
            data.train,
            batch,
            show_progress,
        )
        if vqa_records
        else None
    )
    rows = {"vqa": result.predictions if result else []}
    scenes = _scene_eval(session, batch, show_progress) if "cls" in chosen else None
    hits = _retrieval_eval(session, batch) if {"vqa", "cls"} & set(chosen) else {}
    for name in ("caption", "region", "ground"):
        if name in chosen:
            rows[name] = _answer(session, name, batch, show_progress)
    text = {t: scorer.score_rows(rows[t]) for t in TEXT_TASKS if t in rows and scorer}
    metrics = RunMetrics(
        result.metrics if result else None,
        scenes,
        hit_rates(hits),
        out / "report.md",
        out / "metrics.json",
        router_metrics(session.model, session.processor.question_encoder, vqa_records),
        zero_shot_metrics(data.unseen, rows["vqa"], data.truths, scenes, hits)
        if {"vqa", "cls"} & set(chosen)
        else None,
        _consistency_eval(session, rows["vqa"]),
        text.get("caption"),
        text.get("region"),
        score_grounding(rows["ground"]) if "ground" in rows else None,
        chosen,
    )
    return metrics, rows


def _answer(session: Any, task: str, batch: int, show_progress: bool) -> list[dict[str, Any]]:
    return answer_records(
        session.model,
        session.processor.tokenizer,
        session.collator(False),
        records_of(session.task.eval, task),
        task,
        batch,
        show_progress,
    )


def _write_artefacts(
    session: Any, out: Path, m: RunMetrics, rows: dict[str, list[dict[str, Any]]]
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for task, task_rows in rows.items():  # predictions.jsonl: VQA; predictions_<task>.jsonl
        if task_rows:
            name = "predictions.jsonl" if task == "vqa" else f"predictions_{task}.jsonl"
            _write_predictions(out / name, task_rows)
    sections: dict[str, Any] = {"Run": _run_text(session, m.tasks)}
    if m.vqa is not None:
        sections["Visual question answering"] = m.vqa
        plot_per_type({"GeoStrata": m.vqa}, out / "per_type.png")
    if m.scenes is not None:
        sections["Scene classification (closed-set scoring)"] = m.scenes.closed_set
        sections["Scene classification (free generation)"] = m.scenes.generation
        plot_confusion(m.scenes.closed_set.confusion, m.scenes.classes, out / "confusion.png")
    if m.captions is not None:
        sections["Captioning"] = m.captions.markdown() + "\n" + examples_markdown(rows["caption"])
    if m.regions is not None:
        sections["Region description"] = (
            m.regions.markdown() + "\n" + examples_markdown(rows["region"])
        )
    if m.grounding is not None:
        plot_boxes(_box_examples(rows["ground"]), out / "boxes.png")
        sections["Visual grounding"] = m.grounding.markdown() + "\n![boxes](boxes.png)\n"
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


def _box_examples(rows: list[dict[str, Any]]) -> list[BoxExample]:
    """The first grounding answers, drawn on their images."""
    examples = []
    for row in rows[:BOX_FIGURE_EXAMPLES]:
        pred = Box.of(row["pred_box"]) if row["pred_box"] is not None else None
        label = row.get("expression") or row["question"]
        score = f"IoU {row['iou']:.2f}" if pred is not None else "no box in the answer"
        examples.append(
            BoxExample(
                read_image(row["image_path"]), Box.of(row["box"]), pred, f"{label} ({score})"
            )
        )
    return examples


def _metrics_json(m: RunMetrics) -> dict[str, Any]:
    def plain(x: Any) -> Any:
        return x.to_dict() if x is not None else None

    return {
        "tasks": m.tasks,
        "vqa": plain(m.vqa),
        "retrieval_hit_at_k": m.retrieval,
        "scene_closed_set": plain(m.scenes.closed_set if m.scenes else None),
        "scene_generation": plain(m.scenes.generation if m.scenes else None),
        "caption": plain(m.captions),
        "region": plain(m.regions),
        "grounding": plain(m.grounding),
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
    images = scene_images(task)
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


def _run_text(session: Any, tasks: list[str]) -> str:
    cfg = session.cfg
    return (
        f"Preset `{cfg.preset}`, overrides `{cfg.model}`, data `{cfg.data.kind}` at "
        f"`{cfg.data.root}` ({len(session.task.train)} training / {len(session.task.eval)} "
        f"evaluation records), seed {cfg.seed}. Tasks evaluated: {', '.join(tasks) or 'none'}."
    )


def _write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomic: a kill mid-write leaves the previous file (or none), never a cut one."""
    lines = (json.dumps({k: v for k, v in row.items() if k != "image"}) + "\n" for row in rows)
    write_text_atomic(path, "".join(lines))
