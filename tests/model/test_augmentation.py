"""Semantic Augmentation Module: retrieval per level, differentiable scores, k=0, alignment loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geostrata.errors import KnowledgeBaseError
from geostrata.model.augmentation import SemanticAugmentation
from geostrata.model.settings import AugmentationConfig

from .conftest import DIM, N_ENTRIES

LEVELS = ["scene", "region", "object"]


def _module(retriever, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = AugmentationConfig(levels=LEVELS, hidden_size=8, knowledge_dim=DIM, num_heads=2, **kw)
    module = SemanticAugmentation(cfg, in_dims={lv: 12 for lv in LEVELS})
    module.attach(retriever, torch.device("cpu"))
    return module


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = {
        "scene": torch.randn(2, 1, 12, generator=g),
        "region": torch.randn(2, 4, 12, generator=g),
        "object": torch.randn(2, 6, 12, generator=g),
    }
    q = F.normalize(torch.randn(2, DIM, generator=g), dim=-1)
    return feats, q


@pytest.fixture
def index_search(monkeypatch):
    """Force the retriever's own index (FAISS in real use) instead of the on-device search."""
    monkeypatch.setattr("geostrata.model.augmentation.EXACT_SEARCH_MAX", 0)


def test_retrieval_queries_each_level_and_returns_its_entries(retriever, index_search):
    module = _module(retriever, top_k=3)
    feats, q = _inputs()
    out = module(feats, q)
    assert [c[0] for c in retriever.calls] == LEVELS
    for level, k, queries in retriever.calls:
        assert k == 3 and queries.shape == (2, DIM)
        assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)  # r_l is normalised
        ids = out.retrieved[level].ids
        assert all(i.startswith(f"{level}:") for row in ids for i in row)
        assert out.tokens[level].shape == feats[level].shape[:2] + (8,)


def test_on_device_search_finds_what_the_index_finds(retriever, monkeypatch):
    feats, q = _inputs(seed=3)
    exact = _module(retriever, top_k=3)(feats, q)
    assert retriever.calls == []  # small levels never leave the device
    monkeypatch.setattr("geostrata.model.augmentation.EXACT_SEARCH_MAX", 0)
    indexed = _module(retriever, top_k=3)(feats, q)
    assert len(retriever.calls) == len(LEVELS)
    for level in LEVELS:
        assert exact.retrieved[level].ids == indexed.retrieved[level].ids
        assert torch.equal(exact.retrieved[level].indices, indexed.retrieved[level].indices)
        torch.testing.assert_close(exact.retrieved[level].scores, indexed.retrieved[level].scores)


def test_scores_are_recomputed_differentiably(retriever, index_search):
    module = _module(retriever, top_k=2)
    feats, q = _inputs()
    out = module(feats, q)
    scene = out.retrieved["scene"]
    level, _, queries = retriever.calls[0]
    idx = [int(i.split(":")[1]) for i in scene.ids[0]]
    expected = queries[0] @ retriever.emb[level][idx].T
    assert np.allclose(scene.scores[0].detach().numpy(), expected, atol=1e-5)
    assert scene.scores.requires_grad
    scene.scores.sum().backward()
    assert module.levels["scene"].query.weight.grad.abs().sum() > 0


def test_cues_change_tokens_and_gate_starts_small(retriever):
    module = _module(retriever, top_k=3)
    feats, q = _inputs()
    out = module(feats, q)
    projected = module.levels["object"].input_proj(feats["object"])
    delta = (out.tokens["object"] - projected).abs()
    assert delta.max() > 0  # gate is non-zero at init
    assert 0 < torch.tanh(module.levels["object"].gate).item() < 0.5


def test_k_zero_equals_retrieval_off_exactly(retriever):
    off = _module(retriever, seed=1, retrieval=False)
    k0 = _module(retriever, seed=1, top_k=0)
    assert set(off.state_dict()) == set(k0.state_dict())
    k0.load_state_dict(off.state_dict())
    feats, q = _inputs()
    a, b = off(feats, q), k0(feats, q)
    for level in LEVELS:
        assert torch.equal(a.tokens[level], b.tokens[level])
    assert a.retrieved == {} and b.retrieved == {}
    assert retriever.calls == []  # nothing searched


def test_retrieval_off_has_fewer_parameters(retriever):
    on = {n for n, _ in _module(retriever).named_parameters()}
    off = {n for n, _ in _module(retriever, retrieval=False).named_parameters()}
    assert off < on and any("query" in n for n in on - off)


def test_alignment_loss_matches_soft_label_cross_entropy(retriever):
    module = _module(retriever, retrieval=False, align_temperature=0.5)
    feats, q = _inputs()
    target = torch.zeros(2, N_ENTRIES["scene"])
    target[0, 3], target[0, 5] = 1.0, 3.0  # soft label on row 0; row 1 unlabelled
    out = module(feats, q, {"scene": target})
    lvl = module.levels["scene"]
    a = F.normalize(lvl.align_proj(lvl.input_proj(feats["scene"]).mean(1)[:1]), dim=-1)
    logits = a @ torch.from_numpy(retriever.emb["scene"]).T / 0.5
    expected = -(
        torch.tensor(
            [[0.25 if i == 3 else 0.75 if i == 5 else 0.0 for i in range(N_ENTRIES["scene"])]]
        )
        * logits.log_softmax(-1)
    ).sum()
    assert torch.allclose(out.align_loss, expected, atol=1e-5)


def test_alignment_loss_skips_unlabelled_levels(retriever):
    module = _module(retriever, retrieval=False)
    feats, q = _inputs()
    assert module(feats, q, {"scene": torch.zeros(2, N_ENTRIES["scene"])}).align_loss is None
    assert module(feats, q).align_loss is None


def test_retrieval_without_knowledge_base_fails_clearly():
    torch.manual_seed(0)
    cfg = AugmentationConfig(levels=["scene"], hidden_size=8, knowledge_dim=DIM, num_heads=2)
    feats, q = _inputs()
    with pytest.raises(KnowledgeBaseError, match="attach_knowledge"):
        SemanticAugmentation(cfg, {"scene": 12})({"scene": feats["scene"]}, q)


def test_batch_negatives_leave_entries_no_image_shows_out_of_the_contrast(retriever):
    feats, q = _inputs()
    n = retriever.emb["scene"].shape[0]
    target = torch.zeros(2, n)
    target[0, 0], target[1, 1] = 1.0, 1.0  # the batch shows entries 0 and 1 only
    every = _module(retriever, align_negatives="all")(feats, q, {"scene": target})
    batch = _module(retriever, align_negatives="batch")(feats, q, {"scene": target})
    assert torch.isfinite(batch.align_loss) and batch.align_loss < every.align_loss
    # the loss is the two-way softmax between the shown entries, recomputed by hand
    module = _module(retriever, align_negatives="batch").levels["scene"]
    v = module.input_proj(feats["scene"])
    a = F.normalize(module.align_proj(v.mean(dim=1)), dim=-1)
    logits = a @ module.entries[:2].T / module.config.align_temperature
    expected = F.cross_entropy(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(batch.align_loss, expected)


# ---- relational scene retrieval ------------------------------------------------------------------
def test_relation_match_is_the_cosine_with_the_relations_averaged_over_levels():
    from geostrata.model.augmentation import relation_match

    probs = {"region": torch.tensor([[0.6, 0.3, 0.1]]), "object": torch.tensor([[0.5, 0.5]])}
    matrices = {
        "region": torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
        "object": torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]),
    }
    counts = {"region": torch.tensor([2.0, 1.0, 0.0]), "object": torch.tensor([1.0, 0.0, 0.0])}
    got = relation_match(probs, matrices, counts)[0]
    norm_r, norm_o = (0.36 + 0.09 + 0.01) ** 0.5, 0.5**0.5
    entry0 = (0.9 / (norm_r * 2**0.5) + 0.5 / norm_o) / 2  # both levels
    entry1 = 0.1 / norm_r  # region only: averaged over the one level it has relations at
    torch.testing.assert_close(got, torch.tensor([entry0, entry1, 0.0]))


def _relational(retriever, weight, **kw):
    return _module(retriever, top_k=3, relation_weight=weight, **kw)


def test_relations_bring_the_related_scene_entry_to_the_top(retriever):
    """A scene entry related to what the object level finds best is ranked first once the
    relation weight is large enough; with weight 0 nothing changes at all."""
    feats, q = _inputs(seed=5)
    plain = _module(retriever, top_k=3)(feats, q)
    aligned = _module(retriever, top_k=3).levels["object"].embed(feats["object"])[1]
    probs = _module(retriever, top_k=3).levels["object"].entry_probabilities(aligned)
    best_object = probs.argmax(-1)  # (B,) what each image's object level retrieves best
    assert best_object[0] != best_object[1]  # so each image has its own related scene entry
    target = [i for i in range(N_ENTRIES["scene"]) if i not in plain.retrieved["scene"].indices]
    chosen = target[:2]  # scene entries no image retrieved without relations
    related = np.zeros((N_ENTRIES["scene"], N_ENTRIES["object"]), np.float32)
    for b, scene in enumerate(chosen):
        related[scene, int(best_object[b])] = 1.0
    retriever.related[("scene", "object")] = related
    zero = _relational(retriever, 0.0)(feats, q)
    assert torch.equal(zero.retrieved["scene"].indices, plain.retrieved["scene"].indices)
    out = _relational(retriever, 5.0)(feats, q)
    assert out.retrieved["scene"].indices[:, 0].tolist() == chosen
    for level in ("region", "object"):  # only the scene level's ranking reads relations
        assert torch.equal(out.retrieved[level].indices, plain.retrieved[level].indices)
    # the returned score is cosine + weight * match, and the match is at most 1
    scene = out.retrieved["scene"]
    assert bool((scene.scores[:, 0] <= 1.0 + 5.0 + 1e-5).all()) and scene.scores.requires_grad


def test_relation_term_trains_nothing_below_the_scene_level(retriever):
    retriever.related[("scene", "object")] = np.ones((N_ENTRIES["scene"], N_ENTRIES["object"]))
    module = _relational(retriever, 2.0)
    feats, q = _inputs()
    module(feats, q).retrieved["scene"].scores.sum().backward()
    assert module.levels["object"].align_proj.weight.grad is None  # detached: no gradient
    assert module.levels["scene"].query.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"relation_weight": -1.0}, "must be >= 0"),
     ({"relation_weight": 1.0, "retrieval": False}, "needs retrieval on")],
)  # fmt: skip
def test_relation_weight_is_validated(overrides, message):
    from geostrata.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        AugmentationConfig(levels=LEVELS, hidden_size=8, knowledge_dim=DIM, num_heads=2,
                           **overrides)  # fmt: skip


def test_relations_need_a_finer_level(retriever):
    """Scene alone: the weight has nothing to read, so retrieval is the visual one."""
    torch.manual_seed(0)
    cfg = AugmentationConfig(levels=["scene"], hidden_size=8, knowledge_dim=DIM, num_heads=2,
                             relation_weight=3.0)  # fmt: skip
    module = SemanticAugmentation(cfg, in_dims={"scene": 12})
    module.attach(retriever, torch.device("cpu"))
    assert module.relation_levels == ()
