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


def test_each_setting_is_defined_once_and_reaches_its_component_unrenamed():
    from geostrata.model.settings import SETTINGS, setting_fields

    names = [f.name for f in setting_fields()]
    assert len(names) == len(set(names)) == len(SETTINGS)  # no setting in two sections
    cfg = GeoStrataConfig.from_preset("base", top_k=7, expert_ffn_mult=3, freeze_vision=False)
    flat = {name: getattr(cfg, name) for name in SETTINGS}
    assert cfg.sections().settings() == flat  # every component reads the flat name's value
    assert cfg.sections().augmentation.top_k == 7 and cfg.sections().experts.expert_ffn_mult == 3


@pytest.mark.parametrize("name", ["tiny", "tiny-effnet", "base", "large"])
def test_a_preset_is_its_table_entry_on_the_defaults(name):
    import dataclasses

    from geostrata.model.settings import PRESETS, SUBCONFIGS, setting_fields

    cfg, entry = GeoStrataConfig.from_preset(name), PRESETS[name]
    for f in setting_fields():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert getattr(cfg, f.name) == entry.get(f.name, default), f.name
    for key in SUBCONFIGS:
        if entry.get(key):
            sub = getattr(cfg, key).to_dict()
            assert {k: sub[k] for k in entry[key]} == entry[key], key


def test_sub_config_typos_name_the_closest_hf_field():
    with pytest.raises(ConfigError, match="unknown key 'num_hiden_layers'.*'num_hidden_layers'"):
        GeoStrataConfig.from_preset("tiny", text_config={"num_hiden_layers": 1})
    with pytest.raises(ConfigError, match="unknown key 'patchsize'.*'patch_size'"):
        GeoStrataConfig.from_preset("base", vision_config={"patchsize": 16})


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"retrieval": "false"}, "retrieval='false': expected true or false"),
        ({"lora_r": 2.0}, "lora_r=2.0: expected an integer"),
        ({"image_std": [0.5, 0.0, 0.5]}, "image_std"),
        ({"lora_target_modules": "q_proj"}, "expected a list of strings"),
        ({"torch_dtype": "float64"}, "torch_dtype='float64'"),
    ],
)
def test_python_overrides_are_type_checked_too(override, named):
    with pytest.raises(ConfigError, match=named):
        GeoStrataConfig.from_preset("tiny", **override)
