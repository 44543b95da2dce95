"""Vision: EfficientNet-Lite0 packaged weights, level shapes, frozen tower."""

import pytest
import torch
from transformers import AutoConfig, AutoModel

from geostrata.errors import CheckpointError, ConfigError
from geostrata.model.effnet import EfficientNetLite0, load_packaged_weights, packaged_weights_path
from geostrata.model.settings import VisionLevelsConfig
from geostrata.model.vision import MultiLevelFeatures, MultiLevelVisionEncoder, fit_tokens

LEVELS = ["scene", "region", "object"]


def test_effnet_loads_packaged_weights_exactly():
    net = EfficientNetLite0()
    load_packaged_weights(net)  # raises on any missing / unexpected key
    state = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    assert set(state) == set(net.state_dict())
    for key in ("_conv_stem.weight", "_blocks.7._depthwise_conv.weight", "_fc.bias"):
        assert torch.equal(net.state_dict()[key], state[key])


def test_effnet_encoder_levels_and_freezing():
    enc = MultiLevelVisionEncoder(VisionLevelsConfig(
        vision_tower="effnet_lite0", levels=LEVELS, region_grid=2, vision_config=None
    ))
    enc.load_pretrained()
    enc.train()
    assert not enc.tower.training  # frozen tower stays in eval mode
    assert all(not p.requires_grad for p in enc.parameters())
    feats = enc(torch.randn(2, 3, 96, 96))
    assert feats.levels["scene"].shape == (2, 1, 1280)
    assert feats.levels["region"].shape == (2, 4, 112)
    assert feats.levels["object"].shape == (2, 144, 40)  # stride 8 at 96 px: 12 x 12
    assert feats.last.shape == (2, 9, 1280)
    assert not feats.levels["scene"].requires_grad


TINY_CLIP = {
    "model_type": "clip_vision_model",
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
}


def _clip_levels(levels=LEVELS, vc=TINY_CLIP, **kw):
    return VisionLevelsConfig(levels=levels, region_grid=2, vision_config=vc, **kw)


def test_hf_tower_levels_read_the_configured_layers():
    torch.manual_seed(0)
    enc = MultiLevelVisionEncoder(_clip_levels(object_max_tokens=4, freeze_vision=False)).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = enc(x)
    assert feats.levels["scene"].shape == (2, 1, 32)
    assert feats.levels["region"].shape == (2, 4, 32)
    assert feats.levels["object"].shape == (2, 4, 32)
    states = enc.tower(pixel_values=x, output_hidden_states=True).hidden_states
    assert torch.allclose(feats.levels["scene"], states[-1][:, 1:].mean(1, keepdim=True))
    assert torch.allclose(feats.last, states[-1][:, 1:])  # CLS dropped
    assert feats.levels["scene"].requires_grad  # trainable tower when not frozen


def test_levels_subset_computes_only_those():
    enc = MultiLevelVisionEncoder(_clip_levels(levels=["region"]))
    feats = enc(torch.randn(1, 3, 32, 32))
    assert set(feats.levels) == {"region"}


def test_fit_tokens_pools_and_repeats():
    x = torch.arange(16.0).view(1, 16, 1)
    pooled = fit_tokens(x, 4)  # 4x4 grid -> 2x2 grid means
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert fit_tokens(x[:, :1], 3).flatten().tolist() == [0.0, 0.0, 0.0]


def test_features_index_and_cat_round_trip():
    f = MultiLevelFeatures({"scene": torch.randn(3, 1, 4)}, torch.randn(3, 2, 4))
    back = MultiLevelFeatures.cat([f.index(slice(0, 1)), f.index(slice(1, 3))])
    assert torch.equal(back.levels["scene"], f.levels["scene"]) and torch.equal(back.last, f.last)


def _saved_tower(path, **changes):
    """A random tiny HF tower saved as a pretrained folder (what vision_name_or_path names)."""
    vc = {**TINY_CLIP, **changes}
    torch.manual_seed(1)
    AutoModel.from_config(AutoConfig.for_model(**vc)).save_pretrained(path)
    return str(path)


def test_pretrained_tower_loads_every_weight(tmp_path):
    path = _saved_tower(tmp_path / "clip")
    enc = MultiLevelVisionEncoder(_clip_levels(vision_name_or_path=path))
    enc.load_pretrained()
    saved = AutoModel.from_pretrained(path).state_dict()
    own = enc.tower.state_dict()
    assert set(saved) == set(own) and all(torch.equal(saved[k], own[k]) for k in saved)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"num_hidden_layers": 2}, r"missing keys \[encoder.layers.2"),
        ({"num_hidden_layers": 4}, r"unexpected keys \[encoder.layers.3"),
        ({"intermediate_size": 48}, r"shape mismatch .*fc1.weight: file \(48, 32\) vs module"),
    ],
)
def test_a_tower_that_does_not_fit_vision_config_is_refused(tmp_path, changes, named):
    """It loaded with strict=False: a missing layer stayed random, an extra one was dropped."""
    path = _saved_tower(tmp_path / "clip", **changes)
    enc = MultiLevelVisionEncoder(_clip_levels(vision_name_or_path=path))
    with pytest.raises(CheckpointError, match=rf"{path} does not fit vision_config: {named}"):
        enc.load_pretrained()


def test_a_pretrained_tower_that_is_not_here_is_an_error_not_random_weights(tmp_path):
    enc = MultiLevelVisionEncoder(_clip_levels(vision_name_or_path=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="vision_name_or_path=.*nowhere.*not on this machine"):
        enc.load_pretrained()


def test_cls_token_is_a_setting_not_a_guess():
    x = torch.randn(1, 3, 32, 32)  # 4 x 4 patches (+ [CLS] for CLIP)
    with pytest.raises(ConfigError, match="17 tokens: with vision_cls_token=False"):
        MultiLevelVisionEncoder(_clip_levels(vision_cls_token=False))(x)  # CLIP has a [CLS]
    siglip = {**TINY_CLIP, "model_type": "siglip_vision_model"}
    with pytest.raises(ConfigError, match="16 tokens: with vision_cls_token=True"):
        MultiLevelVisionEncoder(_clip_levels(vc=siglip))(x)  # SigLIP has none
    feats = MultiLevelVisionEncoder(_clip_levels(vc=siglip, vision_cls_token=False))(x)
    assert feats.last.shape == (1, 16, 32)  # every token kept
