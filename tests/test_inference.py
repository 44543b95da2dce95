import numpy as np
import pytest

from geostrata.errors import CheckpointError, InputError
from geostrata.inference import load_model, predict


@pytest.fixture(scope="module")
def loaded(trained_model_dir):
    return load_model(trained_model_dir)


def test_predict_explains_the_answer(loaded, trained_model_dir):
    image = sorted((trained_model_dir.parent.parent / "data" / "images").glob("*.png"))[0]
    classes = ["forest", "harbor", "airport"]
    pred = predict(loaded, image, "Is there a ship?", classes=classes)
    assert isinstance(pred.answer, str)
    assert set(pred.cues) == set(loaded.model.config.levels)
    for level, cues in pred.cues.items():
        assert cues and all(c.id.startswith(level + ".") for c in cues)  # cues of the right level
        assert [c.score for c in cues] == sorted((c.score for c in cues), reverse=True)
    assert sum(pred.router.values()) == pytest.approx(1.0, abs=1e-5)
    assert [c for c, _ in pred.class_probs] and set(c for c, _ in pred.class_probs) <= set(classes)
    assert sum(p for _, p in pred.class_probs) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("question", ["", "   ", "x" * 501])
def test_bad_questions_are_refused(loaded, question):
    with pytest.raises(InputError):
        predict(loaded, np.zeros((32, 32, 3), np.uint8), question)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(tmp_path)
