"""The small interface the model depends on, so the model never imports FAISS directly.

`KnowledgeBase` (knowledge/base.py) implements it; tests may pass any object of this shape.
All embeddings are float32 and L2-normalised, so inner product is cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from geostrata.knowledge.relations import Relations
from geostrata.levels import ENTRY_LEVELS

LEVELS = ENTRY_LEVELS


@dataclass(frozen=True)
class SearchResult:
    """Top-k hits of one level for a batch of B queries."""

    ids: list[list[str]]  # B lists of k entry ids, best first
    indices: np.ndarray  # (B, k) int64 rows into `level_embeddings(level)`; -1 where fewer than k
    scores: np.ndarray  # (B, k) float32 inner products


@runtime_checkable
class Retriever(Protocol):
    """What the Semantic Augmentation Module needs from a knowledge base."""

    @property
    def dim(self) -> int:
        """Embedding width D of the text encoder."""
        ...

    @property
    def encoder_name(self) -> str:
        """Name of the text encoder, so a checkpoint can check it gets the same space."""
        ...

    def level_ids(self, level: str) -> list[str]:
        """Entry ids of one level, in the row order of `level_embeddings(level)`."""
        ...

    def level_embeddings(self, level: str) -> np.ndarray:
        """(N_level, D) float32, L2-normalised."""
        ...

    def search(self, queries: np.ndarray, level: str, k: int) -> SearchResult:
        """Batched top-k of `queries` (B, D) among the entries of `level`."""
        ...

    def relations(self, level: str, other: str) -> Relations:
        """What each `level` entry is related to among the `other` entries (only needed with
        relational retrieval, `relation_weight` > 0)."""
        ...

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """(B, D) float32 L2-normalised embeddings of free text (questions, descriptions)."""
        ...

    def resolve(self, label: str, dataset: str | None = None, level: str | None = None) -> str:
        """Entry id for a dataset's class label (by name, synonym or mapping table), among the
        entries of `level` when given."""
        ...
