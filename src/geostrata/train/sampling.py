"""The order in which training sees its data.

`SeededSampleStream` cuts an endless sequence of seeded permutations of an indexed data set into
per-process micro-batches: a pure function of (seed, epoch, rank) and a position, which is what
lets `train.loop` resume at exactly the next sample.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

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
