"""The web app's request handlers, called directly: good input answers, bad input explains,
a conversation keeps its turns, boxes in an answer are drawn, a region becomes the question."""

import numpy as np
import pytest
from PIL import Image

from geostrata.app import (
    AnswerView,
    AppLimits,
    Conversation,
    Handlers,
    asked_question,
    build_app,
    chat_messages,
    demo_samples,
    parse_region,
)
from geostrata.boxes import Box
from geostrata.errors import ConfigError, InputError
from geostrata.overlay import ANSWER_COLOR, REGION_COLOR
from geostrata.session.samples import region_question


@pytest.fixture(scope="module")
def handlers(loaded):
    return Handlers(
        loaded,
        AppLimits(max_new_tokens=4),
        ["forest", "harbor", "airport", "beach", "river", "meadow"],
    )


def _last(views) -> AnswerView:
    views = list(views)
    assert views, "the handler yielded nothing"
    return views[-1]


def test_good_image_streams_answer_cues_router_classes(handlers, loaded, sample_png):
    views = list(handlers.ask(str(sample_png), "Is there a ship?"))
    final = views[-1]
    assert not final.message
    assert views[0].cues and views[0].router  # evidence shows before the answer is done
    assert set(final.cues) == set(loaded.model.config.levels) and all(final.cues.values())
    assert sum(final.router.values()) == pytest.approx(1.0, abs=1e-5)
    assert len(final.classes) == 5 and set(final.classes) <= {
        "forest",
        "harbor",
        "airport",
        "beach",
        "river",
        "meadow",
    }
    assert handlers.preview(str(sample_png)).image.shape[2] == 3


def test_corrupt_upload_is_a_message(handlers, corrupt_png):
    final = _last(handlers.ask(str(corrupt_png), "Is there a ship?"))
    assert final.message and "corrupt.png" in final.message and "cannot decode" in final.message
    assert str(corrupt_png.parent) not in final.message  # the server's upload folder stays private
    assert not final.answer and not final.cues
    view = handlers.preview(str(corrupt_png))
    assert view.image is None and "corrupt.png" in view.message


def test_wrong_type_is_a_message(handlers, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert (
        "not a supported image type" in _last(handlers.ask(str(notes), "Is there a ship?")).message
    )


def test_oversized_images_are_refused(loaded, sample_png, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(big)  # 40 000 px
    few_pixels = Handlers(loaded, AppLimits(max_pixels=10_000))
    assert "exceeds max_pixels=10000" in _last(few_pixels.ask(str(big), "Is there a ship?")).message
    small_files = Handlers(loaded, AppLimits(max_file_bytes=100))
    assert "the limit is" in _last(small_files.ask(str(sample_png), "Is there a ship?")).message


@pytest.mark.parametrize(
    ("question", "expected"),
    [("", "empty"), ("   ", "empty"), (None, "empty"), ("x" * 501, "limit is 500")],
)
def test_bad_questions_are_messages(handlers, sample_png, question, expected):
    final = _last(handlers.ask(str(sample_png), question))
    assert expected in final.message and not final.answer


def test_app_question_limit_can_be_tighter(loaded, sample_png):
    tight = Handlers(loaded, AppLimits(max_question_chars=10))
    assert (
        "limit is 10" in _last(tight.ask(str(sample_png), "Is there a ship in the harbor?")).message
    )


def test_no_image_is_a_message(handlers):
    assert "no image" in _last(handlers.ask(None, "Is there a ship?")).message
    assert handlers.preview(None).image is None and not handlers.preview(None).message


@pytest.mark.parametrize("field", ["max_file_bytes", "max_pixels", "concurrency", "queue_size"])
def test_limits_are_validated(field):
    with pytest.raises(ConfigError, match=field):
        AppLimits(**{field: 0})
    with pytest.raises(ConfigError, match="max_question_chars"):
        AppLimits(max_question_chars=10_000)


def test_samples_and_app_build(loaded, data_dir):
    samples = demo_samples(data_dir, count=3)
    assert len(samples) == 3 and all(s.path.is_file() for s in samples)
    assert len({s.caption for s in samples}) == 3  # distinct scenes
    blocks = build_app(loaded, samples, AppLimits())
    assert type(blocks).__name__ == "Blocks"
    assert demo_samples(data_dir / "nowhere") == []


def test_conversation_passes_earlier_turns_and_keeps_the_newest(loaded, sample_png, spied):
    handlers = Handlers(loaded, AppLimits(max_new_tokens=3, max_turns=2))
    first = _last(handlers.ask(str(sample_png), "Is there a ship?"))
    assert not first.message and first.history == [("Is there a ship?", first.answer)]
    second = _last(handlers.ask(str(sample_png), "What type of scene is this?", first.history))
    assert spied.calls == [[], [("Is there a ship?", first.answer)]]
    assert second.history == [*first.history, ("What type of scene is this?", second.answer)]
    third = _last(handlers.ask(str(sample_png), "How many ships are there?", second.history))
    assert spied.calls[-1] == second.history  # two turns: within max_turns
    assert [q for q, _ in third.history] == [
        "What type of scene is this?",
        "How many ships are there?",
    ]
    messages = chat_messages(third)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2
    assert messages[0]["content"] == "What type of scene is this?"
    refused = _last(handlers.ask(str(sample_png), "", third.history))
    assert refused.message and refused.history == third.history  # a refusal keeps the turns


def test_box_in_the_answer_is_drawn_and_listed(loaded, sample_png, spied):
    """The box is appended to the real answer (see `spied`): this checks parsing and drawing."""
    spied.box = "{<25><25><75><50>}"
    handlers = Handlers(loaded, AppLimits(max_new_tokens=2))
    final = _last(handlers.ask(str(sample_png), "Describe {region}", region="10,60,40,90"))
    assert final.question == "Describe {<10><60><40><90>}" and final.answer.endswith(spied.box)
    assert final.boxes == [Box(25, 25, 75, 50)]
    image = final.image  # enlarged to the preview size, boxes drawn on it
    height, width = image.shape[:2]
    assert tuple(image[round(0.4 * height), round(0.25 * width)]) == ANSWER_COLOR  # left edge
    assert tuple(image[round(0.75 * height), round(0.10 * width)]) == REGION_COLOR
    source = np.asarray(Image.open(sample_png).convert("RGB"))
    assert "1: (25, 25)-(75, 50) of 100" in final.box_text
    assert f"px ({round(source.shape[1] / 4)}, " in final.box_text  # the upload's own pixels


def test_region_field_and_the_question_it_makes():
    box = Box(20, 30, 60, 70)
    assert parse_region(" 20, 30 60,70 ") == box and parse_region("") is None
    for bad, reason in [
        ("20,30,60", "four integers"),
        ("a,b,c,d", "four integers"),
        ("20,30,60.5,70", "four integers"),
        ("20,30,160,70", "0-100"),
        ("60,30,20,70", "x1 <= x2"),
    ]:
        with pytest.raises(InputError, match=reason):
            parse_region(bad)
    assert asked_question("ignored", box, describe=True) == region_question(box)
    assert asked_question("Is {region} water?", box, False) == f"Is {box.text()} water?"
    with pytest.raises(InputError, match="needs a region"):
        asked_question("", None, describe=True)
    with pytest.raises(InputError, match="no region is given"):
        asked_question("Is {region} water?", None, False)
    with pytest.raises(InputError, match="write {region} in the question"):
        asked_question("Is there a ship?", box, False)


def test_bad_region_is_a_message(handlers, sample_png):
    final = _last(handlers.ask(str(sample_png), "Is {region} water?", region="1,2,3"))
    assert "four integers" in final.message and not final.answer
    described = _last(handlers.ask(str(sample_png), "", region="5,5,50,50", describe=True))
    assert not described.message and described.question == region_question(Box(5, 5, 50, 50))


def test_conversation_belongs_to_its_image_and_streams_with_an_ellipsis():
    kept = Conversation("/cache/a.png", (("Is there a ship?", "yes"),))
    assert kept.about("/cache/a.png") == [("Is there a ship?", "yes")]
    assert kept.about("/cache/b.png") == [] and kept.about(None) == []  # another image: anew
    growing = AnswerView("a harbor", question="What is this?", history=list(kept.turns))
    assert [m["content"] for m in chat_messages(growing)] == [
        "Is there a ship?",
        "yes",
        "What is this?",
        "a harbor …",
    ]
