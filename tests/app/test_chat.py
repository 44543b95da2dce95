"""`geostrata chat` one-shot through the CLI, and the interactive loop with scripted input."""

import numpy as np
import pytest
import tifffile
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from geostrata.chat import ChatSession, interactive
from geostrata.cli import app
from geostrata.data.images import read_image


def _chat(*args: str):
    return CliRunner().invoke(app, ["chat", *args])


@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff"])
def test_one_shot_prints_answer_and_cues(trained_model_dir, loaded, sample_png, tmp_path, fmt):
    image = sample_png
    if fmt == "jpeg":
        image = tmp_path / "sample.jpg"
        Image.open(sample_png).convert("RGB").save(image, quality=95)
    elif fmt == "tiff":  # a 16-bit 4-band GeoTIFF-like stack goes through the band policy
        image = tmp_path / "sample.tif"
        rgb = read_image(sample_png).astype(np.uint16) * 64
        tifffile.imwrite(
            image,
            np.concatenate([rgb, rgb[:, :, :1]], axis=2),
            photometric="rgb",
            extrasamples=["unspecified"],
        )
    result = _chat(
        str(image),
        "--question",
        "Is there a ship?",
        "--checkpoint",
        str(trained_model_dir),
        "--max-new-tokens",
        "4",
    )
    assert result.exit_code == 0, result.output
    assert "geostrata>" in result.output
    flat = " ".join(result.output.split())  # table cells may wrap
    for level, cues in _cues(loaded, image).items():
        assert level in flat
        assert cues[0].name in flat  # the best cue of every level is shown
    assert "router" in flat


def _cues(loaded, image):
    from geostrata.inference import stream_predict

    return next(stream_predict(loaded, image, "Is there a ship?")).cues


def test_one_shot_empty_question_exits_1(trained_model_dir, sample_png):
    result = _chat(str(sample_png), "--question", "   ", "--checkpoint", str(trained_model_dir))
    assert result.exit_code == 1
    assert "question is empty" in result.output


def test_one_shot_corrupt_image_names_the_file(trained_model_dir, corrupt_png):
    result = _chat(
        str(corrupt_png), "--question", "Is there a ship?", "--checkpoint", str(trained_model_dir)
    )
    assert result.exit_code == 1
    assert str(corrupt_png) in result.output and "error" in result.output
    assert len(result.output.strip().splitlines()) == 1  # one clear line, no traceback


def test_missing_checkpoint_is_a_clear_error(sample_png, tmp_path):
    result = _chat(str(sample_png), "-q", "Is there a ship?", "--checkpoint", str(tmp_path))
    assert result.exit_code == 1 and "model.safetensors" in result.output


def test_interactive_keeps_going_after_a_bad_question(loaded, sample_png):
    console = Console(record=True, width=120, force_terminal=False)
    session = ChatSession(loaded, read_image(sample_png), str(sample_png), max_new_tokens=3)
    lines = iter(["Is there a ship?", "", "x" * 501, "How many cars are there?", "history", "exit"])
    interactive(session, console, read=lambda prompt: next(lines))
    text = console.export_text()
    assert "question is empty" in text and "limit is 500" in text
    assert [t.question for t in session.history] == ["Is there a ship?", "How many cars are there?"]
    assert "2. How many cars are there?" in text  # history listed


def test_interactive_ends_on_ctrl_d(loaded, sample_png):
    console = Console(record=True, width=120)
    session = ChatSession(loaded, read_image(sample_png), "img", max_new_tokens=2)

    def eof(prompt: str) -> str:
        raise EOFError

    interactive(session, console, read=eof)
    assert session.history == []


def test_default_checkpoint_is_trained_when_missing(tmp_path, monkeypatch):
    import geostrata.demo
    from geostrata.chat import DEFAULT_CHECKPOINT, ensure_checkpoint

    calls = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        geostrata.demo, "run_demo", lambda out, profile: calls.append((out, profile))
    )
    console = Console(record=True, width=200)
    assert ensure_checkpoint(None, console) == DEFAULT_CHECKPOINT
    assert calls == [(tmp_path.joinpath("runs/demo").relative_to(tmp_path), "quick")]
    assert "no model at runs/demo/run/model" in console.export_text()
    assert ensure_checkpoint(tmp_path / "mine", console) == tmp_path / "mine"  # explicit: as given
    assert len(calls) == 1


def test_a_follow_up_is_asked_with_the_earlier_turn(loaded, sample_png):
    from geostrata.inference import predict

    image = read_image(sample_png)
    session = ChatSession(loaded, image, str(sample_png), max_new_tokens=4)
    first = list(session.ask("Is there a ship?"))[-1]
    second = list(session.ask("How many are there?"))[-1]
    assert "Is there a ship?" in second.prompt and first.answer in second.prompt
    assert second.prompt.index("Is there a ship?") < second.prompt.index("How many are there?")
    # the follow-up is answered from the prompt with the first turn, not from the question alone
    earlier = [("Is there a ship?", first.answer)]
    with_turn = predict(loaded, image, "How many are there?", max_new_tokens=4, history=earlier)
    alone = predict(loaded, image, "How many are there?", max_new_tokens=4)
    assert (second.prompt, second.answer) == (with_turn.prompt, with_turn.answer)
    assert "Is there a ship?" not in alone.prompt
    assert session.turns() == [*earlier, ("How many are there?", second.answer)]
    session.reset()
    again = list(session.ask("How many are there?"))[-1]
    assert (again.prompt, again.answer) == (alone.prompt, alone.answer)


def test_reset_in_the_loop_forgets_the_conversation(loaded, sample_png):
    console = Console(record=True, width=120)
    session = ChatSession(loaded, read_image(sample_png), "img", max_new_tokens=2)
    lines = iter(["Is there a ship?", "/reset", "How many are there?", "exit"])
    interactive(session, console, read=lambda prompt: next(lines))
    assert "conversation cleared" in console.export_text()
    assert [t.question for t in session.history] == ["How many are there?"]
    assert "Is there a ship?" not in session.history[0].prediction.prompt


def test_boxes_in_an_answer_are_listed_and_drawn(loaded, tmp_path, monkeypatch):
    import geostrata.inference
    from geostrata.chat import stream_turn
    from geostrata.inference import Prediction

    def box_answer(*args, **kwargs):
        yield Prediction("")
        yield Prediction("{<10><50><50><60>}")

    monkeypatch.setattr(geostrata.inference, "stream_predict", box_answer)
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    session = ChatSession(loaded, image, str(tmp_path / "wide.png"), boxes_dir=tmp_path)
    console = Console(record=True, width=160)
    stream_turn(session, "Where is the ship?", console)
    text = console.export_text()
    assert "box 1: (10, 50)-(50, 60) of 100 = px (20, 50)-(100, 60)" in text
    written = tmp_path / "wide.chat-1.png"
    drawn = np.asarray(Image.open(written))
    assert drawn.shape == (100, 200, 3) and str(written) in text.replace("\n", "")
    assert tuple(drawn[55, 20]) == (255, 40, 40) and tuple(drawn[55, 60]) == (0, 0, 0)
    session.boxes_dir = None  # no folder: listed, not written
    stream_turn(session, "Where is the ship?", console)
    assert not (tmp_path / "wide.chat-2.png").exists()
