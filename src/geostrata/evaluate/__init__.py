"""Evaluation: answer normalisation, VQA / classification metrics, figures and reports."""

from geostrata.evaluate.metrics import (
    ClassificationMetrics,
    CountBinAccuracy,
    GroupAccuracy,
    VQAMetrics,
    classification_metrics,
    normalize_answer,
    question_prior_accuracy,
    question_prior_predictions,
    vqa_accuracy,
)
from geostrata.evaluate.report import (
    plot_confusion,
    plot_loss_curves,
    plot_per_type,
    write_metrics_json,
    write_report_md,
)

__all__ = [
    "ClassificationMetrics",
    "CountBinAccuracy",
    "GroupAccuracy",
    "VQAMetrics",
    "classification_metrics",
    "normalize_answer",
    "plot_confusion",
    "plot_loss_curves",
    "plot_per_type",
    "question_prior_accuracy",
    "question_prior_predictions",
    "vqa_accuracy",
    "write_metrics_json",
    "write_report_md",
]
