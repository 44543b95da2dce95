"""Run a trained model over evaluation records: free-form VQA answers and scene classification.

Scene classification is reported two ways: closed-set scoring (the summed log-probability of each
class name given image and question, argmax) and free generation mapped to a class through the
knowledge base's names and synonyms (an answer that maps to no class counts as wrong).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from geostrata.errors import KnowledgeBaseError
from geostrata.evaluate.metrics import (
    ClassificationMetrics,
    VQAMetrics,
    classification_metrics,
    normalize_answer,
    question_prior_accuracy,
    vqa_accuracy,
)
from geostrata.evaluate.sharding import sharded_map
from geostrata.evaluate.tasks import token_budget
from geostrata.session.samples import SCENE_QUESTION, scene_answer

Collate = Callable[[Sequence[dict[str, Any]]], dict[str, Any]]


@dataclass
class VQAEvaluation:
    metrics: VQAMetrics  # .prior holds the question-only baseline, so image use is visible
    predictions: list[dict[str, Any]]  # each record with its "pred"


@dataclass
class SceneEvaluation:
    closed_set: ClassificationMetrics
    generation: ClassificationMetrics
    classes: list[str]
    images: list[str] = field(default_factory=list)  # per image, in order:
    labels: list[str] = field(default_factory=list)  # the true class,
    closed_pred: list[str] = field(default_factory=list)  # the closed-set choice,
    generated_pred: list[str] = field(default_factory=list)  # the generated answer's class


def _batches(records: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def _model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    keys = (
        "input_ids",
        "attention_mask",
        "pixel_values",
        "features",
        "question_embeds",
        "cue_mask",
    )
    return {k: batch[k].to(device) for k in keys if k in batch}


@torch.no_grad()
def generate_answers(
    model: Any,
    tokenizer: Any,
    collate: Collate,
    records: Sequence[dict[str, Any]],
    batch_size: int = 64,
    max_new_tokens: int = 8,
    show_progress: bool = True,
    description: str = "Answering",
) -> list[str]:
    """Greedy answers for `records` (collate must build prompts without answers); sharded over
    the process group when there is one."""
    from rich.progress import track

    model.eval()
    device = next(model.parameters()).device

    def run(share: Sequence[dict[str, Any]]) -> list[str]:
        answers: list[str] = []
        for chunk in track(
            _batches(share, batch_size), description=description, disable=not show_progress
        ):
            new_ids = model.generate(
                **_model_inputs(collate(chunk), device), max_new_tokens=max_new_tokens
            )
            answers += [
                a.strip() for a in tokenizer.batch_decode(new_ids, skip_special_tokens=True)
            ]
        return answers

    return sharded_map(run, records)


def answer_records(
    model: Any,
    tokenizer: Any,
    collate: Collate,
    records: Sequence[dict[str, Any]],
    task: str,
    batch_size: int = 64,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Each record of `task` with its greedy answer as "pred" (the task's token budget)."""
    preds = generate_answers(
        model,
        tokenizer,
        collate,
        records,
        batch_size,
        token_budget(task, records, tokenizer),
        show_progress,
        description=f"Answering ({task})",
    )
    return [{**r, "pred": p} for r, p in zip(records, preds, strict=True)]


def evaluate_vqa(
    model: Any,
    tokenizer: Any,
    collate: Collate,
    records: Sequence[dict[str, Any]],
    train_records: Sequence[dict[str, Any]],
    batch_size: int = 64,
    show_progress: bool = True,
) -> VQAEvaluation:
    """Exact match after normalisation, per type and level, AA/OA, beside the question prior."""
    rows = answer_records(model, tokenizer, collate, records, "vqa", batch_size, show_progress)
    metrics = vqa_accuracy(rows)
    metrics.prior = question_prior_accuracy(list(train_records), list(records))
    return VQAEvaluation(metrics, rows)


@torch.no_grad()
def evaluate_scenes(
    model: Any,
    processor: Any,
    collate: Collate,
    images: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    knowledge: Any = None,
    dataset: str | None = None,
    batch_size: int = 64,
    show_progress: bool = True,
) -> SceneEvaluation:
    """Scene classification of `images` (paths) with true `labels`, both ways; `processor`
    (GeoStrataProcessor) tokenises the class names and decodes the generated answers."""
    records = [{"image_path": p, "question": SCENE_QUESTION, "answer": ""} for p in images]
    candidates = [processor.answer_ids(scene_answer(c)) for c in classes]
    device = next(model.parameters()).device
    model.eval()

    def score(share: Sequence[dict[str, Any]]) -> list[str]:
        best: list[str] = []
        for chunk in _batches(share, batch_size):
            scores = model.score_candidates(_model_inputs(collate(chunk), device), candidates)
            best += [classes[i] for i in scores.argmax(dim=1).tolist()]
        return best

    closed = sharded_map(score, records)
    texts = generate_answers(
        model,
        processor.tokenizer,
        collate,
        records,
        batch_size,
        show_progress=show_progress,
        description="Classifying scenes",
    )
    mapper = ClassMapper(classes, knowledge, dataset)
    generated = [mapper(t) for t in texts]
    return SceneEvaluation(
        classification_metrics(list(labels), closed, list(classes)),
        classification_metrics(list(labels), generated, list(classes)),
        list(classes),
        list(images),
        list(labels),
        closed,
        generated,
    )


class ClassMapper:
    """Maps a free-form answer to a class: exact name first, then the knowledge base's synonyms."""

    def __init__(
        self, classes: Sequence[str], knowledge: Any = None, dataset: str | None = None
    ) -> None:
        self.by_name = {normalize_answer(scene_answer(c)): c for c in classes}
        self.by_entry: dict[str, str] = {}
        self.knowledge, self.dataset = knowledge, dataset
        if knowledge is not None:
            for c in classes:
                try:
                    self.by_entry[knowledge.resolve(c, dataset)] = c
                except KnowledgeBaseError:
                    continue

    def __call__(self, text: str) -> str:
        key = normalize_answer(text)
        if key in self.by_name:
            return self.by_name[key]
        if self.knowledge is None or not key:
            return text
        try:
            return self.by_entry.get(self.knowledge.resolve(key), text)
        except KnowledgeBaseError:
            return text


@torch.no_grad()
def retrieval_hits(
    model: Any,
    collate: Collate,
    images: Sequence[str],
    truths: dict[str, Any],
    knowledge: Any,
    dataset: str | None,
    batch_size: int = 64,
) -> dict[str, dict[str, bool]]:
    """Per level and image, whether the retrieved top-k cues contain the image's dominant true
    entry (its scene; its largest land cover; its most frequent object class). Shows whether
    the Semantic Augmentation Module retrieves relevant knowledge, not only whether answers are
    right; `hit_rates` sums it up."""
    truth_ids = {p: _dominant_entries(truths[p], knowledge, dataset) for p in images}
    records = [{"image_path": p, "question": SCENE_QUESTION, "answer": ""} for p in images]
    device = next(model.parameters()).device
    hits: dict[str, dict[str, bool]] = {}
    model.eval()
    for chunk in _batches(records, batch_size):
        out = model(**_model_inputs(collate(chunk), device))
        for level, found in (out.retrieved or {}).items():
            for record, top in zip(chunk, found.ids, strict=True):
                wanted = truth_ids[record["image_path"]].get(level)
                if wanted is not None:
                    hits.setdefault(level, {})[record["image_path"]] = wanted in top
    return hits


def hit_rates(
    hits: dict[str, dict[str, bool]], images: Sequence[str] | None = None
) -> dict[str, float]:
    """level -> share of `images` (default: all) whose cues held the true entry."""
    out = {}
    for level, rows in hits.items():
        values = [rows[p] for p in (images if images is not None else rows) if p in rows]
        if values:
            out[level] = sum(values) / len(values)
    return out


def _dominant_entries(truth: Any, knowledge: Any, dataset: str | None) -> dict[str, str]:
    """level -> entry id of the truth's dominant class at that level (where known)."""
    from collections import Counter

    names = {
        "scene": truth.scene,
        "region": max(truth.regions, key=truth.regions.get) if truth.regions else None,
        "object": Counter(truth.objects).most_common(1)[0][0] if truth.objects else None,
    }
    out = {}
    for level, name in names.items():
        if name:
            try:
                out[level] = knowledge.resolve(name, dataset, level)  # a land-cover class
            except KnowledgeBaseError:  # label has no entry at this level: no scene truth there
                continue
    return out
