"""Semantic experts: router, coarse-to-fine context, dense equivalence, balance loss."""

import torch

from geostrata.model.experts import ExpertBlock, SemanticExperts, balance_loss
from geostrata.model.settings import ExpertsConfig

LEVELS = ["scene", "region", "object"]


def _tokens(levels=LEVELS, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = {"scene": 1, "region": 4, "object": 6}
    return {lv: torch.randn(3, sizes[lv], 8, generator=g) for lv in levels}


def _experts(levels=LEVELS, experts=True, seed=0):
    torch.manual_seed(seed)
    return SemanticExperts(
        ExpertsConfig(
            levels=levels, hidden_size=8, knowledge_dim=5, experts=experts, num_heads=2,
            expert_ffn_mult=2,
        )
    ).eval()


def test_router_weights_sum_to_one_and_scale_outputs():
    module = _experts()
    q = torch.randn(3, 5)
    out = module(_tokens(), q)
    assert out.router_weights.shape == (3, 3)
    assert torch.allclose(out.router_weights.sum(-1), torch.ones(3))
    assert out.balance_loss is not None and out.balance_loss >= 0


def test_finer_experts_see_coarser_outputs():
    module = _experts()
    q = torch.randn(3, 5)
    base = module(_tokens(), q).tokens
    changed = _tokens()
    changed["scene"] = changed["scene"] + 1.0
    after = module(changed, q).tokens
    assert not torch.allclose(base["object"], after["object"])  # object reads scene's output
    changed_obj = _tokens()
    changed_obj["object"] = changed_obj["object"] + 1.0
    assert torch.allclose(module(changed_obj, q).tokens["scene"], base["scene"])  # not the reverse


def test_one_expert_router_off_equals_dense_block():
    levels = ["region"]
    routed = _experts(levels, experts=True, seed=1)
    dense = _experts(levels, experts=False, seed=2)
    dense.shared.load_state_dict(routed.experts["region"].state_dict())
    block = ExpertBlock(8, 2, 2, cross=False).eval()
    block.load_state_dict(routed.experts["region"].state_dict())
    x, q = _tokens(levels), torch.randn(3, 5)
    a, b = routed(x, q), dense(x, q)
    assert torch.allclose(a.tokens["region"], b.tokens["region"], atol=1e-6)
    assert torch.allclose(a.tokens["region"], block(x["region"]), atol=1e-6)
    assert torch.allclose(b.router_weights, torch.ones(3, 1))


def test_experts_off_is_uniform_without_balance_loss():
    out = _experts(experts=False)(_tokens(), torch.randn(3, 5))
    assert torch.allclose(out.router_weights, torch.full((3, 3), 1 / 3))
    assert out.balance_loss is None


def test_balance_loss_zero_when_uniform_and_max_when_collapsed():
    assert torch.isclose(balance_loss(torch.full((4, 3), 1 / 3)), torch.tensor(0.0), atol=1e-6)
    collapsed = torch.tensor([[1.0, 0.0, 0.0]] * 4)
    assert torch.isclose(balance_loss(collapsed), torch.tensor(2.0))
