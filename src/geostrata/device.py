"""Where models run (this process's accelerator by default, or the device a user names) and which
process this is in a torchrun / accelerate launch job."""

from __future__ import annotations

import os

import torch

from geostrata.errors import ConfigError

AUTO = "auto"
DTYPES = ("float32", "bfloat16", "float16")


def compute_device() -> torch.device:
    """This process's GPU (``cuda:LOCAL_RANK`` under torchrun / accelerate), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def resolve_device(name: str | None) -> torch.device:
    """``None`` / "auto" -> :func:`compute_device`; else the named device, checked to exist."""
    if name is None or name == AUTO:
        return compute_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {name!r}: not a device name (auto, cpu, cuda, cuda:1)") from exc
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError(f"device {name!r}: no CUDA GPU is visible here (use cpu or auto)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: only {count} CUDA GPU(s) are visible")
    elif device.type not in ("cpu", "mps"):
        raise ConfigError(f"device {name!r}: expected auto, cpu, cuda[:N] or mps")
    return device


def resolve_dtype(name: str | None, default: str) -> torch.dtype:
    """A floating dtype by name (``None``: ``default``), with an error naming the choices."""
    chosen = name or default
    if chosen not in DTYPES:
        raise ConfigError(f"dtype {chosen!r}: expected one of {DTYPES}")
    return getattr(torch, chosen)


def world() -> tuple[int, int]:
    """(rank, world size): the process group's when one is up, else what torchrun / accelerate
    launch put in the environment (before the group starts), else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that writes shared files."""
    return world()[0] == 0
