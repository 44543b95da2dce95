"""One image path: training, the feature cache and predict give a model the same pixels.

Every route (the training collator through the image store, the frozen-tower feature cache,
`predict`'s batch, arrays instead of files) goes through `ImageProcessor`; the tests write
awkward files (non-square, grey, 16-bit, multiband) and compare the tensors bit for bit.
"""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from geostrata.inference import _batch
from geostrata.model import ImageProcessor
from geostrata.model.processing import letterbox
from geostrata.session import LoadedModel
from geostrata.session.batching import FeatureCache, ImageStore, VQACollator
from tests.data.fixtures import rgb_array, write_image, write_png16

QUESTION = "is there a forest"


def _ramp16(height: int, width: int, bands: int) -> np.ndarray:
    """Distinct dark uint16 values, like 16-bit reflectance."""
    values = np.linspace(0, 4000, height * width * bands)
    return values.reshape(height, width, bands).astype(np.uint16)


def _files(folder: Path) -> dict[str, Path]:
    """One file per kind the band policy and the letterbox must handle."""
    grey = rgb_array(1, 40, 20)[:, :, 0]
    s2 = _ramp16(26, 40, 13).transpose(2, 0, 1)  # (13, H, W) Sentinel-2 stack
    return {
        "wide_rgb_png": write_image(folder / "wide.png", rgb_array(0, 24, 48)),
        "tall_grey_png": write_image(folder / "grey.png", grey),
        "rgb16_png": write_png16(folder / "rgb16.png", _ramp16(20, 36, 3)),
        "grey16_tiff": _tiff(folder / "grey16.tif", _ramp16(30, 18, 1)[:, :, 0]),
        "sentinel2_tiff": _tiff(folder / "s2.tif", s2, planar=True),
        "rgbn_tiff": _tiff(folder / "rgbn.tif", rgb_array(2, 36, 28)[:, :, [0, 1, 2, 0]]),
    }


def _tiff(path: Path, data: np.ndarray, planar: bool = False) -> Path:
    """(H, W) grey, (H, W, 4) RGB + extra band, or planar (C, H, W) multispectral."""
    extra = {"photometric": "rgb", "extrasamples": ["unspecified"]} if data.ndim == 3 else {}
    if planar:
        extra = {"photometric": "minisblack", "planarconfig": "separate"}
    tifffile.imwrite(path, data, **extra)
    return path


@pytest.fixture
def loaded(make_model, processor, retriever) -> LoadedModel:
    return LoadedModel(make_model(), processor, retriever, None, Path("unsaved"))


def _records(paths: list[Path]) -> list[dict[str, str]]:
    return [{"image_path": str(p), "question": QUESTION, "answer": "yes"} for p in paths]


def test_training_collator_and_predict_batch_give_identical_pixels(tmp_path, loaded):
    files = _files(tmp_path)
    store = ImageStore(loaded.processor.image_processor)
    for with_answers in (True, False):
        collate = VQACollator(loaded.processor, store, with_answers=with_answers)
        trained = collate(_records(list(files.values())))["pixel_values"]  # (6, 3, 32, 32)
        for row, (kind, path) in enumerate(files.items()):
            predicted = _batch(loaded, path, QUESTION)["pixel_values"]  # (1, 3, 32, 32)
            assert torch.equal(trained[row], predicted[0]), kind


def test_predict_route_through_the_square_and_arrays_match_files(tmp_path, loaded):
    files = _files(tmp_path)
    images = loaded.processor.image_processor
    arrays = {
        "sentinel2_tiff": tifffile.imread(files["sentinel2_tiff"]).transpose(1, 2, 0),
        "grey16_tiff": tifffile.imread(files["grey16_tiff"]),
        "tall_grey_png": np.asarray(Image.open(files["tall_grey_png"])),
    }
    for kind, path in files.items():
        want = _batch(loaded, path, QUESTION)["pixel_values"]
        square = images.square(path)  # what stream_predict decodes once and reuses
        assert torch.equal(_batch(loaded, square, QUESTION)["pixel_values"], want), kind
        if kind in arrays:  # the same bands in memory: the same band policy, the same pixels
            assert torch.equal(_batch(loaded, arrays[kind], QUESTION)["pixel_values"], want), kind


def test_feature_cache_encodes_the_pixels_predict_would(tmp_path, loaded, monkeypatch):
    files = _files(tmp_path)
    model, seen = loaded.model, []
    encode = model.encode_images
    monkeypatch.setattr(model, "encode_images", lambda px: seen.append(px) or encode(px))
    cache = FeatureCache(model, ImageStore(loaded.processor.image_processor), device="cpu")
    cache.add([str(p) for p in files.values()], batch_size=len(files), show_progress=False)
    (cached,) = seen  # one batch; rows in sorted path order
    for row, path in enumerate(sorted(str(p) for p in files.values())):
        assert torch.equal(cached[row], _batch(loaded, path, QUESTION)["pixel_values"][0]), path


def test_letterbox_keeps_all_content_and_shape_padding_with_the_mean():
    images = ImageProcessor(8, mean=(0.5, 0.25, 0.75), std=(0.5, 0.5, 0.5))
    wide = np.zeros((4, 8, 3), np.uint8)
    wide[:, 0] = wide[:, -1] = 255  # white edge columns: a centre crop would drop them
    square = images.square(wide)
    assert square.shape == (8, 8, 3)
    np.testing.assert_array_equal(square[2:6], wide)  # already 8 wide: placed, not resampled
    assert (square[:2] == (128, 64, 191)).all() and (square[6:] == (128, 64, 191)).all()
    pad = images.normalize(square)[:, 0]  # (3, 8): a padding row
    assert np.abs(pad).max() < 0.01  # the mean colour normalises to ~0: no signal
    tall = letterbox(rgb_array(3, 30, 10), 12, (0, 0, 0))  # 30x10 -> 12x4, centred
    assert (tall[:, :4] == 0).all() and (tall[:, 8:] == 0).all() and tall[:, 4:8].any()


def test_square_images_are_only_resized():
    image = rgb_array(4, 20, 20)
    want = np.asarray(Image.fromarray(image).resize((16, 16), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(ImageProcessor(16).square(image), want)
    np.testing.assert_array_equal(ImageProcessor(20).square(image), image)


def test_bad_image_inputs_name_the_problem(tmp_path):
    from geostrata.errors import ConfigError, ImageError

    images = ImageProcessor(16)
    with pytest.raises(ImageError, match="missing.png: image file not found"):
        images.square(tmp_path / "missing.png")
    with pytest.raises(ImageError, match=r"array: 5 bands"):
        images.square(np.zeros((8, 8, 5), np.uint16))
    with pytest.raises(ImageError, match=r"\(16, 16, 3\) uint8 square"):
        images.normalize(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match="image_size"):
        ImageProcessor(0)
