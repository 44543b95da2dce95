"""How `generate` decodes: the KV cache kind and whether the decoding step is compiled.

All of it is transformers' own machinery, chosen by name:

* ``dynamic`` (default): a cache that grows by one position per token (`DynamicCache`); no
  compilation, so the first call is as fast as any.
* ``static``: a cache allocated once at its final length (`StaticCache`): fixed shapes, no
  per-token allocation.
* ``compiled``: the static cache plus `torch.compile` of the LLM's one-token forward (transformers
  compiles it inside `generate` once the cache has fixed shapes; "reduce-overhead" on a GPU,
  i.e. CUDA graphs, which remove the per-kernel launch cost that dominates batch-1 decoding of a
  7B model). The first call compiles (tens of seconds); later calls of the same batch and cache
  length reuse it.

Decoding one token reads every weight once, so at batch 1 its time is bounded below by
weight bytes / memory bandwidth; `bandwidth_bound_s` computes that bound for the figures that
`bench/bench_gpu.py --decode` writes beside the measured ms per token.
"""

from __future__ import annotations

from typing import Any

import torch

from geostrata.errors import ConfigError

DECODE_MODES = ("dynamic", "static", "compiled")
# Peak memory bandwidth, bytes/s, from the vendors' data sheets (HBM; SXM parts).
MEMORY_BANDWIDTH = {"h200": 4.8e12, "h100": 3.35e12, "a100": 2.039e12, "l40s": 0.864e12}


def check_decode(mode: str) -> str:
    if mode not in DECODE_MODES:
        raise ConfigError(f"unknown decode mode {mode!r}; expected one of {list(DECODE_MODES)}")
    return mode


def generation_kwargs(mode: str, device: torch.device) -> dict[str, Any]:
    """The `generate` arguments that select ``mode``'s cache and compilation on ``device``."""
    check_decode(mode)
    if mode == "dynamic":
        return {}
    kwargs: dict[str, Any] = {"cache_implementation": "static"}
    if mode == "compiled":
        from transformers import CompileConfig

        gpu = device.type == "cuda"
        # transformers compiles on accelerators only unless told; on the CPU "reduce-overhead"
        # (CUDA graphs) does not apply, so plain inductor code is generated there
        kwargs["compile_config"] = CompileConfig(
            fullgraph=False, dynamic=False, mode="reduce-overhead" if gpu else "default"
        )
        if not gpu:
            kwargs["compile_config"]._compile_all_devices = True
    else:
        kwargs["disable_compile"] = True  # static cache, eager forward
    return kwargs


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the LLM's weights that one decoding step reads (every parameter and buffer of
    ``model``, at its stored dtype; tied weights once)."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


def bandwidth_bound_s(n_bytes: int, gpu: str) -> float | None:
    """The least time one decoding step can take on ``gpu`` (a MEMORY_BANDWIDTH key, matched in
    its name): ``n_bytes`` / peak bandwidth; None for an unknown device."""
    name = gpu.lower()
    for key, bandwidth in MEMORY_BANDWIDTH.items():
        if key in name:
            return n_bytes / bandwidth
    return None
