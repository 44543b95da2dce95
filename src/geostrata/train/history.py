"""``history.jsonl``: one JSON line per logged step, appended by the main process.

A kill may cut the last line short; resume drops it, and every entry past the resumed step (they
will be recomputed), and rewrites the file atomically, so it reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from geostrata.atomic import write_text_atomic
from geostrata.errors import CheckpointError
from geostrata.textio import read_jsonl

HISTORY_FILE = "history.jsonl"


def append_entry(out_dir: str | Path, entry: dict[str, Any]) -> None:
    """One line at the end of ``out_dir/history.jsonl`` (created with its folder)."""
    path = Path(out_dir) / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
    except OSError as exc:  # e.g. disk full: name the file instead of a bare OSError
        raise CheckpointError(f"could not append to {path}: {exc}") from exc


def read_history(out_dir: str | Path, up_to_step: float = math.inf) -> list[dict[str, Any]]:
    """The whole entries up to ``up_to_step``, in file order (a line cut short is skipped)."""
    path = Path(out_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    entries = (value for _, value in read_jsonl(path, CheckpointError, skip_bad=True))
    return [e for e in entries if isinstance(e, dict) and e.get("step", math.inf) <= up_to_step]


def rewind_history(
    accelerator: Accelerator, out_dir: str | Path, step: int
) -> list[dict[str, Any]]:
    """Keep the entries up to ``step`` and rewrite the file with them (main process); every
    process returns them."""
    entries = read_history(out_dir, step)
    accelerator.wait_for_everyone()  # all have read before the main process rewrites
    path = Path(out_dir) / HISTORY_FILE
    if accelerator.is_main_process and path.is_file():
        write_text_atomic(path, "".join(json.dumps(e) + "\n" for e in entries))
    accelerator.wait_for_everyone()
    return entries
