"""Evaluation across processes: each rank takes every world-th record, results are gathered.

Under torchrun / accelerate launch (a torch.distributed process group is up) a list of records is
split round-robin over the ranks, each rank runs the model on its share, and every rank receives
all results back in the original order, so metrics are identical to a single-process run.
Without a process group this is a plain call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch.distributed as dist

from geostrata.device import world

T = TypeVar("T")


def init_from_env() -> None:
    """Join the process group that torchrun / accelerate launch describe in the environment."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())  # gloo on CPU, nccl on GPUs


def sharded_map(fn: Callable[[Sequence[Any]], list[T]], records: Sequence[Any]) -> list[T]:
    """`fn(records)` computed in parallel shards over the process group, in the original order."""
    rank, size = world()
    if size == 1 or not dist.is_initialized():
        return fn(records)
    indices = list(range(rank, len(records), size))
    local = fn([records[i] for i in indices]) if indices else []
    gathered: list[list[tuple[int, T]] | None] = [None] * size
    dist.all_gather_object(gathered, list(zip(indices, local, strict=True)))
    merged = dict(pair for part in gathered for pair in (part or []))
    return [merged[i] for i in range(len(records))]
