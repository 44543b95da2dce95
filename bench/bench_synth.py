"""Benchmark `geostrata data synth`: 2,000 images at 96 px on 2 worker processes.

Prints images/s and writes bench/results/synth.json. Also measures how far a question-only
prior gets (the most frequent train answer for each exact question text, else for its type),
which must stay well below the 100% ceiling for the benchmark to need the image.

Run: .venv/bin/python bench/bench_synth.py [--n-train 1600 --n-test 400 --workers 2]
"""

import argparse
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from geostrata.data.synthetic import synthesize


def question_only_prior(root: Path) -> dict[str, float]:
    """Per-type accuracy on test of the train majority answer per question text."""

    def load(split: str) -> list[tuple[str, str, str]]:
        prefix = root / "rsvqa" / f"SYN_split_{split}"
        qs = json.loads(Path(f"{prefix}_questions.json").read_text())["questions"]
        answers = json.loads(Path(f"{prefix}_answers.json").read_text())["answers"]
        ans = {a["id"]: a["answer"] for a in answers}
        return [(q["type"], q["question"], ans[q["answers_ids"][0]]) for q in qs]

    by_text, by_type = defaultdict(Counter), defaultdict(Counter)
    for qtype, text, answer in load("train"):
        by_text[text][answer] += 1
        by_type[qtype][answer] += 1
    hits = defaultdict(list)
    for qtype, text, answer in load("test"):
        table = by_text[text] if text in by_text else by_type[qtype]
        hits[qtype].append(table.most_common(1)[0][0] == answer)
    acc = {t: round(sum(h) / len(h), 4) for t, h in sorted(hits.items())}
    acc["AA"] = round(sum(acc.values()) / len(acc), 4)
    return acc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-train", type=int, default=1600)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--workers", type=int, default=2)
    default_out = Path(__file__).parent / "results" / "synth.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    n = args.n_train + args.n_test
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = synthesize(Path(tmp) / "syn", args.n_train, args.n_test, args.size, 0,
                          workers=args.workers, progress=True)  # fmt: skip
        seconds = time.perf_counter() - start
        prior = question_only_prior(root)
        files = (root / "rsvqa").glob("*_questions.json")
        n_questions = sum(len(json.loads(p.read_text())["questions"]) for p in files)
    result = {
        "images": n,
        "size": args.size,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "seconds": round(seconds, 2),
        "images_per_s": round(n / seconds, 1),
        "questions": n_questions,
        "question_only_prior_accuracy": prior,
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
