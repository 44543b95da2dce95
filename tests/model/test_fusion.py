"""Fusion: fixed token budget, level embeddings, <image> splicing."""

import pytest
import torch

from geostrata.model.fusion import CrossModalFusion, LlavaProjector, splice_image_tokens
from geostrata.model.settings import FusionConfig


def test_fusion_output_has_the_fixed_budget():
    torch.manual_seed(0)
    fusion = CrossModalFusion(
        FusionConfig(
            levels=["scene", "region", "object"],
            hidden_size=8,
            llm_hidden_size=6,
            num_image_tokens=9,
            region_grid=2,
        )
    )
    tokens = {
        "scene": torch.randn(2, 1, 8),
        "region": torch.randn(2, 4, 8),
        "object": torch.randn(2, 16, 8),
    }
    assert fusion(tokens).shape == (2, 9, 6)


def test_llava_projector_shape():
    cfg = FusionConfig(
        levels=["scene"], region_grid=2, hidden_size=32, llm_hidden_size=6, num_image_tokens=9,
        baseline="llava",
    )
    proj = LlavaProjector(cfg, in_dim=8)  # the tower's width, not the level tokens
    assert proj(torch.randn(2, 16, 8)).shape == (2, 9, 6)


def test_splice_writes_image_tokens_in_place():
    embeds = torch.zeros(2, 5, 3)
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    image = torch.arange(12.0).view(2, 2, 3)
    out = splice_image_tokens(embeds, mask, image)
    assert torch.equal(out[0, 1:3], image[0]) and torch.equal(out[1, 0:2], image[1])
    assert out[0, 0].abs().sum() == 0


def test_splice_count_mismatch_names_both_counts():
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[:, :2] = True
    with pytest.raises(ValueError, match=r"4 <image> tokens.*6 image features"):
        splice_image_tokens(torch.zeros(2, 5, 3), mask, torch.zeros(2, 3, 3))
