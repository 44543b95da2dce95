"""Model benchmark: parameter counts and forward+backward time per batch.

tiny / tiny-effnet: built for real, median wall time of N training steps (batch 8, 96 px) after
warm-up, with a random in-memory knowledge base (retrieval on, k=4). base / large: trainable and
frozen counts from the configs alone (meta device, nothing allocated or downloaded).
Writes bench/results/model.json.

    .venv/bin/python bench/bench_model.py [--steps 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class RandomKnowledge:
    """Random unit vectors per level with exact numpy top-k (stands in for the FAISS base)."""

    def __init__(self, dim: int, sizes: dict[str, int], seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.encoder_name = dim, "random"
        self.emb = {lv: self._unit(rng.normal(size=(n, dim))) for lv, n in sizes.items()}

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    def level_ids(self, level: str) -> list[str]:
        return [f"{level}:{i}" for i in range(len(self.emb[level]))]

    def level_embeddings(self, level: str) -> np.ndarray:
        return self.emb[level]

    def search(self, queries: np.ndarray, level: str, k: int):  # noqa: ANN201
        from geostrata.knowledge.protocol import SearchResult

        scores = queries @ self.emb[level].T
        idx = np.argsort(-scores, axis=1)[:, :k]
        ids = [[f"{level}:{i}" for i in row] for row in idx]
        return SearchResult(ids, idx.astype(np.int64), np.take_along_axis(scores, idx, 1))

    def encode_text(self, texts: list[str]) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        return self._unit(rng.normal(size=(len(texts), self.dim)))

    def resolve(self, label: str, dataset: str | None = None) -> str:
        return label


def time_preset(name: str, steps: int, warmup: int, seed: int) -> dict[str, object]:
    import torch

    from geostrata.model import (
        GeoStrataConfig,
        GeoStrataForConditionalGeneration,
        GeoStrataProcessor,
        count_parameters,
        train_tokenizer,
    )

    torch.manual_seed(seed)
    tok = train_tokenizer(
        [
            "how many cars are there",
            "is there a forest",
            "what is the scene",
            "residential farmland harbor river beach airport",
        ]
        * 20,
        vocab_size=2000,
    )
    cfg = GeoStrataConfig.from_preset(name, vocab_size=len(tok))
    kb = RandomKnowledge(cfg.knowledge_dim, {"scene": 12, "region": 7, "object": 9}, seed)
    model = GeoStrataForConditionalGeneration(cfg)
    model.attach_knowledge(kb)
    model.train()
    proc = GeoStrataProcessor(
        tok,
        cfg.image_size,
        cfg.num_image_tokens,
        cfg.image_mean,
        cfg.image_std,
        question_encoder=kb.encode_text,
    )
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(8)]
    batch = proc(images, ["how many cars are there?"] * 8, ["3"] * 8)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        model(**batch).loss.backward()
        elapsed = time.perf_counter() - start
        opt.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(elapsed)
    counts = count_parameters(cfg)
    return {
        "trainable": counts["trainable"],
        "frozen": counts["frozen"],
        "components": counts["components"],
        "batch": 8,
        "image_size": cfg.image_size,
        "fwd_bwd_median_s": statistics.median(times),
        "fwd_bwd_min_s": min(times),
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "model.json"
    )
    args = parser.parse_args()

    import torch

    from geostrata.model import GeoStrataConfig, count_parameters

    torch.set_num_threads(args.threads)
    results: dict[str, object] = {"torch_threads": args.threads, "device": "cpu"}
    for name in ("tiny", "tiny-effnet"):
        results[name] = time_preset(name, args.steps, args.warmup, args.seed)
        r = results[name]
        print(
            f"{name:12s} trainable {r['trainable']:>14,d} frozen {r['frozen']:>14,d} "
            f"fwd+bwd (B=8, 96 px) median {r['fwd_bwd_median_s'] * 1000:.0f} ms"
        )
    for name in ("base", "large"):
        counts = count_parameters(GeoStrataConfig.from_preset(name))
        results[name] = counts
        print(f"{name:12s} trainable {counts['trainable']:>14,d} frozen {counts['frozen']:>14,d}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
