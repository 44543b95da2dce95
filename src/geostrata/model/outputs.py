"""Typed output of GeoStrataForConditionalGeneration.forward (one dataclass, never a tuple).

A plain dataclass rather than a transformers ModelOutput: ModelOutput (v5) renames a field called
`past_key_values` to `cache` on construction, and our public name is `past_key_values`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class RetrievedCues:
    """Top-k knowledge-base cues of one level for a batch, best first: what the Semantic
    Augmentation Module used, what predict shows and what evaluation scores."""

    scores: torch.Tensor  # (B, k) cosine scores, differentiable w.r.t. the query projection
    indices: torch.Tensor  # (B, k) rows into the level's entry embeddings; -1 where fewer than k
    entry_ids: Sequence[str]  # row -> entry id of the level

    @property
    def ids(self) -> list[list[str]]:
        """B lists of k entry ids ("" where fewer than k); reads the indices back from the
        device, so training steps never ask for it."""
        return [[self.entry_ids[i] if i >= 0 else "" for i in row] for row in self.indices.tolist()]

    def row(self, i: int) -> list[tuple[str, float]]:
        """(entry id, score) pairs of batch row `i`, padding slots left out."""
        pairs = zip(self.ids[i], self.scores[i].tolist(), strict=True)
        return [(entry, score) for entry, score in pairs if entry]


@dataclass
class GeoStrataOutput:
    """Losses are reported separately so training logs show which objective moves.

    loss = lm_loss + lambda_align * align_loss + lambda_balance * balance_loss (None without
    labels).
    retrieved: level -> RetrievedCues; empty when retrieval is off, None for the llava baseline
    or text-only calls.
    """

    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    align_loss: torch.Tensor | None = None
    balance_loss: torch.Tensor | None = None
    router_loss: torch.Tensor | None = None  # router vs the question's level (lambda_router > 0)
    logits: torch.Tensor | None = None  # (B, T, V)
    past_key_values: object | None = None  # the LLM's KV cache (transformers Cache)
    router_weights: torch.Tensor | None = None  # (B, L)
    retrieved: dict[str, RetrievedCues] | None = None
    input_ids: torch.Tensor | None = None  # (B, T) what the LLM read: cue slots hold entry names
