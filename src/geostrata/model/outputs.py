"""Typed output of GeoStrataForConditionalGeneration.forward (one dataclass, never a tuple).

A plain dataclass rather than a transformers ModelOutput: ModelOutput (v5) renames a field called
`past_key_values` to `cache` on construction, and our public name is `past_key_values`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GeoStrataOutput:
    """Losses are reported separately so training logs show which objective moves.

    loss = lm_loss + lambda_align * align_loss + lambda_balance * balance_loss (None without
    labels).
    retrieved: level -> (ids: B lists of k entry ids, scores: (B, k) tensor); empty when retrieval
    is off, None for the llava baseline or text-only calls.
    """

    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    align_loss: torch.Tensor | None = None
    balance_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T, V)
    past_key_values: object | None = None  # the LLM's KV cache (transformers Cache)
    router_weights: torch.Tensor | None = None  # (B, L)
    retrieved: dict[str, tuple[list[list[str]], torch.Tensor]] | None = None
