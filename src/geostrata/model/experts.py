"""Semantic experts: one small transformer block per semantic level, applied coarse to fine.

E_scene(v_scene'), E_region(v_region' | E_scene out), E_object(v_object' | coarser outputs): each
finer expert cross-attends to what the coarser experts concluded, so object tokens are read in the
context of their scene. A router w = softmax(W_r q) (B, L) scales each level's output by L * w_l
(mean scale 1), letting the question decide which granularity matters; a Switch-style balance loss
L * sum_l (mean_b w_bl)^2 - 1 (zero when the mean routing is uniform) stops collapse onto one
expert.
`experts=False` replaces all of this by one shared dense block with the router off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from geostrata.model.settings import ExpertsConfig


@dataclass
class ExpertsOutput:
    tokens: dict[str, torch.Tensor]  # level -> (B, N_l, D), already scaled by the router
    router_weights: torch.Tensor  # (B, L), rows sum to 1 (uniform when experts are off)
    balance_loss: torch.Tensor | None  # scalar; None when the router is off


class ExpertBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention to coarser context, FFN."""

    def __init__(self, hidden_size: int, num_heads: int, ffn_mult: int, cross: bool) -> None:
        super().__init__()
        d = hidden_size
        self.self_norm = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, num_heads, batch_first=True)
        self.cross = cross
        if cross:
            self.cross_norm = nn.LayerNorm(d)
            self.cross_attn = nn.MultiheadAttention(d, num_heads, batch_first=True)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Linear(ffn_mult * d, d))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, D), context (B, M, D) or None -> (B, N, D)."""
        h = self.self_norm(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        if self.cross and context is not None:
            x = x + self.cross_attn(self.cross_norm(x), context, context, need_weights=False)[0]
        return x + self.ffn(self.ffn_norm(x))


def balance_loss(weights: torch.Tensor) -> torch.Tensor:
    """L * sum_l (mean_b w_bl)^2 - 1: zero for uniform mean routing, L - 1 when collapsed."""
    n_levels = weights.shape[1]
    return n_levels * weights.mean(dim=0).pow(2).sum() - 1.0


class SemanticExperts(nn.Module):
    """Hierarchical experts (or a shared dense block) over the augmented level tokens."""

    def __init__(self, config: ExpertsConfig) -> None:
        super().__init__()
        self.config = config
        d, heads, mult = config.hidden_size, config.num_heads, config.expert_ffn_mult
        if config.experts:
            self.experts = nn.ModuleDict(
                {lv: ExpertBlock(d, heads, mult, cross=i > 0) for i, lv in enumerate(config.levels)}
            )
            self.router = nn.Linear(config.knowledge_dim, len(config.levels))  # W_r
        else:
            self.shared = ExpertBlock(d, heads, mult, cross=False)

    def route(self, question: torch.Tensor) -> torch.Tensor:
        """Router weights (B, L) for question embeddings (B, Dk); uniform with experts off."""
        if not self.config.experts:
            n = len(self.config.levels)
            return question.new_full((question.shape[0], n), 1.0 / n)
        return torch.softmax(self.router(question), dim=-1)

    def forward(self, tokens: dict[str, torch.Tensor], question: torch.Tensor) -> ExpertsOutput:
        """tokens: level -> (B, N_l, D); question (B, Dk) -> ExpertsOutput."""
        levels = self.config.levels
        n = len(levels)
        weights = self.route(question)  # (B, L)
        if not self.config.experts:
            return ExpertsOutput({lv: self.shared(tokens[lv]) for lv in levels}, weights, None)
        out, coarser = {}, []
        for i, lv in enumerate(levels):  # coarse to fine
            context = torch.cat(coarser, dim=1) if coarser else None  # (B, sum N_coarser, D)
            y = self.experts[lv](tokens[lv], context)  # (B, N_l, D)
            coarser.append(y)  # finer experts see the unscaled coarse outputs
            out[lv] = y * (n * weights[:, i]).view(-1, 1, 1)
        return ExpertsOutput(out, weights, balance_loss(weights))
