import re

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


def test_load_model_in_bfloat16_answers_like_float32(loaded, trained_model_dir):
    import torch

    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}  # CPU default
    half = load_model(trained_model_dir, dtype="bfloat16")
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    image = sorted((trained_model_dir.parent.parent / "data" / "images").glob("*.png"))[0]
    classes = ["forest", "harbor", "airport"]
    full_pred = predict(loaded, image, "What type of scene is this?", classes=classes)
    half_pred = predict(half, image, "What type of scene is this?", classes=classes)
    full_probs, half_probs = dict(full_pred.class_probs), dict(half_pred.class_probs)
    for name in classes:  # bf16 keeps ~3 significant digits
        assert half_probs[name] == pytest.approx(full_probs[name], abs=0.05)


def test_a_missing_gpu_is_named(trained_model_dir):
    import torch

    from geostrata.errors import ConfigError

    if torch.cuda.is_available():  # pragma: no cover - the CI machine has none
        pytest.skip("a GPU is visible")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        load_model(trained_model_dir, device="cuda")


@pytest.mark.parametrize(
    ("question", "named"),
    [
        ("<image> Is there a ship?", "<image>"),
        ("Is there a ship?\x1b[2J", "U+001B"),
        ("\u202eIs there a ship?", "U+202E"),
        ("ship\x00?", "U+0000"),
    ],
)
def test_questions_with_the_image_slot_or_control_characters_are_refused(question, named):
    from geostrata.inference import check_question

    with pytest.raises(InputError, match=re.escape(named)):
        check_question(question)


def test_line_breaks_in_a_question_become_spaces():
    from geostrata.inference import check_question

    assert check_question(" Is\tthere\r\na ship?\u2028 ") == "Is there a ship?"


def test_chat_refuses_the_image_slot_before_loading_a_model(tmp_path):
    """Was refused only by the processor, after the model had loaded (or been trained)."""
    from typer.testing import CliRunner

    from geostrata.cli import app

    missing = tmp_path / "no-model"
    result = CliRunner().invoke(
        app, ["chat", str(tmp_path / "x.png"), "-q", "<image> ship?", "--checkpoint", str(missing)]
    )
    assert result.exit_code == 1 and "<image>" in result.output
    assert "model.safetensors" not in result.output and not missing.exists()


def test_earlier_turns_reach_the_prompt_and_bad_turns_are_named(loaded):
    image = np.zeros((32, 32, 3), np.uint8)
    pred = predict(loaded, image, "Is there a ship?", history=[("How many cars?", "2")])
    first = pred.prompt.index("How many cars?")
    assert first < pred.prompt.index(" 2") < pred.prompt.index("Is there a ship?")
    assert pred.prompt.count("<image>") == 1
    alone = predict(loaded, image, "Is there a ship?")
    assert "cars" not in alone.prompt
    with pytest.raises(InputError, match="history turn 1"):
        predict(loaded, image, "Is there a ship?", history=[("", "2")])
    with pytest.raises(InputError, match="history turn 2"):
        predict(loaded, image, "Is there a ship?", history=[("a?", "b"), ("only one",)])
