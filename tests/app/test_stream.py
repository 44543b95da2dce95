"""stream_predict is predict, step by step, and decodes as transformers' generate does."""

import pytest

from geostrata.errors import InputError
from geostrata.inference import _batch, _cues, predict, stream_predict


def test_stream_ends_with_predicts_answer(loaded, sample_png):
    classes = ["forest", "harbor", "airport"]
    steps = list(
        stream_predict(loaded, sample_png, "Is there a ship?", classes=classes, max_new_tokens=6)
    )
    final = predict(loaded, sample_png, "Is there a ship?", classes=classes, max_new_tokens=6)
    assert steps[0].answer == "" and steps[0].cues and steps[0].router  # evidence before tokens
    assert steps[-1] == final
    # An independent path: the model's own (HF) generate and forward on the same batch.
    batch = _batch(loaded, sample_png, "Is there a ship?")
    new_ids = loaded.model.generate(**batch, max_new_tokens=6)
    text = loaded.processor.tokenizer.batch_decode(new_ids, skip_special_tokens=True)[0].strip()
    assert final.answer == text
    out = loaded.model(**batch)
    assert [[c.id for c in cs] for cs in final.cues.values()] == [
        [c.id for c in cs] for cs in _cues(loaded, out.retrieved).values()
    ]
    assert list(final.router.values()) == pytest.approx(out.router_weights[0].tolist(), abs=1e-5)
    assert len(steps) <= 6 + 2  # first (evidence) + one per token + last (classes)
    answers = [s.answer for s in steps[1:-1]]
    assert all(len(a) <= len(b) for a, b in zip(answers, answers[1:], strict=False))


def test_stream_refuses_empty_question_before_work(loaded, sample_png):
    with pytest.raises(InputError, match="empty"):
        next(stream_predict(loaded, sample_png, "  "))
