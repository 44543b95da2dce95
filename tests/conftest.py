"""Shared test set-up: offline, single-threaded, seeded."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    # Two cores are shared with other work; one intra-op thread keeps tests predictable.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory):
    """A tiny GeoStrata model trained a few steps on a tiny synthetic set (built once per session).

    Returns the saved model folder (what load_model() / geostrata eval / chat / serve take).
    Its run folder (parent) also holds data/ and the stage checkpoints.
    """
    from geostrata.demo import DemoProfile, synthesize_once
    from geostrata.train.pipeline import run_experiment

    root = tmp_path_factory.mktemp("trained")
    profile = DemoProfile(n_train=36, n_test=12, stage1_steps=2, stage2_steps=6, batch_size=8)
    data = synthesize_once(root / "data", profile, seed=0, show_progress=False, workers=1)
    cfg = profile.experiment(data, root / "run", seed=0)
    return run_experiment(cfg, show_progress=False).model_dir
