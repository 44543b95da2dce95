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
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from geostrata.atomic import durable_write, fsync_dir, fsync_tree, move_into_place
from geostrata.errors import CheckpointError
from geostrata.weights import (  # noqa: F401  (re-exported: the checkpoint API)
    WeightsLoadResult,
    load_safetensors_weights,
    load_torch_state,
    read_safetensors,
    verify_safetensors,
)

STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "model.safetensors"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


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
            fsync_tree(staged)
        _write_contents(tmp, weights, torch_states, {**trainer_state, "step": step})
        fsync_dir(tmp)
        move_into_place(tmp, final)
        fsync_dir(output_dir)
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


def _write_contents(
    tmp: Path, weights: dict[str, torch.Tensor], torch_states: dict[str, Any], state: dict[str, Any]
) -> None:
    # Clones break any storage sharing (tied weights), which safetensors refuses to serialise.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    blob = safetensors.torch.save(tensors, metadata={"format": "pt"})
    durable_write(tmp / WEIGHTS_FILE, lambda f: f.write(blob))
    for name, obj in torch_states.items():
        durable_write(tmp / f"{name}.pt", lambda f, obj=obj: torch.save(obj, f))
    text = json.dumps(state, indent=1).encode("utf-8")
    durable_write(tmp / STATE_FILE, lambda f: f.write(text))  # last: marks completeness


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
