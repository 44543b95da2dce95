"""CPU benchmark of the `smol` preset: SmolLM2-135M-Instruct (packaged GGUF) through GeoStrata.

Measures, on this machine (the load average before and after each part is recorded: on a shared
machine other processes take cores too):

1. loading: GGUF -> de-quantised float32 safetensors folder (into a fresh temporary cache), then
   the cached folder -> model + tokenizer + one forward (what every later run pays), then the
   whole GeoStrata `smol` model built from the cache;
2. training steps, through the pipeline's own session (`prepare`: processor with the chat
   template, cached EfficientNet features, knowledge base, collator, stage parameters), per LLM
   dtype, stage and batch size: median seconds per optimizer step (forward + backward + AdamW)
   after a warm-up step, steps/s, samples/s and LLM tokens/s;
3. where one stage-2 step's time goes: forward wall time per component (forward hooks), the
   backward pass and the optimizer step, and the top operators of torch.profiler;
4. stage-2 step time with 1 and with 2 torch threads (alternated: on a shared machine, where
   other processes hold cores, 1 thread was the faster);
5. evaluation costs: greedy generation of a batch of test prompts and closed-set scoring of the
   scene classes.

Writes bench/results/smol.json (after every part, so a run cut short keeps what it measured).

    python bench/bench_smol.py [--batch-sizes 8,16] [--dtypes bfloat16,float32] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

OUT = Path(__file__).resolve().parent / "results" / "smol.json"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="runs/bench_smol/data", help="synthesized here if missing")
    p.add_argument("--batch-sizes", type=_ints, default=[8, 16])
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--steps", type=int, default=3, help="timed steps per setting (after 1 warm-up)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--skip-load", action="store_true", help="skip the GGUF conversion timing")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _write(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out)


# ---- 1. loading ----------------------------------------------------------------------------------
def bench_load() -> dict[str, Any]:
    import torch

    from geostrata.model import pretrained as P

    gguf = P.resolve_source(P.SMOL_SOURCE).path
    row: dict[str, Any] = {"gguf": str(gguf), "gguf_mib": round(gguf.stat().st_size / 2**20, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import AutoModelForCausalLM

        from geostrata.model.vision import load_pretrained_hf

        row["load_before"] = _load()
        t0 = time.perf_counter()
        folder = P.gguf_to_folder(gguf, root=Path(tmp))
        row["gguf_first_load_s"] = round(time.perf_counter() - t0, 2)  # read, de-quantise, save
        row["cache_mib"] = round(sum(f.stat().st_size for f in folder.iterdir()) / 2**20, 1)
        t0 = time.perf_counter()
        model = load_pretrained_hf(AutoModelForCausalLM, str(folder))
        tok = P.load_llm_tokenizer(str(folder))
        with torch.no_grad():
            model(**tok("The capital of France is", return_tensors="pt"))
        row["cached_load_s"] = round(time.perf_counter() - t0, 2)  # model + tokenizer + forward
        row["load_after"] = _load()
        del model
    from geostrata.model import GeoStrataConfig, GeoStrataForConditionalGeneration

    P.llm_folder(P.SMOL_SOURCE)  # the default cache, built once if it is not there yet
    t0 = time.perf_counter()
    GeoStrataForConditionalGeneration(GeoStrataConfig.from_preset("smol"))
    row["geostrata_smol_build_s"] = round(time.perf_counter() - t0, 2)
    return row


# ---- 2. training steps ---------------------------------------------------------------------------
def make_session(data: Path) -> Any:
    from geostrata.data.synthetic import synthesize
    from geostrata.session import ExperimentConfig, prepare

    if not (data / "meta.json").is_file():
        synthesize(data, 64, 16, 96, 0, workers=1, progress=False)
    cfg = ExperimentConfig.from_dict(
        {
            "preset": "smol",
            "output_dir": str(data.parent / "run"),
            "data": {"kind": "synthetic", "root": str(data), "captions": False},
        },
        source="bench_smol",
    )
    return prepare(cfg, show_progress=False)


def _model_for(session: Any, dtype: str) -> Any:
    """The session's model, or the same preset with its LLM in another dtype."""
    from geostrata.model import GeoStrataConfig, GeoStrataForConditionalGeneration

    if session.model.config.torch_dtype == dtype:
        return session.model
    overrides = {"knowledge_dim": session.knowledge.dim, "torch_dtype": dtype}
    model = GeoStrataForConditionalGeneration(GeoStrataConfig.from_preset("smol", **overrides))
    model.attach_knowledge(session.knowledge)
    return model


def _step(model: Any, batch: dict[str, Any], optim: Any) -> dict[str, float]:
    """Wall seconds of forward / backward / optimizer, and the process's CPU seconds (all
    threads): on a shared machine wall time stretches with the load, CPU time much less."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = model(**batch)
    t1 = time.perf_counter()
    out.loss.backward()
    t2 = time.perf_counter()
    optim.step()
    optim.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    return {
        "forward": t1 - t0,
        "backward": t2 - t1,
        "optimizer": t3 - t2,
        "total": t3 - t0,
        "cpu": time.process_time() - c0,
    }


def bench_steps(
    session: Any, dtype: str, batch_sizes: list[int], steps: int
) -> tuple[list[dict[str, Any]], Any]:
    import torch

    from geostrata.train.stages import stage_parameters, trainable_names

    model = _model_for(session, dtype).train()
    allowed = trainable_names(model)
    collate = session.collator(True)
    rows = []
    for stage in ("stage1", "stage2"):
        params = stage_parameters(model, stage, allowed)
        optim = torch.optim.AdamW(params, lr=1e-4)
        for b in batch_sizes:
            batch = collate(session.task.train[:b])
            before = _load()
            times = [_step(model, batch, optim) for _ in range(steps + 1)][1:]  # 1 warm-up
            med = {k: statistics.median(t[k] for t in times) for k in times[0]}
            tokens = int(batch["attention_mask"].sum())
            rows.append(
                {
                    "dtype": dtype,
                    "stage": stage,
                    "batch_size": b,
                    "seq_len": int(batch["input_ids"].shape[1]),
                    "trainable_params": sum(p.numel() for p in params),
                    "s_per_step": round(med["total"], 3),
                    "steps_per_s": round(1 / med["total"], 3),
                    "samples_per_s": round(b / med["total"], 2),
                    "tokens_per_s": round(tokens / med["total"], 1),
                    "cpu_s_per_step": round(med["cpu"], 3),
                    "split_s": {
                        k: round(v, 3) for k, v in med.items() if k not in ("total", "cpu")
                    },
                    "all_s": [round(t["total"], 3) for t in times],
                    "load": [before, _load()],
                }
            )
            print(json.dumps(rows[-1]))
    return rows, model


# ---- 3. where the time goes ----------------------------------------------------------------------
def bench_profile(session: Any, model: Any, batch_size: int) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from geostrata.train.stages import stage_parameters

    params = [p for p in model.parameters() if p.requires_grad] or stage_parameters(model, "stage2")
    optim = torch.optim.AdamW(params, lr=1e-4)
    batch = session.collator(True)(session.task.train[:batch_size])
    forward_s: dict[str, float] = {}
    hooks = []
    llm = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
    parts = {
        "augmentation": model.augmentation,
        "experts": model.experts,
        "fusion": model.fusion,
        "llm": model.llm,
        "llm.lm_head": llm.lm_head,
    }
    starts: dict[str, float] = {}
    for name, module in parts.items():
        hooks.append(
            module.register_forward_pre_hook(
                lambda _m, _a, n=name: starts.__setitem__(n, time.perf_counter())
            )
        )
        hooks.append(
            module.register_forward_hook(
                lambda _m, _a, _o, n=name: forward_s.__setitem__(
                    n, forward_s.get(n, 0.0) + time.perf_counter() - starts[n]
                )
            )
        )
    _step(model, batch, optim)  # warm-up
    forward_s.clear()
    split = _step(model, batch, optim)
    for h in hooks:
        h.remove()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _step(model, batch, optim)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]
    total_us = sum(e.self_cpu_time_total for e in prof.key_averages())
    return {
        "batch_size": batch_size,
        "seq_len": int(batch["input_ids"].shape[1]),
        "dtype": str(next(llm.parameters()).dtype),
        "step_split_s": {k: round(v, 3) for k, v in split.items()},
        "forward_by_component_s": {k: round(v, 3) for k, v in forward_s.items()},
        "profiler_top_ops": [
            {
                "op": e.key,
                "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3),
                "share": round(e.self_cpu_time_total / total_us, 3),
                "calls": e.count,
            }
            for e in top
        ],
        "profiler_table": table,
        "load": _load(),
    }


# ---- 3b. threads on a shared machine ------------------------------------------------------------
def bench_threads(session: Any, model: Any, batch_size: int, threads: list[int]) -> list[dict]:
    """Stage-2 step time per intra-op thread count, alternated twice. With other processes on
    the cores, 2 OpenMP threads wait on each other at every barrier; 1 thread does not."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-5)
    batch = session.collator(True)(session.task.train[:batch_size])
    before = torch.get_num_threads()
    times: dict[int, list[float]] = {n: [] for n in threads}
    for _ in range(2):
        for n in threads:
            torch.set_num_threads(n)
            times[n] += [_step(model, batch, optim)["total"] for _ in range(2)]
    torch.set_num_threads(before)
    return [
        {
            "threads": n,
            "batch_size": batch_size,
            "s_per_step_median": round(statistics.median(t), 3),
            "all_s": [round(x, 3) for x in t],
            "load": _load(),
        }
        for n, t in times.items()
    ]


# ---- 4. evaluation costs -------------------------------------------------------------------------
def bench_eval(session: Any, model: Any, batch_size: int) -> dict[str, Any]:
    import torch

    from geostrata.session import SCENE_QUESTION, scene_answer

    model.eval()
    records = session.task.eval[:batch_size]
    batch = session.collator(False)(records)
    keys = ("input_ids", "attention_mask", "features", "question_embeds")
    inputs = {k: batch[k] for k in keys if k in batch}
    with torch.no_grad():
        t0 = time.perf_counter()
        new = model.generate(**inputs, max_new_tokens=8)
        gen_s = time.perf_counter() - t0
        answers = session.processor.tokenizer.batch_decode(new, skip_special_tokens=True)
        scene = [{**r, "question": SCENE_QUESTION, "answer": ""} for r in records]
        sbatch = session.collator(False)(scene)
        names = [session.processor.answer_ids(scene_answer(c)) for c in session.task.scene_classes]
        t0 = time.perf_counter()
        model.score_candidates({k: sbatch[k] for k in keys if k in sbatch}, names)
        score_s = time.perf_counter() - t0
    return {
        "batch_size": len(records),
        "prompt_len": int(inputs["input_ids"].shape[1]),
        "generate_8_tokens_s": round(gen_s, 2),
        "generate_s_per_question": round(gen_s / len(records), 3),
        "scene_classes": len(names),
        "score_candidates_s": round(score_s, 2),
        "score_s_per_image": round(score_s / len(records), 3),
        "sample_answers": [a.strip() for a in answers[:6]],
        "load": _load(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_at_start": _load(),
        },
        "note": "shared machine: compare figures with the recorded load averages",
    }
    if not args.skip_load:
        results["load_times"] = bench_load()
        print(json.dumps(results["load_times"]))
        _write(results, args.out)
    session = make_session(Path(args.data))
    results["steps"] = []
    first = None
    for dtype in args.dtypes.split(","):
        rows, model = bench_steps(session, dtype, args.batch_sizes, args.steps)
        results["steps"] += rows
        first = first or model
        _write(results, args.out)
    results["profile"] = bench_profile(session, first, args.batch_sizes[-1])
    print(results["profile"]["profiler_table"])
    print(json.dumps({k: v for k, v in results["profile"].items() if k != "profiler_table"}))
    _write(results, args.out)
    results["threads"] = bench_threads(session, first, args.batch_sizes[0], [1, 2])
    print(json.dumps(results["threads"]))
    _write(results, args.out)
    results["eval"] = bench_eval(session, first, 32)
    print(json.dumps(results["eval"]))
    results["machine"]["load_at_end"] = _load()
    _write(results, args.out)
    return results


if __name__ == "__main__":
    main()
