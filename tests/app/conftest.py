"""Shared pieces of the chat / web-app tests: one loaded tiny model, sample and broken images."""

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
