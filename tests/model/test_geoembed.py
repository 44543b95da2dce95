"""GeoEmbed V3 ResNet-18 port: numerics against a plain-numpy forward, strict loading, preset.

Needs `geoembed==1.1.2` installed with `pip install --no-deps` (its netcl dependency does not
build here, and is not needed: only the package's weights file is read). Without it these tests
fail with the loader's install hint rather than skip.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from geostrata.errors import CheckpointError
from geostrata.model import GeoStrataConfig, GeoStrataForConditionalGeneration, GeoStrataProcessor
from geostrata.model.geoembed import (
    GeoEmbedResNet18,
    load_geoembed_weights,
    packaged_weights_path,
    read_npz,
)

from .conftest import DIM

BN_EPS = 1e-5  # netcl's BatchNorm2d default, which geoembed keeps
PORT_RTOL = 1e-4  # max |torch - numpy| / max |numpy|, per compared tensor


@pytest.fixture(scope="module")
def v3_arrays() -> dict[str, np.ndarray]:
    return read_npz(packaged_weights_path())


@pytest.fixture(scope="module")
def v3_net() -> GeoEmbedResNet18:
    net = GeoEmbedResNet18().eval()
    load_geoembed_weights(net)
    return net


# ---- an independent numpy forward, straight from the npz keys --------------------------------


def _np_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Cross-correlation, zero padding: (B, C, H, W) x (O, C, k, k) -> (B, O, H', W')."""
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("bchwij,ocij->bohw", win, w, optimize=True)


def _np_bn(x: np.ndarray, a: dict[str, np.ndarray], name: str) -> np.ndarray:
    def per_channel(stat: str) -> np.ndarray:
        return a[f"{name}.{stat}"].astype(np.float64)[None, :, None, None]

    x_hat = (x - per_channel("running_mean")) / np.sqrt(per_channel("running_var") + BN_EPS)
    return x_hat * per_channel("weight") + per_channel("bias")


def _np_conv_bn(
    x: np.ndarray, a: dict[str, np.ndarray], conv: str, bn: str, stride: int, pad: int
) -> np.ndarray:
    return _np_bn(_np_conv(x, a[f"{conv}.weight"].astype(np.float64), stride, pad), a, bn)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _np_block(x: np.ndarray, a: dict[str, np.ndarray], p: str, stride: int) -> np.ndarray:
    h = _relu(_np_conv_bn(x, a, f"{p}.conv1", f"{p}.bn1", stride, 1))
    h = _np_conv_bn(h, a, f"{p}.conv2", f"{p}.bn2", 1, 1)
    has_short = f"{p}.short.0.weight" in a
    short = _np_conv_bn(x, a, f"{p}.short.0", f"{p}.short.1", stride, 0) if has_short else x
    return _relu(h + short)


def _np_resnet(x: np.ndarray, a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """geoembed's NetCLResNet18 + TileEncoderV3 head in float64 numpy: stage maps and embedding."""
    h = _relu(_np_conv_bn(x, a, "bb.stem.0", "bb.stem.1", 1, 1))
    out = {}
    for stage, stride in zip(("layer1", "layer2", "layer3", "layer4"), (1, 2, 2, 2), strict=True):
        h = _np_block(h, a, f"bb.{stage}.0", stride)
        out[stage] = h = _np_block(h, a, f"bb.{stage}.1", 1)
    b, c, hh, ww = h.shape
    pooled = h.reshape(b, c, 4, hh // 4, 4, ww // 4).mean(axis=(3, 5))  # (B, 512, 4, 4)
    emb = pooled.reshape(b, -1) @ a["fc.weight"].astype(np.float64) + a["fc.bias"]  # (B, 256)
    out["embedding"] = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    return out


def _rel_err(got: torch.Tensor, want: np.ndarray) -> float:
    return float(np.abs(got.double().numpy() - want).max() / np.abs(want).max())


def test_port_matches_numpy_reference_forward(v3_net, v3_arrays):
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 3, 32, 32))  # [-1, 1] like geoembed
    ref = _np_resnet(x, v3_arrays)
    with torch.no_grad():
        maps = v3_net.level_maps(torch.from_numpy(x).float())
        emb = v3_net(torch.from_numpy(x).float())
    got = {"layer2": maps["object"], "layer3": maps["region"], "layer4": maps["scene"]}
    assert got["layer4"].shape == (2, 512, 4, 4) and got["layer2"].shape == (2, 128, 16, 16)
    errors = {name: _rel_err(t, ref[name]) for name, t in got.items()}
    errors["embedding"] = _rel_err(emb, ref["embedding"])
    assert all(e < PORT_RTOL for e in errors.values()), errors
    assert np.abs(ref["layer4"]).max() > 1.0  # the comparison is on live, non-trivial features


def _write_npz(path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("doctor", "named"),
    [
        (lambda a: a.pop("bb.layer3.1.bn2.running_var"), "bb.layer3.1.bn2.running_var"),
        (
            lambda a: a.update({"bb.layer2.0.short.0.weight": np.zeros((128, 64, 3, 3))}),
            "bb.layer2.0.short.0.weight: file (128, 64, 3, 3), expected (128, 64, 1, 1)",
        ),
        (lambda a: a.update({"fc.weight": a["fc.weight"].T}), "fc.weight: file (256, 8192)"),
        (lambda a: a.update({"bb.layer5.0.conv1.weight": np.zeros(1)}), "bb.layer5.0.conv1"),
        (lambda a: a.update({"base_channels": np.array([32])}), "base_channels=[32], expected 64"),
    ],
    ids=["missing", "wrong-shape", "fc-not-transposed", "unexpected", "metadata"],
)
def test_doctored_npz_is_refused_naming_file_and_key(tmp_path, v3_arrays, doctor, named):
    arrays = dict(v3_arrays)
    doctor(arrays)
    path = tmp_path / "v3.npz"
    _write_npz(path, arrays)
    net = GeoEmbedResNet18()
    before = net.bb.stem[0].weight.clone()
    with pytest.raises(CheckpointError, match="not the geoembed V3") as err:
        load_geoembed_weights(net, path)
    assert str(path) in str(err.value) and named in str(err.value)
    assert torch.equal(net.bb.stem[0].weight, before)  # nothing half-loaded


def test_unreadable_file_and_missing_package_are_clear(tmp_path, monkeypatch):
    bad = tmp_path / "v3.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=re.escape(f"{bad}: cannot read geoembed weights")):
        load_geoembed_weights(GeoEmbedResNet18(), bad)

    import importlib.metadata

    def absent(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(CheckpointError, match=r"pip install --no-deps geoembed==1\.1\.2"):
        load_geoembed_weights(GeoEmbedResNet18())


# ---- the tiny-geoembed preset in the full model ----------------------------------------------


def _tiny_geoembed_config(tokenizer) -> GeoStrataConfig:
    return GeoStrataConfig.from_preset(
        "tiny-geoembed",
        knowledge_dim=DIM,
        hidden_size=32,
        num_heads=2,
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
        },
    )


def test_tiny_geoembed_preset_forwards_with_level_shapes(tokenizer, retriever, v3_net, tmp_path):
    cfg = _tiny_geoembed_config(tokenizer)
    assert cfg.vision_tower == "geoembed_resnet18" and cfg.vision_config is None
    assert cfg.image_size == 128 and cfg.image_mean == cfg.image_std == [0.5, 0.5, 0.5]
    model = GeoStrataForConditionalGeneration(cfg)
    model.attach_knowledge(retriever)
    model.train()
    assert not model.vision.tower.training  # frozen: BatchNorm keeps the running statistics
    assert all(not p.requires_grad for p in model.vision.parameters())
    tower = model.vision.tower.state_dict()
    for key, value in v3_net.state_dict().items():  # post_init must not re-initialise them
        assert torch.equal(tower[key], value), key

    processor = GeoStrataProcessor(
        tokenizer, cfg.image_size, cfg.num_image_tokens, cfg.image_mean, cfg.image_std,
        question_encoder=retriever.encode_text,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8) for _ in range(2)]
    batch = processor(images, ["how many cars", "is there a forest"], ["2", "yes"])
    assert batch["pixel_values"].shape == (2, 3, 128, 128)

    feats = model.encode_images(batch["pixel_values"])  # what the feature cache stores
    shapes = {lv: tuple(t.shape) for lv, t in feats.levels.items()}
    assert shapes == {"scene": (2, 1, 512), "region": (2, 4, 256), "object": (2, 256, 128)}
    assert feats.last is None and not feats.levels["scene"].requires_grad
    assert feats.nbytes / 2 < 0.15 * 2**20  # per image, small enough to cache

    out = model(**batch)
    assert torch.isfinite(out.loss) and out.router_weights.shape == (2, 3)
    no_pixels = {k: v for k, v in batch.items() if k != "pixel_values"}
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, model(**no_pixels, features=feats).logits)

        model.save_pretrained(tmp_path)  # BatchNorm buffers travel with the checkpoint
        back = GeoStrataForConditionalGeneration.from_pretrained(tmp_path).eval()
        back_feats = back.encode_images(batch["pixel_values"])
    for level, t in feats.levels.items():
        assert torch.equal(back_feats.levels[level], t), level
