"""Vision-tower benchmark: forward images/s of the frozen towers as the feature cache runs them.

geoembed_resnet18 vs effnet_lite0, each inside MultiLevelVisionEncoder (levels pooled as the
tiny presets pool them), eval mode, no grad, batch 32 at 128 px (geoembed's training size), CPU.
Best of N timed batches after a 2-image warm-up (a geoembed batch takes ~10-20 s here, so the
default N=2 keeps the run under a minute). The machine is shared, so besides wall-clock images/s
it reports images per CPU-second of this process (less sensitive to other jobs; 2 x that is what
two free cores would give at best). Multiply-accumulates per image are counted with forward hooks
on every Conv2d / Linear. Writes bench/results/geoembed.json.

    .venv/bin/python bench/bench_geoembed.py [--threads 2] [--batches 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from geostrata.model.configuration import VisionLevelsConfig  # noqa: E402
from geostrata.model.vision import MultiLevelVisionEncoder  # noqa: E402

TOWERS = {  # tower -> object_max_tokens of its tiny preset
    "geoembed_resnet18": 256,
    "effnet_lite0": None,
}


def count_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward of `x`, over every Conv2d and Linear."""
    total = 0

    def hook(mod: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        per_output = mod.weight[0].numel()  # (in / groups) * kh * kw, or in_features
        total += out.numel() * per_output

    layers = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return total


def time_tower(tower: str, batch: int, size: int, batches: int) -> dict[str, float]:
    enc = MultiLevelVisionEncoder(
        VisionLevelsConfig(tower=tower, object_max_tokens=TOWERS[tower])
    ).eval()
    enc.load_pretrained()
    x = torch.randn(batch, 3, size, size)  # (B, 3, S, S)
    macs = count_macs(enc, x[:1])
    wall, cpu = [], []
    with torch.no_grad():
        enc(x[:2])  # warm-up
        for _ in range(batches):
            start, start_cpu = time.perf_counter(), time.process_time()
            enc(x)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    sec = min(wall)
    return {
        "images_per_s": round(batch / sec, 2),
        "sec_per_batch": round(sec, 3),
        "images_per_cpu_s": round(batch / min(cpu), 2),
        "gmacs_per_image": round(macs / 1e9, 3),
        "params_m": round(sum(p.numel() for p in enc.tower.parameters()) / 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "geoembed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, object] = {
        "torch_threads": args.threads,
        "batch": args.batch,
        "image_size": args.size,
        "timed_batches": args.batches,
        "device": "cpu",
        "load_average_1min": round(os.getloadavg()[0], 2),  # the machine is shared
    }
    for tower in TOWERS:
        results[tower] = r = time_tower(tower, args.batch, args.size, args.batches)
        print(
            f"{tower:18s} {r['images_per_s']:6.1f} images/s, {r['images_per_cpu_s']:6.2f} per "
            f"CPU-s ({r['sec_per_batch']:.2f} s / batch of {args.batch} at {args.size} px, "
            f"{r['gmacs_per_image']:.2f} GMAC/image, {r['params_m']:.1f} M params)"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
