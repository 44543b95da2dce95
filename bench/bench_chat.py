"""Chat latency: seconds per question of `predict` for the quick demo model on this CPU.

Median and p95 over N questions (each on a different held-out image) after warm-up, for the
plain answer, the answer plus the top-5 scene classes (what the web app shows), and the first
and last update of `stream_predict` (what a chat user waits for). Target: median < 2 s.
Trains the quick demo model into runs/demo first if it is missing. Writes bench/results/chat.json.

    .venv/bin/python bench/bench_chat.py [--questions 20] [--threads 1] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = [
    "Is there a ship?",
    "How many buildings are there?",
    "What type of scene is this?",
    "Is this a rural or an urban area?",
    "Is there a road?",
    "What is the main land cover?",
    "Are there more cars than buildings?",
    "What area is covered by water?",
]
TARGET_S = 2.0


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_s": round(statistics.median(ordered), 4),
        "p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 4),
        "min_s": round(ordered[0], 4),
        "max_s": round(ordered[-1], 4),
    }


def timed(fn, *args, **kwargs) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def stream_times(loaded, image: Path, question: str) -> tuple[float, float]:  # noqa: ANN001
    """Seconds to the first update (cues and routing) and to the last (answer and classes)."""
    from geostrata.inference import stream_predict

    t0, first = time.perf_counter(), None
    for _ in stream_predict(loaded, image, question):
        first = first if first is not None else time.perf_counter() - t0
    return first or 0.0, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/chat.json"))
    args = parser.parse_args()

    import torch
    from rich.console import Console

    from geostrata.chat import ensure_checkpoint, scene_classes
    from geostrata.inference import load_model, predict

    torch.set_num_threads(args.threads)
    console = Console()
    model_dir = ensure_checkpoint(args.checkpoint, console)
    t0 = time.perf_counter()
    loaded = load_model(model_dir)
    load_s = time.perf_counter() - t0
    classes = scene_classes(loaded)
    images = sorted((Path(loaded.cfg.data.root) / "images").glob("*.png"))[
        -(args.questions + args.warmup) :
    ]
    cases = [(img, QUESTIONS[i % len(QUESTIONS)]) for i, img in enumerate(images)]
    for image, question in cases[: args.warmup]:
        predict(loaded, image, question, classes=classes)
    measured = cases[args.warmup :]
    plain = [timed(predict, loaded, img, q) for img, q in measured]
    with_classes = [timed(predict, loaded, img, q, classes=classes) for img, q in measured]
    streamed = [stream_times(loaded, img, q) for img, q in measured]
    result = {
        "model": str(model_dir),
        "questions": len(measured),
        "warmup": args.warmup,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load_s": round(load_s, 3),
        "predict": summary(plain),
        "predict_with_classes": summary(with_classes),
        "n_classes": len(classes),
        "stream_first_update": summary([f for f, _ in streamed]),
        "stream_total": summary([t for _, t in streamed]),
        "target_median_s": TARGET_S,
    }
    result["meets_target"] = result["predict_with_classes"]["median_s"] < TARGET_S
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for key in ("predict", "predict_with_classes", "stream_first_update", "stream_total"):
        console.print(
            f"{key:22s} median {result[key]['median_s']:.3f}s  p95 {result[key]['p95_s']:.3f}s"
        )
    console.print(
        f"load {load_s:.1f}s; target median < {TARGET_S}s: "
        f"{'met' if result['meets_target'] else 'MISSED'}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
