"""Scaling estimate: memory per GPU and tokens/s for the base and large presets.

Runs `geostrata.scaling.estimate` (formulas and assumptions: docs/scaling.md) for full
fine-tuning, LoRA and QLoRA on 1 and 8 GPUs under DDP, ZeRO-2 and FSDP / ZeRO-3, prints the
table, writes bench/results/scaling.json and regenerates the tables in docs/scaling.md between
their `<!-- NAME:start -->` / `<!-- NAME:end -->` markers. Nothing is measured: no GPU is used.

    .venv/bin/python bench/scaling.py [--seq-len 2048] [--micro-batch 4] [--gpu h100] [--mfu 0.4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
MODES = {  # name -> estimate() keywords for the LLM
    "full": {"lora": False, "freeze_llm": False},
    "lora": {"lora": True},
    "qlora": {"lora": True, "qlora": True},
}
LAYOUTS = [(1, "ddp"), (8, "ddp"), (8, "zero2"), (8, "fsdp")]  # zero3 == fsdp in the model
MAX_MICRO_BATCH = 1024


def rows(seq_len: int, micro_batch: int, gpu: str, mfu: float) -> list[dict[str, Any]]:
    """One estimate per preset x mode x layout, with the largest micro-batch that fits."""
    from geostrata.model.configuration import GeoStrataConfig
    from geostrata.scaling import estimate

    out = []
    for preset in ("base", "large"):
        config = GeoStrataConfig.from_preset(preset)
        for mode, llm in MODES.items():
            for gpus, strategy in LAYOUTS:
                kwargs = {"gpus": gpus, "strategy": strategy, "seq_len": seq_len, "gpu": gpu,
                          "mfu": mfu, **llm}
                est = estimate(config, micro_batch=micro_batch, **kwargs)
                row = {**est.to_dict(), "preset": preset, "mode": mode}
                row["max_micro_batch"] = max_micro_batch(config, kwargs)
                out.append(row)
    return out


def max_micro_batch(config: Any, kwargs: dict[str, Any]) -> int:
    """Memory is affine in the micro-batch, so two estimates give the largest one that fits."""
    from geostrata.scaling import GIB, estimate

    one = estimate(config, micro_batch=1, **kwargs)
    two = estimate(config, micro_batch=2, **kwargs)
    slope = two.memory.total - one.memory.total
    room = one.gpu_memory_gib * GIB - one.memory.total
    return 0 if room < 0 else min(MAX_MICRO_BATCH, 1 + int(room // slope))


def _gib(value: float) -> str:
    return f"{value / 2**30:.1f}"


def _count(value: int) -> str:
    return f"{value / 1e9:.2f} B" if value >= 1e9 else f"{value / 1e6:.0f} M"


def memory_table(table: list[dict[str, Any]]) -> str:
    """Markdown: one line per estimate, GiB per GPU and throughput for all GPUs."""
    head = ("| preset | LLM | GPUs | strategy | trainable | weights | grads + AdamW | "
            "activations | gathered + overhead | total GiB/GPU | fits | max micro-batch | "
            "tokens/s | samples/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in table:
        m, s = r["memory"], r["setup"]
        lines.append(
            f"| {r['preset']} | {r['mode']} | {s['gpus']} | {s['strategy']} | "
            f"{_count(r['params']['trainable'])} | {_gib(m['weights'])} | "
            f"{_gib(m['gradients'] + m['optimizer'])} | {_gib(m['activations'])} | "
            f"{_gib(m['gathered'] + m['overhead'])} | **{_gib(m['total'])}** | "
            f"{'yes' if r['fits'] else 'no'} | {r['max_micro_batch']} | "
            f"{r['tokens_per_s']:,.0f} | {r['samples_per_s']:,.1f} |"
        )
    return "\n".join(lines)


def params_table(table: list[dict[str, Any]]) -> str:
    """Markdown: parameter counts per preset (from the LoRA rows, which list the adapters)."""
    lines = ["| preset | vision tower | LLM | GeoStrata modules | LoRA adapters (preset's r, "
             "targets) | total |", "|---|---|---|---|---|---|"]
    for r in table:
        if r["mode"] == "lora" and r["setup"]["gpus"] == 1:
            p = r["params"]
            lines.append(f"| {r['preset']} | {_count(p['vision'])} | {_count(p['llm'])} | "
                         f"{_count(p['glue'])} | {_count(p['lora'])} | {_count(p['total'])} |")
    return "\n".join(lines)


def replace_block(text: str, name: str, body: str) -> str:
    """Replace what lies between `<!-- name:start -->` and `<!-- name:end -->`."""
    pattern = re.compile(rf"(<!-- {name}:start -->).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs/scaling.md has no <!-- {name}:start --> ... :end --> block")
    return pattern.sub(lambda m: f"{m.group(1)}\n{body}\n{m.group(2)}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--gpu", default="h100", choices=("h100", "a100"))
    parser.add_argument("--mfu", type=float, default=0.4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scaling.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "scaling.md")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/scaling.md")
    args = parser.parse_args()

    table = rows(args.seq_len, args.micro_batch, args.gpu, args.mfu)
    memory, params = memory_table(table), params_table(table)
    print(params, memory, sep="\n\n")
    settings = {"seq_len": args.seq_len, "micro_batch": args.micro_batch, "gpu": args.gpu,
                "mfu": args.mfu, "grad_checkpointing": True, "dtype": "bf16", "measured": False}
    if not args.no_doc:  # check the markers before writing anything
        text = args.doc.read_text(encoding="utf-8")
        text = replace_block(replace_block(text, "params-table", params), "memory-table", memory)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": settings, "rows": table}, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not args.no_doc:
        args.doc.write_text(text, encoding="utf-8")
        print(f"updated {args.doc}")


if __name__ == "__main__":
    main()
