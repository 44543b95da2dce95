"""The chip baselines: band statistics, majority class, random forest."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from geostrata.errors import ImageError, InputError
from geostrata.evaluate.baselines import band_statistics, majority_baseline, random_forest_baseline


def _chip(path, level: float, bands: int, seed: int):
    rng = np.random.default_rng(seed)
    stack = (level + rng.normal(0, 5, (bands, 8, 8))).clip(0, 60000).astype(np.uint16)
    tifffile.imwrite(path, stack, photometric="minisblack", planarconfig="separate")
    return path


def test_band_statistics_of_a_planar_tiff_and_a_png(tmp_path):
    stack = np.arange(4 * 3 * 5, dtype=np.uint16).reshape(4, 3, 5)  # (C=4, H=3, W=5)
    tifffile.imwrite(tmp_path / "a.tif", stack, photometric="minisblack", planarconfig="separate")
    stats = band_statistics(tmp_path / "a.tif")
    assert stats.shape == (8,)
    np.testing.assert_allclose(stats[:4], stack.reshape(4, -1).mean(axis=1))
    np.testing.assert_allclose(stats[4:], stack.reshape(4, -1).std(axis=1))
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(tmp_path / "b.png")
    np.testing.assert_allclose(band_statistics(tmp_path / "b.png"), [7, 7, 7, 0, 0, 0])
    (tmp_path / "c.tif").write_bytes(b"not a tiff")
    with pytest.raises(ImageError, match="c.tif"):
        band_statistics(tmp_path / "c.tif")


def test_the_forest_separates_radiance_the_majority_cannot(tmp_path):
    levels = {"water": 300.0, "forest": 1500.0, "developed": 4000.0}
    train, test = [], []
    for i in range(12):
        for name, level in levels.items():
            path = _chip(tmp_path / f"{name}{i}.tif", level, bands=4, seed=i)
            (train if i < 8 else test).append((path, name))
    train += [(_chip(tmp_path / f"extra{i}.tif", 300.0, 4, 100 + i), "water") for i in range(4)]
    classes = sorted(levels)
    forest = random_forest_baseline(
        [p for p, _ in train], [c for _, c in train], [p for p, _ in test], [c for _, c in test],
        classes, trees=20,
    )
    assert forest.overall_accuracy == 1.0
    majority = majority_baseline([c for _, c in train], [c for _, c in test], classes)
    assert majority.overall_accuracy == pytest.approx(1 / 3)  # "water", a third of the test
    with pytest.raises(InputError, match="training labels"):
        majority_baseline([], ["water"], classes)
