"""Evaluation metrics: answer normalisation, VQA accuracy (RSVQA's AA / OA), classification.

Pure functions over plain records; numpy only, so they can be tested and reused without a model.
A VQA record is a mapping (or object) with ``pred``, ``answer``, ``qtype`` and ``level``; the
question-only prior also reads ``question``.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from geostrata.errors import InputError

DEFAULT_COUNT_BINS: tuple[int, ...] = (0, 10, 100, 1000)  # 0 | 1-10 | 11-100 | 101-1000 | >1000
DEFAULT_COUNT_TYPES: tuple[str, ...] = ("count",)

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
# "no" stays a word (it answers yes/no questions); "none" answers "how many" with 0.
_NUMBER_WORDS = {**{w: i for i, w in enumerate(_UNITS)}, **_TENS, "none": 0}
_ARTICLES = {"a", "an", "the"}
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_PUNCT = re.compile(r"[^\w\s.]|_|(?<!\d)\.|\.(?!\d)")


def normalize_answer(text: object) -> str:
    """Canonical form for exact-match scoring.

    Lowercase; "1,000" -> "1000"; punctuation dropped (a decimal point between digits is kept);
    articles removed; number words -> digits ("three" -> "3", "twenty one" -> "21",
    "none" -> "0"); whitespace collapsed. ``"Yes."`` and ``"yes"`` compare equal.
    """
    s = str(text).lower().strip()
    s = _DIGIT_COMMA.sub("", s)
    s = s.replace("'", "").replace("\u2019", "")  # "don't" -> "dont", not "don t"
    s = _PUNCT.sub(" ", s)
    words = [w for w in s.split() if w not in _ARTICLES]
    return " ".join(_numbers_to_digits(words))


def _numbers_to_digits(words: list[str]) -> list[str]:
    out: list[str] = []
    for word in words:
        value = _NUMBER_WORDS.get(word)
        if value is None:
            out.append(word)
        elif out and 0 < value < 10 and _is_tens(out[-1]):
            out[-1] = str(int(out[-1]) + value)  # "twenty" "one" -> "21"
        else:
            out.append(str(value))
    return out


def _is_tens(token: str) -> bool:
    return token.isdigit() and int(token) in _TENS.values()


def parse_number(text: object) -> float | None:
    """The number a normalised answer states, or None ("12" -> 12.0, "about 12" -> None)."""
    s = normalize_answer(text)
    try:
        value = float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass
class GroupAccuracy:
    """Exact-match accuracy of one group (a question type, a level, ...)."""

    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def to_dict(self) -> dict[str, float]:
        return {"correct": self.correct, "total": self.total, "accuracy": self.accuracy}


@dataclass
class CountBinAccuracy:
    """Counting questions whose true count falls in one bin.

    ``exact`` needs the same number; ``binned`` only the same bin (RSVQA's quantised counting).
    """

    label: str
    total: int
    exact_correct: int
    binned_correct: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exact_accuracy"] = self.exact_correct / self.total if self.total else float("nan")
        d["binned_accuracy"] = self.binned_correct / self.total if self.total else float("nan")
        return d


@dataclass
class VQAMetrics:
    """RSVQA-style scores: OA over all questions, AA = mean of the per-type accuracies."""

    overall_accuracy: float
    average_accuracy: float
    n: int
    per_type: dict[str, GroupAccuracy]
    per_level: dict[str, GroupAccuracy]
    count_bins: list[CountBinAccuracy] = field(default_factory=list)
    prior: VQAMetrics | None = None  # the question-only baseline on the same questions

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall_accuracy": self.overall_accuracy,
            "average_accuracy": self.average_accuracy,
            "n": self.n,
            "per_type": {k: v.to_dict() for k, v in self.per_type.items()},
            "per_level": {k: v.to_dict() for k, v in self.per_level.items()},
            "count_bins": [b.to_dict() for b in self.count_bins],
            "prior": self.prior.to_dict() if self.prior is not None else None,
        }


def _get(record: Any, name: str) -> Any:
    if isinstance(record, Mapping):
        if name not in record:
            raise InputError(f"VQA record has no {name!r} field: {dict(record)!r}")
        return record[name]
    if not hasattr(record, name):
        raise InputError(f"VQA record has no {name!r} attribute: {record!r}")
    return getattr(record, name)


def vqa_accuracy(
    records: Iterable[Any],
    *,
    count_types: Sequence[str] = DEFAULT_COUNT_TYPES,
    count_bins: Sequence[float] = DEFAULT_COUNT_BINS,
    train_records: Iterable[Any] | None = None,
) -> VQAMetrics:
    """Exact match after :func:`normalize_answer`, per type, per level and per count bin.

    ``count_bins`` are increasing upper edges: (0, 10, 100, 1000) gives the RSVQA bins 0, 1-10,
    11-100, 101-1000, >1000. Records with ``level`` None are left out of ``per_level`` only.
    With ``train_records``, the question-only prior is computed on the same questions and
    attached as ``.prior``.
    """
    records = list(records)
    if not records:
        raise InputError("vqa_accuracy needs at least one record")
    per_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_level: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for rec in records:
        hit = int(normalize_answer(_get(rec, "pred")) == normalize_answer(_get(rec, "answer")))
        for groups, key in ((per_type, _get(rec, "qtype")), (per_level, _get(rec, "level"))):
            if key is not None:
                groups[str(key)][0] += hit
                groups[str(key)][1] += 1
    types = {k: GroupAccuracy(*v) for k, v in sorted(per_type.items())}
    correct = sum(g.correct for g in types.values())
    prior = None
    if train_records is not None:
        prior = question_prior_accuracy(train_records, records, count_types=count_types,
                                        count_bins=count_bins)
    return VQAMetrics(
        overall_accuracy=correct / len(records),
        average_accuracy=float(np.mean([g.accuracy for g in types.values()])),
        n=len(records),
        per_type=types,
        per_level={k: GroupAccuracy(*v) for k, v in sorted(per_level.items())},
        count_bins=_count_bins(records, count_types, count_bins),
        prior=prior,
    )


def count_bin_labels(edges: Sequence[float]) -> list[str]:
    """Readable names of the bins that ``edges`` define, e.g. ["0", "1-10", ..., ">1000"]."""
    edges = list(edges)
    if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise InputError(f"count bin edges must be a non-empty increasing sequence, got {edges}")
    labels = [f"{edges[0]:g}" if edges[0] == 0 else f"<={edges[0]:g}"]
    labels += [f"{lo + 1:g}-{hi:g}" for lo, hi in zip(edges, edges[1:], strict=False)]
    return labels + [f">{edges[-1]:g}"]


def count_bin_index(value: float, edges: Sequence[float]) -> int:
    """Index of the bin (upper edges inclusive) holding ``value``."""
    return int(np.searchsorted(np.asarray(edges, dtype=float), value, side="left"))


def _count_bins(
    records: list[Any], count_types: Sequence[str], edges: Sequence[float]
) -> list[CountBinAccuracy]:
    labels = count_bin_labels(edges)
    bins = [CountBinAccuracy(label, 0, 0, 0) for label in labels]
    for rec in records:
        truth = parse_number(_get(rec, "answer"))
        if str(_get(rec, "qtype")) not in count_types or truth is None:
            continue
        pred = parse_number(_get(rec, "pred"))
        b = bins[count_bin_index(truth, edges)]
        b.total += 1
        b.exact_correct += int(pred == truth)
        b.binned_correct += int(pred is not None and count_bin_index(pred, edges) ==
                                count_bin_index(truth, edges))
    return [b for b in bins if b.total]


def question_prior_predictions(
    train_records: Iterable[Any], test_records: Iterable[Any]
) -> list[str]:
    """The question-only baseline: for each test question, the most frequent training answer
    to the same normalised question text; else the most frequent answer of its type; else the
    most frequent answer overall. Ties go to the answer seen first."""
    by_question: dict[str, Counter[str]] = defaultdict(Counter)
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    overall: Counter[str] = Counter()
    for rec in train_records:
        answer = normalize_answer(_get(rec, "answer"))
        by_question[normalize_answer(_get(rec, "question"))][answer] += 1
        by_type[str(_get(rec, "qtype"))][answer] += 1
        overall[answer] += 1
    if not overall:
        raise InputError("question_prior_accuracy needs at least one training record")
    predictions = []
    for rec in test_records:
        counter = (by_question.get(normalize_answer(_get(rec, "question")))
                   or by_type.get(str(_get(rec, "qtype"))) or overall)
        predictions.append(counter.most_common(1)[0][0])
    return predictions


def question_prior_accuracy(
    train_records: Iterable[Any],
    test_records: Iterable[Any],
    *,
    count_types: Sequence[str] = DEFAULT_COUNT_TYPES,
    count_bins: Sequence[float] = DEFAULT_COUNT_BINS,
) -> VQAMetrics:
    """:func:`vqa_accuracy` of the question-only baseline; what a model scores without looking
    at the image, to be reported beside it."""
    test_records = list(test_records)
    predictions = question_prior_predictions(train_records, test_records)
    scored = [
        {"pred": p, **{k: _get(r, k) for k in ("answer", "qtype", "level")}}
        for p, r in zip(predictions, test_records, strict=True)
    ]
    return vqa_accuracy(scored, count_types=count_types, count_bins=count_bins)


@dataclass
class ClassificationMetrics:
    """Scene classification scores; ``confusion[i, j]`` counts true ``classes[i]`` predicted as
    ``classes[j]``. Predictions outside ``classes`` count as wrong, are left out of the matrix,
    and are tallied in ``unknown_predictions``."""

    classes: list[str]
    overall_accuracy: float
    per_class_accuracy: dict[str, float]  # recall; nan for a class with no test samples
    mean_per_class_accuracy: float  # over classes that have test samples
    support: dict[str, int]
    confusion: np.ndarray  # (C, C) int64
    n: int
    n_unknown: int
    unknown_predictions: dict[str, int]  # unknown label -> how often it was predicted

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["confusion"] = self.confusion.tolist()
        return d


def classification_metrics(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], classes: Sequence[Hashable]
) -> ClassificationMetrics:
    """Overall and per-class accuracy plus the confusion matrix, labels compared as given."""
    if len(y_true) != len(y_pred):
        raise InputError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if not y_true:
        raise InputError("classification_metrics needs at least one sample")
    index = {c: i for i, c in enumerate(classes)}
    if len(index) != len(classes):
        raise InputError(f"classes contains duplicates: {list(classes)}")
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    unknown: Counter[str] = Counter()
    for t, p in zip(y_true, y_pred, strict=True):
        if t not in index:
            raise InputError(f"true label {t!r} is not one of the {len(classes)} classes")
        if p in index:
            confusion[index[t], index[p]] += 1
        else:
            unknown[str(p)] += 1
    support = np.bincount([index[t] for t in y_true], minlength=len(classes))  # (C,)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diag(confusion) / support  # (C,), nan where support == 0
    names = [str(c) for c in classes]
    return ClassificationMetrics(
        classes=names,
        overall_accuracy=float(np.trace(confusion) / len(y_true)),
        per_class_accuracy={n: float(r) for n, r in zip(names, recall, strict=True)},
        mean_per_class_accuracy=float(np.nanmean(recall)),
        support={n: int(s) for n, s in zip(names, support, strict=True)},
        confusion=confusion,
        n=len(y_true),
        n_unknown=sum(unknown.values()),
        unknown_predictions=dict(unknown.most_common()),
    )
