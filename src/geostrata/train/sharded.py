"""What FSDP (version 2) and DeepSpeed ZeRO need from a training loop that was written for
whole-model processes: their config filled from ours, their gradient norms as floats, optimizer
state re-keyed between torch's index layout and a full state dict's name layout, and the whole
model gathered from its shards for saving.

The loop (`loop.py`) calls these; each is a small function of plain objects, so the CPU tests
exercise them without a cluster.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from geostrata.device import is_main_process
from geostrata.errors import CheckpointError
from geostrata.session.train_config import TrainConfig


def fsdp_sharded(accelerator: Accelerator, model: torch.nn.Module) -> bool:
    """True when FSDP is on and ``model`` is already sharded (by an earlier stage's prepare)."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def fill_deepspeed_config(
    ds_config: dict[str, Any], cfg: TrainConfig, num_processes: int
) -> list[str]:
    """Set the batch geometry and clipping DeepSpeed must be told, from ``cfg``; in place.

    The loop feeds its own micro-batches, so Accelerate has no DataLoader to fill
    ``train_micro_batch_size_per_gpu: auto`` from; DeepSpeed also divides the loss by its own
    ``gradient_accumulation_steps`` and clips at its own ``gradient_clipping`` (Accelerate's
    ``clip_grad_norm_`` only reports the norm), so both must be the loop's. Returns a note for each
    explicit (not ``auto``) value that was different and is overridden.
    """
    wanted: dict[str, int | float] = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.batch_size * cfg.grad_accum * num_processes,
        "gradient_clipping": float(max(cfg.max_grad_norm, 0.0)),  # 0: DeepSpeed does not clip
    }
    notes = []
    for key, value in wanted.items():
        old = ds_config.get(key, "auto")
        if old not in ("auto", None) and old != value:
            notes.append(f"{key}={old!r} replaced by {value!r}")
        ds_config[key] = value
    return notes


def norm_value(norm: Any) -> float | None:
    """``clip_grad_norm_``'s result as a float: a tensor, a DTensor (FSDP2), or under DeepSpeed
    the engine's norm as a float, or None when it has none."""
    if norm is None:
        return None
    if hasattr(norm, "full_tensor"):  # a replicated DTensor: no communication
        norm = norm.full_tensor()
    return float(norm)


def inner_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside Accelerate's wrapper."""
    from accelerate.optimizer import AcceleratedOptimizer

    while isinstance(optimizer, AcceleratedOptimizer):
        optimizer = optimizer.optimizer
    return optimizer


def optimizer_state_by(state: dict[str, Any], order: list[str], by_name: bool) -> dict[str, Any]:
    """An optimizer state dict keyed by parameter name (``by_name``, the layout of a full FSDP
    state dict) or by index (``torch.optim``'s own); ``order`` maps index to name. Returned as is
    when already keyed that way, so a checkpoint resumes with or without FSDP."""
    groups = state.get("param_groups") or []
    keys = [k for g in groups for k in g.get("params", [])]
    if all(isinstance(k, str) for k in keys) == by_name:
        return state
    if by_name:
        rekey: dict[Any, Any] = {i: order[i] for i in range(len(order))}
    else:
        rekey = {name: i for i, name in enumerate(order)}
    unknown = [k for k in keys if k not in rekey]
    if unknown:
        raise CheckpointError(
            f"the saved optimizer state holds parameters the optimizer does not: {unknown[:20]}"
        )
    return {
        "state": {rekey[k]: v for k, v in state.get("state", {}).items()},
        "param_groups": [{**g, "params": [rekey[k] for k in g["params"]]} for g in groups],
    }


def zero_stage(acc: Accelerator) -> int:
    return int(acc.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def gather_full_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """Every weight and buffer of a model that FSDP2 or DeepSpeed ZeRO-3 shards over processes,
    whole, on the main process's CPU (others get ``{}``); None when the model is not sharded
    (its own ``state_dict()`` is whole). Collective: every process must call it."""
    from torch.distributed.fsdp import FSDPModule

    main = is_main_process()
    if isinstance(model, FSDPModule):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(model, options=options)
        return full if main else {}
    params = list(model.parameters())
    if not any(hasattr(p, "ds_id") for p in params):  # DeepSpeed tags ZeRO-3 partitions so
        return None
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        if not main:
            return {}
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
