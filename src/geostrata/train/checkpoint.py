"""Atomic, safe-to-load training checkpoints.

A checkpoint is a directory ``step-XXXXXXXX`` holding

* ``model.safetensors`` -- the trainable (or given) weights; no pickle involved,
* ``<name>.pt`` -- optimizer / scheduler / grad-scaler state, written with ``torch.save`` and read
  back ONLY with ``torch.load(weights_only=True)``, so a tampered file cannot run code,
* ``trainer_state.json`` -- step, data position, RNG states, config; written LAST.

It is built in ``step-XXXXXXXX.tmp-<pid>``, every file fsync'ed, then renamed with ``os.replace``:
a crash at any moment leaves either the previous checkpoint set or the new complete one, never a
half-written directory that :func:`latest_checkpoint` would pick.

When other processes must add files of their own (DeepSpeed writes every rank's optimizer shard
itself), the main process opens the temp directory first with :func:`begin_staging`, every process
writes into it, and :func:`save_checkpoint` then finishes it (``staged=``) the same way.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import pickle
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import safetensors.torch
import torch

from geostrata.errors import CheckpointError

STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "model.safetensors"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_MAX_LISTED_KEYS = 20


@dataclass
class Checkpoint:
    """A complete checkpoint on disk; tensors are read lazily and safely."""

    path: Path
    step: int
    trainer_state: dict[str, Any]

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    def load_state(self, name: str) -> Any:
        """The object saved as ``<name>.pt`` (e.g. ``"optimizer"``), read without running code."""
        return load_torch_state(self.path / f"{name}.pt")

    def has_state(self, name: str) -> bool:
        return (self.path / f"{name}.pt").is_file()


@dataclass
class WeightsLoadResult:
    """What :func:`load_safetensors_weights` did: keys loaded, module keys absent from the file,
    file keys the module does not have."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def checkpoint_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    weights: dict[str, torch.Tensor],
    torch_states: dict[str, Any],
    trainer_state: dict[str, Any],
    keep_last: int = 0,
    staged: Path | None = None,
) -> Path:
    """Write a checkpoint atomically and prune old ones; return its final directory.

    ``torch_states`` maps a file stem (``"optimizer"``, ``"scheduler"``) to a state dict.
    ``keep_last`` > 0 keeps only that many newest complete checkpoints. ``staged``: the directory
    :func:`begin_staging` returned, already holding files other processes wrote; they are fsync'ed
    and kept, and the checkpoint is completed there instead of in a fresh temp directory.
    """
    output_dir = Path(output_dir)
    final = output_dir / checkpoint_dir_name(step)
    tmp = staged if staged is not None else _staging_path(output_dir, step)
    try:
        if staged is None:
            _fresh_dir(tmp)
        elif not staged.is_dir():
            raise CheckpointError(f"staging directory {staged} does not exist")
        else:
            _fsync_tree(staged)
        _write_contents(tmp, weights, torch_states, {**trainer_state, "step": step})
        _fsync_dir(tmp)
        _move_into_place(tmp, final)
        _fsync_dir(output_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise CheckpointError(
                f"disk full while writing checkpoint {tmp} (destination {final}); "
                "the previous checkpoint is untouched"
            ) from exc
        raise CheckpointError(f"could not write checkpoint {final}: {exc}") from exc
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last > 0:
        prune_checkpoints(output_dir, keep_last)
    return final


def begin_staging(output_dir: str | Path, step: int) -> Path:
    """Create (empty) the temp directory checkpoint ``step`` will be built in and return it, for
    other processes to write into before :func:`save_checkpoint` (``staged=``) completes it.

    Call it on the main process only, and share the path; it is never picked up as a checkpoint.
    """
    tmp = _staging_path(Path(output_dir), step)
    try:
        _fresh_dir(tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not create the staging directory {tmp}: {exc}") from exc
    return tmp


def _staging_path(output_dir: Path, step: int) -> Path:
    return output_dir / f"{checkpoint_dir_name(step)}.tmp-{os.getpid()}"


def _fresh_dir(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir()


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (written by other processes)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _write_contents(
    tmp: Path, weights: dict[str, torch.Tensor], torch_states: dict[str, Any], state: dict[str, Any]
) -> None:
    # Clones break any storage sharing (tied weights), which safetensors refuses to serialise.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    blob = safetensors.torch.save(tensors, metadata={"format": "pt"})
    _durable_write(tmp / WEIGHTS_FILE, lambda f: f.write(blob))
    for name, obj in torch_states.items():
        _durable_write(tmp / f"{name}.pt", lambda f, obj=obj: torch.save(obj, f))
    text = json.dumps(state, indent=1).encode("utf-8")
    _durable_write(tmp / STATE_FILE, lambda f: f.write(text))  # last: marks completeness


def _durable_write(path: Path, writer: Callable[[BinaryIO], Any]) -> None:
    with open(path, "wb") as f:
        writer(f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(tmp: Path, final: Path) -> None:
    """``os.replace`` cannot overwrite a non-empty directory: move an old one aside first."""
    if not final.exists():
        os.replace(tmp, final)
        return
    aside = final.parent / f"{final.name}.tmp-{os.getpid()}-old"
    os.replace(final, aside)
    os.replace(tmp, final)
    shutil.rmtree(aside, ignore_errors=True)


_TEMP_DIR = re.compile(r"^(?P<stem>.+)\.tmp-(?P<pid>\d+)$")


def remove_dead_temp_dirs(folder: str | Path, stem: str = r"step-\d+") -> list[Path]:
    """Delete ``<stem>.tmp-<pid>`` folders whose writing process no longer exists: what a kill
    mid-save leaves behind (never a checkpoint, but possibly gigabytes). A folder whose PID is
    alive (another writer, or a reused PID) is left alone. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for child in folder.iterdir():
        match = _TEMP_DIR.match(child.name)
        if not (match and re.fullmatch(stem, match["stem"]) and child.is_dir()):
            continue
        if _process_alive(int(match["pid"])):
            continue
        shutil.rmtree(child, ignore_errors=True)
        removed.append(child)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def list_checkpoints(output_dir: str | Path) -> list[Checkpoint]:
    """Complete checkpoints in ``output_dir``, oldest first; temp / incomplete dirs skipped."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    checkpoints = []
    for _, path in sorted(found):
        try:  # another process may prune it between listing and reading
            checkpoints.append(load_checkpoint(path))
        except CheckpointError:
            continue
    return checkpoints


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory, or None when there is none."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1].path if checkpoints else None


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest complete checkpoints; return the deleted paths."""
    old = list_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []
    for ckpt in old:
        shutil.rmtree(ckpt.path, ignore_errors=True)
    return [c.path for c in old]


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint directory, refusing one that was never completed."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if not state_file.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {STATE_FILE} is missing")
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {state_file}: {exc}") from exc
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{state_file} has no integer 'step' key")
    if not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {WEIGHTS_FILE} is missing")
    return Checkpoint(path=path, step=state["step"], trainer_state=state)


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


def _listing(keys: list[str]) -> str:
    if not keys:
        return "[]"
    more = f" ... and {len(keys) - _MAX_LISTED_KEYS} more" if len(keys) > _MAX_LISTED_KEYS else ""
    return "[" + ", ".join(keys[:_MAX_LISTED_KEYS]) + "]" + more


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU + CUDA) generator states as JSON-serialisable values."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
        "cuda": [],
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    try:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(_unb64(state["torch"]))
        if state.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"malformed RNG state in checkpoint: {exc}") from exc


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)
