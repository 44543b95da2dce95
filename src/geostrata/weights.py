"""Loading weights without running code: safetensors (checked by header first) or
``torch.load(weights_only=True)``; every refusal is a CheckpointError naming the file."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterable, Iterator, Mapping
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


Shapes = Mapping[str, tuple[int, ...]]


@dataclass
class StateMismatch:
    """How the keys and shapes a module expects differ from those a weights source holds."""

    missing: list[str] = field(default_factory=list)  # expected, not found
    unexpected: list[str] = field(default_factory=list)  # found, not expected
    bad_shapes: list[str] = field(default_factory=list)  # "key: file (..) vs module (..)"

    def describe(self) -> str:
        parts = [f"missing keys {_listing(self.missing)}" if self.missing else "",
                 f"unexpected keys {_listing(self.unexpected)}" if self.unexpected else "",
                 f"shape mismatch {_listing(self.bad_shapes)}" if self.bad_shapes else ""]
        return "; ".join(p for p in parts if p)


def compare_shapes(expected: Shapes, found: Shapes, optional: Iterable[str] = ()) -> StateMismatch:
    """Compare key -> shape maps; keys in `optional` (e.g. tied copies) may be missing."""
    optional = set(optional)
    return StateMismatch(
        missing=sorted(k for k in expected if k not in found and k not in optional),
        unexpected=sorted(k for k in found if k not in expected),
        bad_shapes=[f"{k}: file {tuple(v)} vs module {tuple(expected[k])}" for k, v in found.items()
                    if k in expected and not same_shape(tuple(v), tuple(expected[k]))],
    )


def same_shape(saved: tuple[int, ...], own: tuple[int, ...]) -> bool:
    """Shapes that load into each other: equal, or a one-element tensor saved as a scalar (the
    retrieval gates were 0-d before FSDP2, which cannot shard 0-d parameters, needed (1,))."""
    return saved == own or {saved, own} == {(), (1,)}


def require_same_shapes(where: str, expected: Shapes, found: Shapes,
                        optional: Iterable[str] = ()) -> None:
    """CheckpointError: `where` (what did not fit what), then every missing, unexpected or
    mis-shaped key."""
    mismatch = compare_shapes(expected, found, optional)
    if mismatch.missing or mismatch.unexpected or mismatch.bad_shapes:
        raise CheckpointError(f"{where}: {mismatch.describe()}")


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """key -> shape from a safetensors header, without reading a tensor (or running code)."""
    verify_safetensors(path)
    with safetensors.safe_open(str(path), framework="pt") as handle:
        return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}


def state_shapes(module: torch.nn.Module) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """The module's state-dict key -> shape (works on the meta device), and the keys that are
    tied copies of another parameter (a saver may store one of them only)."""
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    names: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    tied = {n for group in names.values() if len(group) > 1 for n in group}
    return shapes, tied


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
    loaded_ptrs = {own[k].data_ptr() for k in tensors if k in own}
    tied_loaded = {k for k, v in own.items() if k not in tensors and v.data_ptr() in loaded_ptrs}
    mismatch = compare_shapes(
        {k: tuple(v.shape) for k, v in own.items()},
        {k: tuple(v.shape) for k, v in tensors.items()},
        optional=tied_loaded,
    )
    if mismatch.bad_shapes:
        raise CheckpointError(f"shape mismatch loading {path}: {_listing(mismatch.bad_shapes)}")
    if strict and (mismatch.missing or mismatch.unexpected):
        raise CheckpointError(
            f"weights in {path} do not match the module: missing keys "
            f"{_listing(mismatch.missing)}; unexpected keys {_listing(mismatch.unexpected)}"
        )
    loaded = sorted(k for k in tensors if k in own)
    module.load_state_dict({k: tensors[k] for k in loaded}, strict=False)
    return WeightsLoadResult(loaded, mismatch.missing, mismatch.unexpected)


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
