"""Shared pieces of the chat / web-app tests: one loaded tiny model, sample and broken images, a
spy on stream_predict."""

from dataclasses import replace
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir(trained_model_dir) -> Path:
    return trained_model_dir.parent.parent / "data"


@pytest.fixture(scope="session")
def loaded(trained_model_dir):
    from geostrata.inference import load_model

    return load_model(trained_model_dir)


@pytest.fixture(scope="session")
def sample_png(data_dir) -> Path:
    return sorted((data_dir / "images").glob("*.png"))[0]


@pytest.fixture
def corrupt_png(tmp_path) -> Path:
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"definitely not image data" * 8)
    return path


@pytest.fixture
def spied(monkeypatch):
    """The real stream_predict, recording the history each call is given (`spied.calls`).
    `spied.box` (when set) is appended to every answer, since the tiny model never writes a box:
    the tests that set it check the app's parsing and drawing, not the model's grounding."""
    import geostrata.inference as inference

    real, calls = inference.stream_predict, []

    def spy(*args, history=(), **kwargs):
        calls.append([tuple(turn) for turn in history])
        for pred in real(*args, history=history, **kwargs):
            yield replace(pred, answer=f"{pred.answer} {spy.box}".strip())

    spy.box, spy.calls = "", calls
    monkeypatch.setattr(inference, "stream_predict", spy)
    return spy
