"""stream_predict is predict, step by step."""

import pytest

from geostrata.errors import InputError
from geostrata.inference import predict, stream_predict


def test_stream_ends_with_predicts_answer(loaded, sample_png):
    classes = ["forest", "harbor", "airport"]
    steps = list(
        stream_predict(loaded, sample_png, "Is there a ship?", classes=classes, max_new_tokens=6)
    )
    final = predict(loaded, sample_png, "Is there a ship?", classes=classes, max_new_tokens=6)
    assert steps[0].answer == "" and steps[0].cues and steps[0].router  # evidence before tokens
    assert steps[-1].answer == final.answer
    assert steps[-1].router == pytest.approx(final.router, abs=1e-5)
    assert [[c.id for c in cs] for cs in steps[-1].cues.values()] == [
        [c.id for c in cs] for cs in final.cues.values()
    ]
    assert [c for c, _ in steps[-1].class_probs] == [c for c, _ in final.class_probs]
    assert len(steps) <= 6 + 2  # first (evidence) + one per token + last (classes)
    answers = [s.answer for s in steps[1:-1]]
    assert all(len(a) <= len(b) for a, b in zip(answers, answers[1:], strict=False))


def test_stream_refuses_empty_question_before_work(loaded, sample_png):
    with pytest.raises(InputError, match="empty"):
        next(stream_predict(loaded, sample_png, "  "))
