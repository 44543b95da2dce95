"""Grounding metrics: how well the boxes a model writes match the true boxes.

An answer's first box (`geostrata.boxes.parse_box`) is compared with the record's true box by
IoU. Acc@0.5 and Acc@0.25 are the shares of answers with IoU >= 0.5 and >= 0.25; mean IoU is
over all answers. An answer without a box is a miss (IoU 0) and is counted apart, so a model that
stops writing boxes is told from one that writes wrong ones. Every figure is given overall and by
the size of the true box (`geostrata.boxes.size_bucket`: small / medium / large).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from geostrata.boxes import BOX_SCALE, Box, iou, parse_box, size_bucket
from geostrata.errors import InputError

SIZES = ("small", "medium", "large")


@dataclass
class GroundingScores:
    """The scores of one group of answers."""

    n: int
    acc_50: float  # share with IoU >= 0.5
    acc_25: float  # share with IoU >= 0.25
    mean_iou: float

    @classmethod
    def of(cls, ious: Sequence[float]) -> GroundingScores:
        n = len(ious)
        return cls(
            n,
            sum(v >= 0.5 for v in ious) / n,
            sum(v >= 0.25 for v in ious) / n,
            sum(ious) / n,
        )


@dataclass
class GroundingMetrics:
    overall: GroundingScores
    per_size: dict[str, GroundingScores]  # by the true box's size; only sizes present
    n_unparseable: int  # answers without a box (counted as misses, IoU 0)
    ious: list[float] = field(default_factory=list)  # per answer, in order

    @property
    def unparseable_rate(self) -> float:
        return self.n_unparseable / self.overall.n

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": asdict(self.overall),
            "per_size": {k: asdict(v) for k, v in self.per_size.items()},
            "n_unparseable": self.n_unparseable,
            "unparseable_rate": self.unparseable_rate,
        }

    def markdown(self) -> str:
        rows = [("all", self.overall), *self.per_size.items()]
        lines = [
            f"{self.overall.n} referring expressions; {self.n_unparseable} answers "
            f"({100 * self.unparseable_rate:.1f}%) held no box and count as misses (IoU 0). "
            "Sizes by the true box's share of the image (small < 0.25%, large >= 2.25%).",
            "",
            "| objects | n | Acc@0.5 (%) | Acc@0.25 (%) | mean IoU (%) |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, s in rows:
            lines.append(
                f"| {name} | {s.n} | {100 * s.acc_50:.1f} | {100 * s.acc_25:.1f} | "
                f"{100 * s.mean_iou:.1f} |"
            )
        return "\n".join(lines) + "\n"


def grounding_metrics(predictions: Sequence[str], truths: Sequence[Box]) -> GroundingMetrics:
    """Scores of the answer texts `predictions` against the true boxes, one each."""
    if len(predictions) != len(truths):
        raise InputError(f"{len(predictions)} predictions but {len(truths)} true boxes")
    if not predictions:
        raise InputError("grounding metrics need at least one prediction")
    boxes = [parse_box(p) for p in predictions]
    ious = [iou(b, t) if b is not None else 0.0 for b, t in zip(boxes, truths, strict=True)]
    by_size: dict[str, list[float]] = {}
    for value, truth in zip(ious, truths, strict=True):
        by_size.setdefault(size_bucket(truth), []).append(value)
    return GroundingMetrics(
        GroundingScores.of(ious),
        {s: GroundingScores.of(by_size[s]) for s in SIZES if s in by_size},
        sum(b is None for b in boxes),
        ious,
    )


def record_box(record: Mapping[str, Any]) -> Box:
    """A record's true `box` ([x1, y1, x2, y2] in 0-100), or an InputError naming the record."""
    name = record.get("question_id") or record.get("image_path") or "?"
    if "box" not in record:
        raise InputError(f"record {name}: a grounding record needs a 'box' [x1, y1, x2, y2]")
    try:
        return Box.of(record["box"])
    except (InputError, TypeError, ValueError) as err:
        raise InputError(f"record {name}: bad 'box' {record['box']!r}: {err}") from err


def score_rows(rows: Sequence[dict[str, Any]]) -> GroundingMetrics:
    """Scores of evaluation rows (records with their `pred`); each row gains `pred_box` (the box
    read from its answer, or None) and `iou`, for the predictions file."""
    metrics = grounding_metrics([str(r["pred"]) for r in rows], [record_box(r) for r in rows])
    for row, value in zip(rows, metrics.ious, strict=True):
        box = parse_box(str(row["pred"]))
        row["pred_box"] = box.as_list() if box is not None else None
        row["iou"] = value
    return metrics


def grid_ceiling(truths: Sequence[Box], grid: int, threshold: float = 0.5) -> float:
    """The Acc@``threshold`` of the best boxes made of whole cells of a ``grid`` x ``grid`` token
    grid: for each true box, the cell-aligned rectangle of highest IoU (its edges searched among
    the grid lines next to the true box's edges, two on each side). A model that can say which
    image tokens hold the object, but not where inside a token it lies, grounds at most about
    this well: it bounds what coarse image tokens allow."""
    if grid < 1:
        raise InputError(f"grid must be >= 1, got {grid}")
    if not truths:
        return float("nan")
    edges = [round(i * BOX_SCALE / grid) for i in range(grid + 1)]

    def near(value: int) -> list[int]:
        below = max(i for i, e in enumerate(edges) if e <= value)
        return [edges[i] for i in range(max(below - 1, 0), min(below + 3, grid + 1))]

    def spans(lo: int, hi: int) -> list[tuple[int, int]]:
        return [(a, b) for a in near(lo) for b in near(hi) if a < b]

    hits = 0
    for t in truths:
        best = max(iou(t, Box(x1, y1, x2, y2)) for x1, x2 in spans(t.x1, t.x2)
                   for y1, y2 in spans(t.y1, t.y2))  # fmt: skip
        hits += best >= threshold
    return hits / len(truths)


def centre_errors(rows: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """Median distance (0-100 units) from each parsed predicted box's centre to its true box's
    centre, and the same for the true boxes shifted by one row (each expression paired with the
    next one's truth): a model whose boxes ignore the image scores no better than the second."""
    import statistics

    def centre(box: Box) -> tuple[float, float]:
        return (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2

    def dist(a: Box, b: Box) -> float:
        (ax, ay), (bx, by) = centre(a), centre(b)
        return ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5

    truths = [record_box(r) for r in rows]
    preds = [parse_box(str(r.get("pred", ""))) for r in rows]
    own = [dist(p, t) for p, t in zip(preds, truths, strict=True) if p is not None]
    shifted = [dist(a, b) for a, b in zip(truths, truths[1:] + truths[:1], strict=True)]
    if not own:
        return float("nan"), statistics.median(shifted)
    return statistics.median(own), statistics.median(shifted)


if __name__ == "__main__":
    # python -m geostrata.evaluate.grounding GROUND.json [GRIDS]: whole-cell ceilings per grid
    # python -m geostrata.evaluate.grounding --predictions predictions_ground.jsonl ...
    import json
    import sys
    from pathlib import Path

    if sys.argv[1] == "--predictions":
        for name in sys.argv[2:]:
            lines = Path(name).read_text(encoding="utf-8").splitlines()
            own, shifted = centre_errors([json.loads(line) for line in lines if line.strip()])
            print(f"{name}: median centre error {own:.1f}, vs shifted truths {shifted:.1f}")
        sys.exit(0)
    records = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))  # instruct JSON
    truths = [Box.of(r["box"]) for r in records if r.get("task") == "ground"]
    grids = [int(g) for g in (sys.argv[2] if len(sys.argv) > 2 else "3,4,12,24").split(",")]
    print(f"{len(truths)} true boxes; best whole-cell boxes of a G x G token grid:")
    print("| grid | Acc@0.5 ceiling | Acc@0.25 ceiling |\n|---|---|---|")
    for g in grids:
        print(f"| {g} x {g} | {100 * grid_ceiling(truths, g):.1f} | "
              f"{100 * grid_ceiling(truths, g, 0.25):.1f} |")  # fmt: skip
