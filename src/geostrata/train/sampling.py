"""The order in which training sees its data: an indexed data set or a stream.

`SeededSampleStream` cuts an endless sequence of seeded permutations of an indexed data set into
per-process micro-batches; `StreamBatches` does the same for an iterable (streamed) data set such
as `geostrata.data.shards.ShardStream`. Both are pure functions of (seed, epoch, rank) and a
position, which is what lets `train.loop` resume at exactly the next sample.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset

from geostrata.errors import ConfigError


class SeededSampleStream:
    """Endless per-process micro-batches of dataset indices.

    Global stream position ``g`` holds ``perm(seed, g // N)[g % N]``; micro-batch ``m`` covers
    positions ``[m*B*P, (m+1)*B*P)`` and process ``p`` takes its ``p``-th slice of ``B``. Starting
    at any ``start`` position reproduces the uninterrupted order exactly.
    """

    def __init__(
        self,
        dataset_len: int,
        batch_size: int,
        seed: int,
        start: int = 0,
        num_processes: int = 1,
        process_index: int = 0,
    ) -> None:
        if dataset_len <= 0:
            raise ConfigError("cannot train on an empty dataset (length 0)")
        self.n, self.batch_size, self.seed = dataset_len, batch_size, seed
        self.position = start
        self.num_processes, self.process_index = num_processes, process_index
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def _index(self, g: int) -> int:
        epoch = g // self.n
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, self.permutation(epoch)
        return int(self._perm[g % self.n])

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            first = self.position + self.process_index * self.batch_size
            yield [self._index(g) for g in range(first, first + self.batch_size)]
            self.position += self.batch_size * self.num_processes


@dataclass
class StreamPosition:
    """Where one process stands in a streamed dataset: the pass and the samples taken from it."""

    epoch: int = 0
    consumed: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}


class StreamBatches:
    """Endless micro-batches (lists of samples) drawn from an iterable dataset, pass after pass.

    ``position`` is updated before each batch is handed out, so between optimizer steps it is
    exactly what a resumed run must skip. Only the batch being filled is held here; the stream
    itself holds at most its shuffle buffer.
    """

    def __init__(self, dataset: Any, batch_size: int, start: StreamPosition | None = None) -> None:
        self.dataset, self.batch_size = dataset, batch_size
        self.position = start or StreamPosition()

    def _open(self) -> Iterator[Any]:
        """The current pass from ``position.consumed`` on."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.position.epoch)
        skip = self.position.consumed
        if skip and hasattr(self.dataset, "iter_from"):
            return iter(self.dataset.iter_from(skip))
        return itertools.islice(iter(self.dataset), skip, None)

    def _samples(self) -> Iterator[Any]:
        while True:
            for sample in self._open():
                self.position.consumed += 1
                yield sample
            if self.position.consumed == 0:
                raise ConfigError(
                    f"the training stream yielded no samples in epoch {self.position.epoch}: an "
                    "empty dataset, or an iterator that cannot be iterated a second time"
                )
            self.position = StreamPosition(self.position.epoch + 1, 0)

    def __iter__(self) -> Iterator[list[Any]]:
        samples = self._samples()
        while True:
            yield [next(samples) for _ in range(self.batch_size)]


def is_stream(dataset: Any) -> bool:
    """Streamed, not indexed: an ``IterableDataset``, or any iterable without ``__getitem__``."""
    return isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__")
