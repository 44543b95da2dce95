"""GPU benchmark: one training step and generation latency of a preset's architecture.

Builds the preset (default `base`: CLIP ViT-L/14-336 tower + Vicuna-7B-shaped Llama, LoRA r=64)
with RANDOM weights directly on the GPU (the preset's pretrained names are set to None; set them
back with --set to measure real weights), frozen parts in bf16, trainable parts (GeoStrata modules,
LoRA adapters) in fp32 under bf16 autocast, as Accelerate's `mixed_precision="bf16"` runs them.
Retrieval is on, against a random in-memory knowledge base of the default base's size.

Measures, per (sequence length, micro-batch): median wall time of forward + backward + AdamW step
after warm-up, tokens/s, peak `torch.cuda.max_memory_allocated`, and beside each the figures
`geostrata.scaling.estimate` predicts for the same setting (memory, tokens/s at the assumed MFU)
plus the MFU the measurement implies. Then generation with KV cache (greedy, a fixed number of new
tokens): time to the first token and per further token, for batch 1 and a larger batch, with
the model in bf16. Results are written after every measurement, so a run cut short keeps what
it measured.

    python bench/bench_gpu.py [--preset base] [--seq-lens 512,2048] [--micro-batches 1,4,8]
    python bench/bench_gpu.py --preset tiny --device cpu --seq-lens 64 --micro-batches 2  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import RandomKnowledge  # noqa: E402

KB_SIZES = {"scene": 70, "region": 40, "object": 93}  # the default knowledge base's levels
QUESTION_TOKENS = 40  # text positions before the answer in a generation prompt


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="base")
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--seq-lens",
        type=_ints,
        default=[512, 2048],
        help="LLM positions per sample, image tokens included",
    )
    p.add_argument("--micro-batches", type=_ints, default=[1, 4, 8])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--gen-batches", type=_ints, default=[1, 8])
    p.add_argument("--gen-repeats", type=int, default=3)
    p.add_argument(
        "--decode",
        type=lambda text: [m for m in text.split(",") if m],
        default=["dynamic"],
        help="decode modes to time (geostrata.model.decoding: dynamic, static, compiled)",
    )
    p.add_argument("--no-train", action="store_true", help="time generation only")
    p.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="also profile one training step of the first setting (torch.profiler): a Chrome "
        "trace at this path and the top operators beside it (.txt)",
    )
    p.add_argument(
        "--qlora-dir",
        type=Path,
        default=None,
        help="QLoRA: save the preset's LLM (random weights, bf16) as a folder here once, then "
        "load it 4-bit NF4 (needs bitsandbytes and a CUDA GPU) with LoRA on top",
    )
    p.add_argument(
        "--no-checkpointing",
        action="store_true",
        help="train without gradient checkpointing (default: on, as the presets' runs)",
    )
    p.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        default="bfloat16",
        help="bfloat16: frozen weights bf16, trainable fp32 under autocast (the GPU "
        "recipe); float32: everything fp32, no autocast",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="preset field override, e.g. --set freeze_vision=true (repeatable)",
    )
    p.add_argument(
        "--gpu-name",
        default=None,
        help="scaling.estimate's GPU for the predictions (default: from the device's "
        "name, else h100)",
    )
    p.add_argument(
        "--merge-lora",
        action="store_true",
        help="fold the LoRA adapters into the LLM's weights before timing generation",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu.json")
    return p.parse_args(argv)


class Recorder:
    """Results dict written to disk after every change (a cut-short run keeps its figures)."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.data = path, {**meta, "train": [], "generate": []}
        path.parent.mkdir(parents=True, exist_ok=True)
        self.flush()

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.data[section].append(row)
        self.flush()

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.flush()

    def flush(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.path)


def build(args: argparse.Namespace) -> tuple[Any, Any]:
    """The preset's model with random weights on the device: frozen bf16, trainable fp32."""
    import torch

    from geostrata.model import GeoStrataConfig, GeoStrataForConditionalGeneration

    overrides = {}
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    cfg = GeoStrataConfig.from_preset(
        args.preset,
        gradient_checkpointing=not args.no_checkpointing,
        torch_dtype=args.dtype,
        # random weights: a model naming pretrained parts refuses to build without them
        **{"vision_name_or_path": None, "text_name_or_path": None, **overrides},
    )
    if args.qlora_dir is not None:  # a pretrained-LLM folder to quantise while loading
        _save_random_llm(cfg, args)
        cfg = GeoStrataConfig.from_preset(
            args.preset,
            gradient_checkpointing=not args.no_checkpointing,
            torch_dtype=args.dtype,
            **{"vision_name_or_path": None, **overrides, "text_name_or_path": str(args.qlora_dir),
               "load_in_4bit": True, "use_lora": True, "freeze_llm": True},
        )  # fmt: skip
    torch.manual_seed(args.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, args.dtype))
    try:
        with torch.device(args.device):
            model = GeoStrataForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(previous)
    for param in model.parameters():
        if param.requires_grad:  # fp32 master copies of what trains, as mixed precision keeps
            param.data = param.data.float()
    model.attach_knowledge(RandomKnowledge(cfg.knowledge_dim, KB_SIZES, args.seed))
    return cfg, model


def _save_random_llm(cfg: Any, args: argparse.Namespace) -> None:
    """The preset's LLM with random weights, saved once as a transformers folder (bf16)."""
    import torch
    from transformers import AutoModelForCausalLM

    if (args.qlora_dir / "config.json").is_file():
        return
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        llm = AutoModelForCausalLM.from_config(cfg.text_config, dtype=torch.bfloat16)
    llm.save_pretrained(args.qlora_dir)
    del llm
    torch.cuda.empty_cache()


def make_batch(cfg: Any, batch: int, seq_len: int, device: str, answer_from: int | None) -> dict:
    """Random tokens with the image's positions right after BOS; labels on the tail only."""
    import torch

    n_img = cfg.num_image_tokens
    if seq_len <= n_img + 1:
        raise SystemExit(f"--seq-lens {seq_len}: needs more than {n_img + 1} positions")
    ids = torch.randint(3, cfg.image_token_id, (batch, seq_len), device=device)
    ids[:, 0] = cfg.text_config.bos_token_id
    ids[:, 1 : 1 + n_img] = cfg.image_token_id
    size = cfg.image_size
    q = torch.nn.functional.normalize(torch.randn(batch, cfg.knowledge_dim, device=device), dim=-1)
    out = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(batch, 3, size, size, device=device),
        "question_embeds": q,
    }
    if answer_from is not None:
        labels = ids.clone()
        labels[:, :answer_from] = -100
        out["labels"] = labels
    return out


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def predicted(cfg: Any, args: argparse.Namespace, seq_len: int, micro_batch: int) -> dict:
    from geostrata.scaling import estimate

    est = estimate(
        cfg,
        seq_len=seq_len,
        micro_batch=micro_batch,
        gpu=args.gpu_name,
        grad_checkpointing=not args.no_checkpointing,
    )
    return {
        "memory_gib": est.memory.total / 2**30,
        "tokens_per_s": est.tokens_per_s_per_gpu,
        "flops_per_token": est.flops_per_token,
        "mfu_assumed": est.setup.mfu,
    }


def time_train(
    model: Any, cfg: Any, args: argparse.Namespace, seq_len: int, micro_batch: int, optimizer: Any
) -> dict[str, Any]:

    from geostrata.scaling import GPU_PEAK_TFLOPS

    answer_from = seq_len - max(1, (seq_len - cfg.num_image_tokens) // 4)
    batch = make_batch(cfg, micro_batch, seq_len, args.device, answer_from)
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    _reset_peak(args.device)
    times, loss = [], float("nan")
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = _train_step(model, batch, optimizer, device_type, args)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    if args.trace is not None and not args.trace.exists():  # the first setting only
        _profile_step(model, batch, optimizer, device_type, args)
    step_s = statistics.median(times)
    tokens_per_s = micro_batch * seq_len / step_s
    pred = predicted(cfg, args, seq_len, micro_batch)
    peak_flops = GPU_PEAK_TFLOPS[args.gpu_name]["bf16"] * 1e12
    return {
        "seq_len": seq_len,
        "micro_batch": micro_batch,
        "step_median_s": step_s,
        "step_min_s": min(times),
        "tokens_per_s": tokens_per_s,
        "samples_per_s": micro_batch / step_s,
        "peak_allocated_gib": _peak_gib(args.device),
        "mfu_measured": tokens_per_s * pred["flops_per_token"] / peak_flops,
        "loss": loss,
        "predicted": pred,
    }


def time_generate(
    model: Any, cfg: Any, args: argparse.Namespace, batch_size: int, mode: str = "dynamic"
) -> dict:
    import torch

    from geostrata.model.decoding import bandwidth_bound_s, weight_bytes

    model.decode_mode = mode
    prompt_len = 1 + cfg.num_image_tokens + QUESTION_TOKENS
    batch = make_batch(cfg, batch_size, prompt_len, args.device, None)

    def run(new_tokens: int) -> float:
        _sync(args.device)
        start = time.perf_counter()
        out = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        _sync(args.device)
        if out.shape[-1] != new_tokens:
            raise RuntimeError(f"generate gave {out.shape[-1]} tokens, asked {new_tokens}")
        return time.perf_counter() - start

    _reset_peak(args.device)
    with torch.inference_mode():
        start = time.perf_counter()
        run(args.gen_tokens)  # warm-up (kernels, allocator; compiles the "compiled" mode)
        warmup = time.perf_counter() - start
        first = statistics.median(run(1) for _ in range(args.gen_repeats))
        full = statistics.median(run(args.gen_tokens) for _ in range(args.gen_repeats))
    per_token = (full - first) / max(args.gen_tokens - 1, 1)
    llm_bytes = weight_bytes(model.llm)
    bound = bandwidth_bound_s(llm_bytes, args.gpu_name) if args.device.startswith("cuda") else None
    return {
        "decode": mode,
        "warmup_s": warmup,
        "llm_weight_bytes": llm_bytes,
        "bandwidth_bound_per_token_s": bound,  # weight bytes / peak memory bandwidth
        "per_token_over_bound": None if bound is None else per_token / bound,
        "batch": batch_size,
        "prompt_len": prompt_len,
        "new_tokens": args.gen_tokens,
        "first_token_s": first,
        "per_token_s": per_token,
        "total_s": full,
        "tokens_per_s": batch_size * args.gen_tokens / full,
        "peak_allocated_gib": _peak_gib(args.device),
    }


def _train_step(model: Any, batch: dict, optimizer: Any, device_type: str, args: Any) -> float:
    """Forward (bf16 autocast unless float32), backward, AdamW; synchronised; returns the loss."""
    import torch

    _sync(args.device)
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=args.dtype != "float32"):
        out = model(**batch)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(args.device)
    return float(out.loss.detach())


def _profile_step(model: Any, batch: dict, optimizer: Any, device_type: str, args: Any) -> None:
    """One training step under torch.profiler: a Chrome trace (chrome://tracing, Perfetto) and
    the operators by total time, so host gaps (retrieval, launches) are seen beside kernels."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as prof:
        _train_step(model, batch, optimizer, device_type, args)
    args.trace.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(args.trace))
    sort = "cuda_time_total" if device_type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40)
    args.trace.with_suffix(".txt").write_text(table, encoding="utf-8")


def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=props.total_memory / 2**30,
            multiprocessors=props.multi_processor_count,
        )
    return info


def _known_gpu(device: str) -> str:
    """The scaling model's name for this GPU (h100 when it is not one the model knows)."""
    import torch

    from geostrata.scaling import GPU_PEAK_TFLOPS

    name = torch.cuda.get_device_name(0).lower() if device.startswith("cuda") else ""
    return next((known for known in GPU_PEAK_TFLOPS if known in name), "h100")


def _oom(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from geostrata.model import count_parameters

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here (use --device cpu for a smoke run)")
    args.gpu_name = args.gpu_name or _known_gpu(args.device)
    rec = Recorder(
        args.out,
        {
            "preset": args.preset,
            "env": environment(args.device),
            "dtype": args.dtype,
            "overrides": args.overrides,
            "gradient_checkpointing": not args.no_checkpointing,
            "predicted_for_gpu": args.gpu_name,
        },
    )
    start = time.perf_counter()
    cfg, model = build(args)
    rec.set("build_s", time.perf_counter() - start)
    rec.set("parameters", {k: v for k, v in count_parameters(cfg).items() if k != "components"})
    rec.set("weights_allocated_gib", _peak_gib(args.device))
    print(
        f"built {args.preset} in {rec.data['build_s']:.1f} s: "
        f"{rec.data['parameters']['trainable']:,} trainable",
        flush=True,
    )

    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    for seq_len in [] if args.no_train else args.seq_lens:
        for micro_batch in args.micro_batches:
            try:
                row = time_train(model, cfg, args, seq_len, micro_batch, optimizer)
            except torch.OutOfMemoryError as exc:  # record and go on with the next setting
                row = {"seq_len": seq_len, "micro_batch": micro_batch, "error": str(exc)[:200]}
                optimizer.zero_grad(set_to_none=True)
            rec.add("train", row)
            print(_train_line(row), flush=True)

    del optimizer
    model.eval()
    model.to(getattr(torch, args.dtype))  # inference: one dtype, as `load_model(torch_dtype=)`
    if args.merge_lora and hasattr(model.llm, "merge_and_unload"):
        model.llm = model.llm.merge_and_unload()
    rec.set("lora_merged_for_generation", bool(args.merge_lora))
    for mode in args.decode:
        for batch_size in args.gen_batches:
            try:
                row = time_generate(model, cfg, args, batch_size, mode)
            except RuntimeError as exc:
                if not _oom(exc):
                    raise
                row = {"decode": mode, "batch": batch_size, "error": str(exc)[:200]}
            rec.add("generate", row)
            print(_generate_line(row), flush=True)
    rec.set("wall_s", time.perf_counter() - start)
    print(f"wrote {args.out}")
    return rec.data


def _train_line(row: dict[str, Any]) -> str:
    head = f"train  seq {row['seq_len']:>5d} x mb {row['micro_batch']:>3d}: "
    if "error" in row:
        return head + "out of memory"
    pred = row["predicted"]
    mem = row["peak_allocated_gib"]
    mem_text = "-" if mem is None else f"{mem:.1f}"
    return (
        head + f"{row['step_median_s'] * 1000:8.1f} ms/step  {row['tokens_per_s']:9,.0f} tok/s "
        f"(est. {pred['tokens_per_s']:,.0f} at MFU {pred['mfu_assumed']:.2f}; "
        f"measured MFU {row['mfu_measured']:.2f})  peak {mem_text} GiB "
        f"(est. {pred['memory_gib']:.1f})"
    )


def _generate_line(row: dict[str, Any]) -> str:
    head = f"generate {row['decode']:>8s} batch {row['batch']:>3d}: "
    if "error" in row:
        return head + "out of memory"
    bound = row["bandwidth_bound_per_token_s"]
    ratio = row["per_token_over_bound"]
    versus = "" if bound is None else f" (bound {bound * 1000:.2f} ms: x{ratio:.1f})"
    return (
        head + f"first token {row['first_token_s'] * 1000:.1f} ms, "
        f"then {row['per_token_s'] * 1000:.2f} ms/token{versus}, {row['tokens_per_s']:,.0f} tok/s, "
        f"warm-up {row['warmup_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
