"""Image and feature caches: bounded memory, features computed where asked, budget honoured."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from geostrata.model import ImageProcessor, MultiLevelFeatures
from geostrata.session.batching import FeatureCache, ImageStore


def _write_images(folder, n: int, size: int = 20) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_image_store_keeps_at_most_its_budget_dropping_least_recent(tmp_path):
    paths = _write_images(tmp_path, 4)
    one = 16 * 16 * 3  # bytes of one decoded 16 px image
    store = ImageStore(ImageProcessor(16), max_bytes=2 * one)
    first = store.get(paths[0])
    store.get(paths[1])
    assert store.get(paths[0]) is first  # a hit, and now the most recent
    store.get(paths[2])  # over budget: drops paths[1], the least recently used
    assert (len(store), store.nbytes) == (2, 2 * one)
    assert store.get(paths[0]) is first
    again = store.get(paths[1])  # decoded again, identical pixels
    assert again is not None and again.shape == (16, 16, 3)
    np.testing.assert_array_equal(again, ImageStore(ImageProcessor(16)).get(paths[1]))


def test_image_larger_than_the_budget_is_returned_but_not_kept(tmp_path):
    (path,) = _write_images(tmp_path, 1)
    store = ImageStore(ImageProcessor(16), max_bytes=10)
    assert store.get(path).shape == (16, 16, 3)
    assert (len(store), store.nbytes) == (0, 0)


class _Model(nn.Module):
    """A frozen 'tower' that records the device it ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.vision = nn.Conv2d(3, 4, kernel_size=8, stride=8).requires_grad_(False)
        self.ran_on: list[str] = []

    def encode_images(self, pixels: torch.Tensor) -> MultiLevelFeatures:
        self.ran_on.append(pixels.device.type)
        grid = self.vision(pixels)  # (B, 4, 2, 2)
        return MultiLevelFeatures({"scene": grid.mean((2, 3))[:, None], "object": grid.flatten(2)})


def test_feature_cache_counts_bytes_and_returns_rows_in_order(tmp_path):
    paths = _write_images(tmp_path, 5)
    model = _Model()
    cache = FeatureCache(model, ImageStore(ImageProcessor(16)), device="cpu")
    cache.add(paths[:2], batch_size=2, show_progress=False)
    cache.add(paths, batch_size=2, show_progress=False)  # only the 3 new ones are encoded
    assert model.ran_on == ["cpu"] * 3  # batches: 2, then 2 + 1
    per_image = (1 * 4 + 4 * 4) * 4  # scene (1, 4) + object (4, 4) floats
    assert cache.nbytes == 5 * per_image and cache.bytes_per_image == per_image
    got = cache.get([paths[3], paths[0]])
    want = model.encode_images(ImageProcessor(16)([paths[3], paths[0]]))  # straight from files
    torch.testing.assert_close(got.levels["object"], want.levels["object"])
    assert next(model.vision.parameters()).device.type == "cpu"  # the tower went back home


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_feature_cache_runs_the_tower_on_the_given_device(tmp_path):  # pragma: no cover
    paths = _write_images(tmp_path, 2)
    model = _Model()
    cache = FeatureCache(model, ImageStore(ImageProcessor(16)), device="cuda")
    cache.add(paths, show_progress=False)
    assert model.ran_on == ["cuda"]
    assert next(model.vision.parameters()).device.type == "cpu"
    assert cache.get(paths).levels["scene"].device.type == "cpu"
