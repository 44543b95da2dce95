"""The geo tests' fixtures: a small scene and the tiny trained model, loaded once."""

from pathlib import Path

import pytest

from tests.geo.fixtures import write_scene


@pytest.fixture
def scene(tmp_path) -> Path:
    return write_scene(tmp_path / "scene.tif")


@pytest.fixture(scope="session")
def loaded_model(trained_model_dir):
    from geostrata.inference import load_model

    return load_model(trained_model_dir)


@pytest.fixture(scope="session")
def model_classes(loaded_model) -> list[str]:
    from geostrata.chat import scene_classes

    return scene_classes(loaded_model)
