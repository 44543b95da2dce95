"""What RS users run today on labelled chips, as baselines for GeoStrata's scene classification.

- majority class: every test chip gets the most frequent training label;
- a scikit-learn random forest (300 trees) on per-band chip statistics (mean and standard
  deviation of every band, raw values: no stretch), the common pixel-statistics classifier.

Both are scored with `classification_metrics`, like the model, on the same chips.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geostrata.errors import ImageError, InputError
from geostrata.evaluate.metrics import ClassificationMetrics, classification_metrics

FOREST_TREES = 300


def band_statistics(path: str | Path) -> np.ndarray:
    """(2C,) float64: per-band mean then per-band standard deviation of a chip's raw values
    (any band count; nodata is not masked: chips are cut where labels are pure)."""
    import warnings

    import rasterio
    from PIL import Image

    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with warnings.catch_warnings():  # plain (not georeferenced) TIFFs are fine here
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    stack = np.moveaxis(src.read(), 0, -1)  # (H, W, C)
        else:
            with Image.open(path) as image:
                stack = np.asarray(image)
    except (OSError, ValueError, rasterio.errors.RasterioError) as exc:
        raise ImageError(f"{path}: cannot read the chip ({exc})") from exc
    if stack.ndim == 2:
        stack = stack[..., None]  # (H, W, 1)
    pixels = stack.reshape(-1, stack.shape[-1]).astype(np.float64)  # (H*W, C)
    return np.concatenate([pixels.mean(axis=0), pixels.std(axis=0)])


def majority_baseline(
    train_labels: Sequence[str], test_labels: Sequence[str], classes: Sequence[str]
) -> ClassificationMetrics:
    if not train_labels:
        raise InputError("the majority baseline needs training labels")
    majority = Counter(train_labels).most_common(1)[0][0]
    return classification_metrics(list(test_labels), [majority] * len(test_labels), classes)


def random_forest_baseline(
    train_paths: Sequence[str | Path],
    train_labels: Sequence[str],
    test_paths: Sequence[str | Path],
    test_labels: Sequence[str],
    classes: Sequence[str],
    trees: int = FOREST_TREES,
    seed: int = 0,
) -> ClassificationMetrics:
    """Fit a random forest on the training chips' band statistics, score the test chips."""
    from sklearn.ensemble import RandomForestClassifier

    if len(train_paths) != len(train_labels) or len(test_paths) != len(test_labels):
        raise InputError("each chip needs one label")
    features = np.stack([band_statistics(p) for p in train_paths])  # (N, 2C)
    test = np.stack([band_statistics(p) for p in test_paths])  # (M, 2C)
    if features.shape[1] != test.shape[1]:
        raise InputError(
            f"training chips have {features.shape[1] // 2} bands, test chips {test.shape[1] // 2}"
        )
    forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=1)
    forest.fit(features, list(train_labels))
    return classification_metrics(list(test_labels), list(forest.predict(test)), classes)
