"""Where a training run stands (what resume restores) and the progress bar that shows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Progress:
    """Mutable position of the run; everything :func:`geostrata.train.loop.train` must restore
    on resume besides the engine's state."""

    dataset_len: int
    step: int = 0
    samples_seen: int = 0  # global position in the sample stream (all processes)
    last_checkpoint: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def epoch(self) -> float:
        return self.samples_seen / self.dataset_len


class ProgressBar:
    """A rich bar with step, loss and samples/s; a silent stand-in when disabled."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.enabled, self.total, self.start = enabled, total, start
        self._bar: Any = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("step"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[sps]} samples/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                "train", total=self.total, completed=self.start, loss="-", sps="-"
            )
        return self

    def update(self, entry: dict[str, float]) -> None:
        if self._bar is not None:
            loss, sps = f"{entry['loss']:.4f}", f"{entry['samples_per_s']:.1f}"
            self._bar.update(self._task, loss=loss, sps=sps)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
