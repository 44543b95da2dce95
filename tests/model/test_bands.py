"""All bands reach the model (issue #17, item 6): the band adapter in front of every tower, band
statistics instead of the per-image stretch, the same path in training, saving and predict."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from geostrata.data.bandstats import band_statistics
from geostrata.data.images import read_image
from geostrata.errors import ConfigError, ImageError
from geostrata.inference import predict
from geostrata.knowledge import HashingEncoder, KnowledgeBase
from geostrata.model import GeoStrataProcessor
from geostrata.model.bands import BandAdapter
from geostrata.model.imaging import BandInput, ImageProcessor, fit_band_input
from geostrata.model.settings import VisionLevelsConfig
from geostrata.model.vision import MultiLevelVisionEncoder
from geostrata.session import ExperimentConfig, load_model
from geostrata.session.batching import FeatureCache, ImageStore
from geostrata.train.stages import stage_parameters
from tests.model.conftest import DIM
from tests.model.test_vision import TINY_CLIP

LEVELS = ["scene", "region", "object"]


def _tiff(path: Path, bands: np.ndarray) -> str:
    """(H, W, C) -> a planar (one plane per band) TIFF, as multispectral stacks are stored."""
    tifffile.imwrite(
        path, bands.transpose(2, 0, 1), photometric="minisblack", planarconfig="separate"
    )
    return str(path)


def _chip(level: float, bands: int, seed: int, size: int = 20) -> np.ndarray:
    """A uniform uint16 chip: one radiance plus a little sensor noise."""
    noise = np.random.default_rng(seed).normal(0, 8, (size, size, bands))
    return (level + noise).clip(0, 65535).astype(np.uint16)


def test_uniform_chips_of_different_radiance_stay_apart(tmp_path):
    water = _tiff(tmp_path / "water.tif", _chip(300, 3, seed=0))
    sand = _tiff(tmp_path / "sand.tif", _chip(3000, 3, seed=1))
    stretched = [read_image(p).astype(float).mean() for p in (water, sand)]
    assert abs(stretched[0] - stretched[1]) < 10  # both stretched into noise around mid-grey
    bands = fit_band_input(3, None, "auto", [water, sand])  # uint16 data: band statistics
    assert bands.stats is not None and bands.stats.dtype == "uint16"
    images = ImageProcessor(16, bands=bands)
    x = images([water, sand])  # (2, 3, 16, 16)
    assert x[0].mean() < -0.9 and x[1].mean() > 0.9  # one std below / above the mean
    assert (x[0].max() < x[1].min()).item()  # every pixel of the dark chip below the bright


def test_band_statistics_merge_images_exactly():
    rng = np.random.default_rng(0)
    images = [rng.normal(5000 + 10 * i, 3, (30, 40, 4)).astype(np.float32) for i in range(3)]
    images[1][0, 0, 2] = np.nan  # no data is left out
    stats = band_statistics(images)
    pooled = np.concatenate([im.reshape(-1, 4) for im in images]).astype(np.float64)
    np.testing.assert_allclose(stats.mean, np.nanmean(pooled, axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, np.nanstd(pooled, axis=0), rtol=1e-9)
    with pytest.raises(ImageError, match="8-bit and other images"):
        band_statistics([images[0], np.zeros((4, 4, 4), np.uint8)], names=["a", "b"])


def test_adapter_starts_as_the_rgb_bands_and_learns_the_others():
    adapter = BandAdapter(13, (3, 2, 1))
    x = torch.randn(2, 13, 8, 8, requires_grad=True)
    out = adapter(x)
    assert torch.equal(out, x[:, [3, 2, 1]])
    out.square().sum().backward()
    assert adapter.weight.grad[:, 7].abs().sum() > 0  # NIR / SWIR weights get gradient


@pytest.mark.parametrize("tower", ["hf", "effnet_lite0", "geoembed_resnet18"])
def test_every_tower_sees_its_rgb_through_the_adapter_at_first(tower):
    def encoder(in_bands):
        torch.manual_seed(0)
        vc = TINY_CLIP if tower == "hf" else None
        cfg = VisionLevelsConfig(
            levels=LEVELS, region_grid=2, vision_config=vc, vision_tower=tower, in_bands=in_bands
        )
        return MultiLevelVisionEncoder(cfg).eval()

    rgb, four = encoder(3), encoder(4)
    four.tower.load_state_dict(rgb.tower.state_dict())
    x = torch.randn(1, 4, 32, 32)
    want, got = rgb(x[:, :3]), four(x)
    for level in LEVELS:
        torch.testing.assert_close(got.levels[level], want.levels[level])
    got.levels["scene"].sum().backward()  # a frozen tower passes gradients to the adapter
    assert four.band_adapter.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in four.tower.parameters())


def test_band_settings_are_checked_when_read():
    with pytest.raises(ConfigError, match="rgb_bands"):
        VisionLevelsConfig(levels=LEVELS, region_grid=2, vision_config=TINY_CLIP, in_bands=6)
    with pytest.raises(ConfigError, match="below in_bands=4"):
        VisionLevelsConfig(
            levels=LEVELS, region_grid=2, vision_config=TINY_CLIP, in_bands=4, rgb_bands=[4, 2, 1]
        )
    with pytest.raises(ConfigError, match="band_norm"):
        VisionLevelsConfig(
            levels=LEVELS, region_grid=2, vision_config=TINY_CLIP, in_bands=4, band_norm="stretch"
        )


def _saved(folder, make_config, tokenizer, kb, in_bands, chips):
    """A tiny model taking `in_bands` bands, its adapter moved off its start, saved whole."""
    from geostrata.model import GeoStrataForConditionalGeneration

    torch.manual_seed(0)
    model = GeoStrataForConditionalGeneration(make_config(in_bands=in_bands))
    model.attach_knowledge(kb)
    with torch.no_grad():
        model.vision.band_adapter.weight.add_(0.01)
    bands = fit_band_input(in_bands, None, "auto", chips)
    processor = GeoStrataProcessor(
        tokenizer, image_size=32, num_image_tokens=9, question_encoder=kb.encode_text, bands=bands
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    ExperimentConfig(preset="tiny").save(folder / "experiment.yaml")  # the model: config.json
    return model, processor


@pytest.mark.parametrize("in_bands", [13, 4])
def test_multiband_uint16_chips_go_through_save_load_and_predict(
    tmp_path, make_config, tokenizer, in_bands
):
    chips = [_tiff(tmp_path / f"{i}.tif", _chip(500 + 400 * i, in_bands, i)) for i in range(3)]
    kb = KnowledgeBase.load(encoder=HashingEncoder(DIM), cache_dir=tmp_path / "kb")
    folder = tmp_path / "model"
    model, processor = _saved(folder, make_config, tokenizer, kb, in_bands, chips)
    loaded = load_model(folder, knowledge=kb)
    assert torch.equal(loaded.model.vision.band_adapter.weight, model.vision.band_adapter.weight)
    assert loaded.processor.image_processor.bands == processor.image_processor.bands  # stats
    x = loaded.processor.image_processor(chips[:1])
    assert x.shape == (1, in_bands, 32, 32)
    assert torch.equal(x, processor.image_processor(chips[:1]))
    pred = predict(loaded, chips[2], "what is the scene", max_new_tokens=2)
    assert set(pred.cues) == set(LEVELS)
    with pytest.raises(ImageError, match=f"the model takes {in_bands}"):
        predict(loaded, _tiff(tmp_path / "rgb.tif", _chip(500, 3, 9)), "what is the scene")


def test_frozen_tower_features_are_cached_once_the_adapter_settles(tmp_path, make_model):
    chips = [_tiff(tmp_path / f"{i}.tif", _chip(500 + 400 * i, 4, i)) for i in range(3)]
    model = make_model(in_bands=4)  # tower frozen (freeze_vision=True), adapter trainable
    allowed = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "vision.band_adapter.weight" in allowed
    assert not any(n.startswith("vision.tower.") for n in allowed)
    stage1 = {id(p) for p in stage_parameters(model, "stage1", allowed)}
    assert id(model.vision.band_adapter.weight) in stage1
    stage_parameters(model, "stage2", allowed)  # frozen tower: the adapter is settled
    assert not any(p.requires_grad for p in model.vision.parameters())
    images = ImageStore(ImageProcessor(32, bands=fit_band_input(4, None, "auto", chips)))
    cache = FeatureCache(model, images, device="cpu")
    cache.add(chips, show_progress=False)
    want = model.encode_images(images.pixel_values(chips[::-1]))
    got = cache.get(chips[::-1])
    for level in LEVELS:
        torch.testing.assert_close(got.levels[level], want.levels[level])


def test_8bit_rgb_keeps_its_path_and_band_input_round_trips(tmp_path):
    from tests.data.fixtures import rgb_array, write_image

    png = str(write_image(tmp_path / "a.png", rgb_array(0, 12, 12)))
    assert fit_band_input(3, None, "auto", [png]) == BandInput()  # no statistics
    assert fit_band_input(3, None, "stats", [png]).stats.dtype == "uint8"
    bands = fit_band_input(4, [2, 1, 0], "auto", [_tiff(tmp_path / "b.tif", _chip(9, 4, 0))])
    assert BandInput.from_dict(bands.to_dict()) == bands and bands.rgb == (2, 1, 0)
    assert BandInput.from_dict(None) == BandInput()  # processor folders saved before bands


def test_a_multiband_model_maps_a_scene_with_every_band(tmp_path, make_config, tokenizer):
    from geostrata.mapping import MapSettings, map_scene
    from tests.geo.fixtures import write_scene

    scene = write_scene(tmp_path / "scene.tif", width=96, height=64, count=4, nodata_cols=0)
    chips = [_tiff(tmp_path / f"{i}.tif", _chip(500 + 400 * i, 4, i)) for i in range(2)]
    kb = KnowledgeBase.load(encoder=HashingEncoder(DIM), cache_dir=tmp_path / "kb")
    _saved(tmp_path / "model", make_config, tokenizer, kb, 4, chips)
    loaded = load_model(tmp_path / "model", knowledge=kb)
    settings = MapSettings(tile=32, preview_side=48)
    summary = map_scene(loaded, scene, tmp_path / "out", ["forest", "river"], settings, False)
    collection = json.loads(summary.geojson.read_text(encoding="utf-8"))
    assert collection["bands"] == [1, 2, 3, 4] and summary.classified == 6
