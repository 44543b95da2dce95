"""Loading weights without running code: safetensors (checked by header first) or
``torch.load(weights_only=True)``; every refusal is a CheckpointError naming the file."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from geostrata.errors import CheckpointError

_MAX_LISTED_KEYS = 20


@dataclass
class WeightsLoadResult:
    """What :func:`load_safetensors_weights` did: keys loaded, module keys absent from the file,
    file keys the module does not have."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def load_torch_state(path: str | Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers; anything else is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to unpickle {path}: it needs code beyond tensors and plain containers "
            f"({_unpickling_reason(exc)}). It was not loaded; do not retry with weights_only=False "
            "unless you trust its origin."
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint file {path}: {exc}") from exc


def _unpickling_reason(exc: Exception) -> str:
    """The line of torch's long message that names the blocked global, when there is one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or line.startswith("Unsupported")]
    return (named or lines or [type(exc).__name__])[0]


def verify_safetensors(path: str | Path) -> None:
    """Refuse a weights file that is not safetensors (a renamed pickle, a cut file) by its header.

    safetensors never runs code, but its own errors do not name the file; loaders call this first
    so a tampered or damaged model folder gives a CheckpointError that says which file is bad.
    """
    path = Path(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # SafetensorError, OSError: both mean "do not load this"
        raise CheckpointError(
            f"{path}: not a safetensors file ({exc}); refusing to load it"
        ) from exc


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU; CheckpointError naming the file if it is
    missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError for corrupt headers
        raise CheckpointError(f"cannot read weights file {path}: {exc}") from exc


def load_safetensors_weights(
    module: torch.nn.Module, path: str | Path, strict: bool = True
) -> WeightsLoadResult:
    """Copy the tensors of a safetensors file into ``module``.

    ``strict`` requires the file to cover exactly the module's state dict; otherwise missing keys
    (e.g. frozen weights not saved) are allowed and returned. A shape mismatch or, in strict mode,
    any missing / unexpected key raises CheckpointError listing them. Tied weights count as loaded
    when their shared tensor is.
    """
    tensors = read_safetensors(path)
    own = module.state_dict()
    unexpected = sorted(k for k in tensors if k not in own)
    bad_shapes = [
        f"{k}: file {tuple(v.shape)} vs module {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad_shapes:
        raise CheckpointError(f"shape mismatch loading {path}: {_listing(bad_shapes)}")
    loaded_ptrs = {own[k].data_ptr() for k in tensors if k in own}
    missing = sorted(
        k for k, v in own.items() if k not in tensors and v.data_ptr() not in loaded_ptrs
    )
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"weights in {path} do not match the module: missing keys {_listing(missing)}; "
            f"unexpected keys {_listing(unexpected)}"
        )
    loaded = sorted(k for k in tensors if k in own)
    module.load_state_dict({k: tensors[k] for k in loaded}, strict=False)
    return WeightsLoadResult(loaded=loaded, missing=missing, unexpected=unexpected)


@contextlib.contextmanager
def hf_progress_bars_off() -> Iterator[None]:
    """transformers' "Loading weights" / "Writing model shards" bars off while we load or save
    a model (restored after): they said nothing a user could act on and buried our own output."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _listing(keys: list[str]) -> str:
    if not keys:
        return "[]"
    more = f" ... and {len(keys) - _MAX_LISTED_KEYS} more" if len(keys) > _MAX_LISTED_KEYS else ""
    return "[" + ", ".join(keys[:_MAX_LISTED_KEYS]) + "]" + more
