"""The training recipe: which parameters train, AdamW with decay on matrices only, linear warm-up
then cosine decay, and the Accelerator they run on."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from accelerate import Accelerator

from geostrata.errors import ConfigError
from geostrata.session.train_config import TrainConfig


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """An Accelerator for ``cfg``; mixed precision only where there is a GPU to use it.

    Without a GPU, ``cpu=True`` lets ``torchrun`` / ``accelerate launch`` give N CPU processes
    (gloo); Accelerate would otherwise run each of them as an independent single process. A launch
    that asks for FSDP or DeepSpeed (``accelerate launch --config_file configs/accelerate/...``
    sets ``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED``) gets that engine on the CPU too,
    over gloo, where Accelerate alone would fall back to plain data parallelism: the same
    `geostrata train` runs sharded on a CPU machine (the test suite's multi-process runs).
    """
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    gpu = torch.cuda.is_available()
    # Ablation switches and optional inputs (e.g. the default question vector) leave some
    # trainable parameters unused in a step; DDP must be told, or it waits for their gradients.
    handlers: list = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    precision = cfg.mixed_precision if gpu else "no"
    if not gpu and _env_flag("ACCELERATE_USE_DEEPSPEED"):
        # DeepSpeed's CPU accelerator (DS_ACCELERATOR=cpu) on gloo; cpu=True would drop DeepSpeed
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
        return Accelerator(
            gradient_accumulation_steps=cfg.grad_accum, mixed_precision=precision,
            kwargs_handlers=handlers,
        )  # fmt: skip
    acc = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=precision,
        cpu=not gpu,
        kwargs_handlers=handlers,
    )
    if not gpu and _env_flag("ACCELERATE_USE_FSDP") and acc.num_processes > 1:
        _fsdp_on_cpu(acc)
    return acc


def _env_flag(name: str) -> bool:
    import os

    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def _fsdp_on_cpu(acc: Accelerator) -> None:
    """Switch a multi-CPU Accelerator to FSDP (the plugin as the launch config's environment
    describes it), as Accelerate records FSDP on GPUs; ``prepare`` then shards with
    ``fully_shard`` on a CPU mesh."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # reads FSDP_* from the environment
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # both shared states
    acc.state.distributed_type = DistributedType.FSDP
    acc.state.fsdp_plugin = plugin


def build_optimizer(
    named_params: Sequence[tuple[str, torch.nn.Parameter]], cfg: TrainConfig
) -> torch.optim.AdamW:
    """AdamW; matrices decay, biases and norm gains (ndim < 2) do not (the usual GPT recipe)."""
    decay = [p for _, p in named_params if p.ndim >= 2]
    no_decay = [p for _, p in named_params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to ``lr``, then cosine down to ``min_lr_ratio * lr`` at ``max_steps``."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=cfg.warmup_steps,
        num_training_steps=cfg.max_steps,
        min_lr_rate=cfg.min_lr_ratio,
    )


def named_trainable(
    model: torch.nn.Module, params: Sequence[torch.nn.Parameter] | None
) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) pairs in model order; names key the saved weights."""
    all_named = list(model.named_parameters())
    if params is None:
        named = [(n, p) for n, p in all_named if p.requires_grad]
    else:
        wanted = {id(p) for p in params}
        named = [(n, p) for n, p in all_named if id(p) in wanted]
        if len(named) != len(wanted):
            missing = len(wanted) - len(named)
            raise ConfigError(f"{missing} of the given params are not parameters of the model")
    if not named:
        raise ConfigError("nothing to train: no parameter requires grad and none were given")
    return named
