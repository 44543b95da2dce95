"""GeoStrataConfig: presets, overrides, validation, serialisation, token budget."""

import pytest

from geostrata.errors import ConfigError
from geostrata.model import GeoStrataConfig
from geostrata.model.settings import FusionConfig


@pytest.mark.parametrize("name", ["tiny", "tiny-effnet", "base", "large"])
def test_presets_build_and_validate(name):
    cfg = GeoStrataConfig.from_preset(name)
    assert cfg.levels == ["scene", "region", "object"]
    assert sum(cfg.sections().fusion.token_budget().values()) == cfg.num_image_tokens


def test_overrides_apply_and_nested_dicts_merge():
    cfg = GeoStrataConfig.from_preset(
        "tiny",
        experts=False,
        top_k=2,
        levels=["object", "scene"],
        text_config={"num_hidden_layers": 1},
        vocab_size=321,
    )
    assert cfg.experts is False and cfg.top_k == 2
    assert cfg.levels == ["scene", "object"]  # stored coarse to fine
    assert cfg.text_config.num_hidden_layers == 1 and cfg.text_config.hidden_size == 128
    assert cfg.text_config.vocab_size == 321


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"levels": ["scene", "building"]}, "building"),
        ({"top_k": -1}, "top_k=-1"),
        ({"baseline": "blip"}, "blip"),
        ({"lambda_align": -0.5}, "lambda_align"),
        ({"not_a_field": 1}, "not_a_field"),
        ({"region_grid": 5}, "num_image_tokens"),  # 1 + 25 > 21 tokens
        ({"scene_layer": 9}, "scene_layer=9"),
    ],
)
def test_bad_values_raise_config_error_naming_field(override, named):
    with pytest.raises(ConfigError, match=named):
        GeoStrataConfig.from_preset("tiny", **override)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="huge"):
        GeoStrataConfig.from_preset("huge")


def test_config_json_round_trip(tmp_path):
    cfg = GeoStrataConfig.from_preset(
        "tiny", experts=False, levels=["scene", "region"], top_k=0, image_size=48
    )
    cfg.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file()
    back = GeoStrataConfig.from_pretrained(tmp_path)
    assert back.levels == ["scene", "region"] and back.experts is False and back.top_k == 0
    assert back.vision_config.image_size == 48 and back.text_config.hidden_size == 128


def test_effnet_config_round_trip_keeps_no_vision_config(tmp_path):
    GeoStrataConfig.from_preset("tiny-effnet").save_pretrained(tmp_path)
    back = GeoStrataConfig.from_pretrained(tmp_path)
    assert back.vision_tower == "effnet_lite0" and back.vision_config is None


def test_token_budget_finest_level_takes_rest():
    full = FusionConfig(
        levels=["scene", "region", "object"],
        hidden_size=8,
        llm_hidden_size=8,
        num_image_tokens=21,
        region_grid=2,
    )
    assert full.token_budget() == {"scene": 1, "region": 4, "object": 16}
    coarse = FusionConfig(
        levels=["scene", "region"],
        hidden_size=8,
        llm_hidden_size=8,
        num_image_tokens=21,
        region_grid=2,
    )
    assert coarse.token_budget() == {"scene": 1, "region": 20}
