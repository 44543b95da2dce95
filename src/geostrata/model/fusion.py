"""Cross-modal fusion: level tokens -> a fixed number of LLM-width image tokens in the prompt.

Token budget (FusionConfig.token_budget): scene 1 token, region G*G tokens, and the finest active
level takes the rest of `num_image_tokens` (object tokens are pooled down to it; a coarse level that
ends up finest is repeated up to it). The total never changes with the ablation switches, so the
processor's `<image>` expansion is one number for every variant. The llava baseline maps the
tower's last-layer patch tokens through a 2-layer MLP to the same budget.
"""

from __future__ import annotations

import torch
from torch import nn

from geostrata.model.settings import FusionConfig
from geostrata.model.vision import fit_tokens


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


class CrossModalFusion(nn.Module):
    """Concatenated level tokens + learned level embeddings -> 2-layer MLP -> (B, T_img, D_llm)."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        self.budget = config.token_budget()
        self.level_embed = nn.Parameter(torch.randn(len(config.levels), config.hidden_size) * 0.02)
        self.mlp = _mlp(config.hidden_size, config.llm_hidden_size)

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for i, level in enumerate(self.config.levels):
            x = fit_tokens(tokens[level], self.budget[level])  # (B, budget_l, D)
            parts.append(x + self.level_embed[i])
        return self.mlp(torch.cat(parts, dim=1))  # (B, T_img, D_llm)


class LlavaProjector(nn.Module):
    """Baseline: last-layer patch tokens -> 2-layer MLP, no retrieval, no experts."""

    def __init__(self, config: FusionConfig, in_dim: int) -> None:
        """`in_dim`: width of the tower's last layer."""
        super().__init__()
        self.num_tokens = config.num_image_tokens
        self.mlp = _mlp(in_dim, config.llm_hidden_size)

    def forward(self, last: torch.Tensor) -> torch.Tensor:
        return self.mlp(fit_tokens(last, self.num_tokens))  # (B, T_img, D_llm)


def splice_image_tokens(
    inputs_embeds: torch.Tensor, image_mask: torch.Tensor, image_tokens: torch.Tensor
) -> torch.Tensor:
    """Write image tokens (B, T_img, D) at the `<image>` positions (B, T) of embeds (B, T, D)."""
    n_slots = int(image_mask.sum())
    n_feats = image_tokens.shape[0] * image_tokens.shape[1]
    per_row = image_mask.sum(dim=1)  # (B,) each row must hold one image's tokens
    if n_slots != n_feats or bool((per_row != image_tokens.shape[1]).any()):
        raise ValueError(
            f"Image features and image tokens do not match: the prompt has {n_slots} "
            f"<image> tokens but the model produced {n_feats} image features "
            f"({image_tokens.shape[0]} images x {image_tokens.shape[1]} tokens; "
            f"per row: {per_row.tolist()})"
        )
    mask = image_mask.unsqueeze(-1).expand_as(inputs_embeds)  # (B, T, D)
    return inputs_embeds.masked_scatter(mask, image_tokens.to(inputs_embeds.dtype))
