"""The web app's request handlers, called directly: good input answers, bad input explains."""

import numpy as np
import pytest
from PIL import Image

from geostrata.app import AnswerView, AppLimits, Handlers, build_app, demo_samples
from geostrata.errors import ConfigError


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
