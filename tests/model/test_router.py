"""Semantic-aware routing: an optional loss teaches the router each question's semantic level."""

import pytest
import torch
import torch.nn.functional as F

from geostrata.levels import VISUAL_LEVELS
from geostrata.session.batching import question_levels

LEVELS = torch.tensor([VISUAL_LEVELS.index("object"), VISUAL_LEVELS.index("region")])


def test_records_give_their_level_index_or_minus_one():
    records = [{"level": "scene"}, {"level": "object"}, {"level": "attribute"}, {}]
    assert question_levels(records).tolist() == [0, 2, -1, -1]


def test_router_loss_is_off_by_default(make_model, train_batch):
    out = make_model()(**train_batch, question_levels=LEVELS)
    assert out.router_loss is None


def test_router_loss_is_the_nll_of_the_true_level(make_model, train_batch):
    model = make_model(lambda_router=0.5)
    out = model(**train_batch, question_levels=LEVELS)
    expected = F.nll_loss(torch.log(out.router_weights), LEVELS)  # model levels = VISUAL_LEVELS
    torch.testing.assert_close(out.router_loss, expected)
    without = model(**train_batch)
    torch.testing.assert_close(out.loss - without.loss, 0.5 * out.router_loss)


def test_levels_the_model_lacks_are_ignored(make_model, train_batch):
    model = make_model(lambda_router=1.0, levels=["scene", "object"])
    out = model(**train_batch, question_levels=LEVELS)  # object known, region absent
    expected = -torch.log(out.router_weights[0, 1])
    torch.testing.assert_close(out.router_loss, expected)
    none = model(**train_batch, question_levels=torch.tensor([-1, -1]))
    assert none.router_loss is None


@pytest.mark.parametrize("experts", [True, False])
def test_route_questions_matches_the_forward_router(make_model, train_batch, experts):
    model = make_model(experts=experts)
    out = model(**train_batch)
    torch.testing.assert_close(model.route_questions(train_batch["question_embeds"]),
                               out.router_weights)  # fmt: skip


def test_the_loss_teaches_the_router_the_levels(make_model, train_batch):
    model = make_model(lambda_router=1.0).train()
    router = model.experts.router
    opt = torch.optim.Adam(router.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        model(**train_batch, question_levels=LEVELS).router_loss.backward()
        opt.step()
    weights = model.route_questions(train_batch["question_embeds"])
    assert weights.argmax(-1).tolist() == LEVELS.tolist()
    assert weights.max(-1).values.min() > 0.9
