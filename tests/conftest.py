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
