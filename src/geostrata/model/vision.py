"""MultiLevelVisionEncoder: one token set per semantic level from a vision tower's hidden states.

Remote-sensing semantics span scales, so each level reads the layer whose receptive field fits it:
scene = a deep layer pooled globally, region = a middle layer pooled to a GxG grid, object = a
shallower layer's patch tokens. With the EfficientNet tower the pyramid strides 32/16/8 play the
same roles, with the GeoEmbed ResNet-18 its layer4/layer3/layer2 (geoembed.py says why). The
tower is frozen by default (no grad, eval mode) so its features can be cached. With `in_bands` != 3
a band adapter (bands.py) maps the C input bands to the tower's three channels, for every tower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geostrata.errors import CheckpointError, ConfigError
from geostrata.levels import VISUAL_LEVELS
from geostrata.model.bands import BandAdapter
from geostrata.model.effnet import PYRAMID_CHANNELS, EfficientNetLite0, load_packaged_weights
from geostrata.model.geoembed import LEVEL_CHANNELS, GeoEmbedResNet18, load_geoembed_weights
from geostrata.model.settings import VisionLevelsConfig
from geostrata.weights import StateMismatch, require_same_shapes


@dataclass
class MultiLevelFeatures:
    """Tower features of a batch: level -> (B, N_level, D_level), plus the last layer for llava."""

    levels: dict[str, torch.Tensor] = field(default_factory=dict)
    last: torch.Tensor | None = None  # (B, P, D_last) last-layer patch tokens

    @property
    def batch_size(self) -> int:
        return (
            self.last.shape[0]
            if self.last is not None
            else next(iter(self.levels.values())).shape[0]
        )

    @property
    def nbytes(self) -> int:
        tensors = [*self.levels.values(), *([] if self.last is None else [self.last])]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MultiLevelFeatures:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype)

        last = None if self.last is None else move(self.last)
        return MultiLevelFeatures({k: move(v) for k, v in self.levels.items()}, last)

    def index(self, rows: slice | list[int] | torch.Tensor) -> MultiLevelFeatures:
        """A sub-batch, e.g. one sample's features to cache on disk."""
        last = None if self.last is None else self.last[rows]
        return MultiLevelFeatures({k: v[rows] for k, v in self.levels.items()}, last)

    @staticmethod
    def cat(parts: list[MultiLevelFeatures]) -> MultiLevelFeatures:
        """Concatenate cached sub-batches back into one batch."""
        levels = {k: torch.cat([p.levels[k] for p in parts]) for k in parts[0].levels}
        last = None if parts[0].last is None else torch.cat([p.last for p in parts])
        return MultiLevelFeatures(levels, last)


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D) square token set -> (B, D, g, g) map."""
    b, n, d = tokens.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"cannot lay {n} tokens on a square grid")
    return tokens.transpose(1, 2).reshape(b, d, g, g)


def grid_to_tokens(grid: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B, h*w, D)."""
    return grid.flatten(2).transpose(1, 2)


def fit_tokens(tokens: torch.Tensor, n: int) -> torch.Tensor:
    """Resize a token set (B, N, D) to exactly n tokens.

    Fewer wanted: average-pool (on the 2-D grid when both counts are squares, so pooled tokens stay
    spatially compact). More wanted: repeat tokens (nearest), so a fixed image-token budget can be
    met by a coarse level alone.
    """
    count = tokens.shape[1]
    if count == n:
        return tokens
    if count > n and math.isqrt(count) ** 2 == count and math.isqrt(n) ** 2 == n:
        return grid_to_tokens(F.adaptive_avg_pool2d(tokens_to_grid(tokens), math.isqrt(n)))
    mode = "nearest" if count < n else "area"
    return F.interpolate(tokens.transpose(1, 2), size=n, mode=mode).transpose(1, 2)  # (B, n, D)


def _local_path(name: str | None) -> str | None:
    """A local folder, or a hub name already in the local cache; else None (never downloads)."""
    if name is None:
        return None
    if Path(name).is_dir():
        return name
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - any hub-cache failure means "not available"
        return None
    return name if isinstance(cached, str) else None


def require_local(name: str, setting: str) -> str:
    """`name` as a local path or cached hub name; ConfigError naming the setting if absent, so a
    missing pretrained part never turns silently into random weights."""
    path = _local_path(name)
    if path is None:
        raise ConfigError(
            f"{setting}={name!r}: pretrained weights are not on this machine (nothing is "
            f"downloaded): fetch them where a hub is reachable and set model.{setting} to the "
            f"local folder, or set it to null for random weights"
        )
    return path


def check_loading_info(path: str, info: dict[str, Any]) -> None:
    """CheckpointError when HF's `from_pretrained(..., output_loading_info=True)` left weights
    missing (HF would initialise them randomly), unused or mis-shaped."""
    mismatch = StateMismatch(
        missing=sorted(info.get("missing_keys", ())),
        unexpected=sorted(info.get("unexpected_keys", ())),
        bad_shapes=sorted(str(k) for k in info.get("mismatched_keys", ())),
    )
    if mismatch.missing or mismatch.unexpected or mismatch.bad_shapes:
        raise CheckpointError(f"pretrained weights in {path} are incomplete: {mismatch.describe()}")


def load_pretrained_hf(loader: Any, path: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(path)` with every failure (bad config.json, cut or mis-shaped
    weights, keys HF would leave random) as one CheckpointError naming the path."""
    try:
        model, info = loader.from_pretrained(path, output_loading_info=True, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load pretrained weights from {path}: {first}") from exc
    check_loading_info(path, info)
    return model


def _under_meta_device() -> bool:
    """True inside `with torch.device("meta")` (from_pretrained, count_parameters)."""
    return torch.empty(0).device.type == "meta"


class MultiLevelVisionEncoder(nn.Module):
    """An HF vision tower (CLIP, SigLIP, ...), EfficientNet-Lite0 or GeoEmbed ResNet-18 ->
    MultiLevelFeatures."""

    def __init__(self, config: VisionLevelsConfig) -> None:
        super().__init__()
        self.config = config
        if config.vision_tower == "effnet_lite0":
            self.tower: nn.Module = EfficientNetLite0()
            self.feature_dims = {
                "scene": PYRAMID_CHANNELS[32],
                "region": PYRAMID_CHANNELS[16],
                "object": PYRAMID_CHANNELS[8],
            }
            self.last_dim = PYRAMID_CHANNELS[32]
        elif config.vision_tower == "geoembed_resnet18":
            self.tower = GeoEmbedResNet18()
            self.tower.fc.requires_grad_(False)  # geoembed's embedding head; the levels skip it
            self.feature_dims = dict(LEVEL_CHANNELS)
            self.last_dim = LEVEL_CHANNELS["scene"]
        else:
            self.tower = self._build_hf_tower(config)
            width = config.vision_config["hidden_size"]
            self.feature_dims = {lv: width for lv in VISUAL_LEVELS}
            self.last_dim = width
        if config.freeze_vision:
            self.tower.requires_grad_(False)
        self.band_adapter = (
            BandAdapter(config.in_bands, config.adapter_rgb()) if config.in_bands != 3 else None
        )  # trains even in front of a frozen tower

    @staticmethod
    def _build_hf_tower(config: VisionLevelsConfig) -> nn.Module:
        from transformers import AutoConfig, AutoModel

        vc = dict(config.vision_config)
        tower_config = AutoConfig.for_model(vc.pop("model_type"), **vc)
        tower = AutoModel.from_config(tower_config)
        inner = getattr(tower, "vision_model", tower)
        for unused in ("post_layernorm", "head"):  # we read hidden_states, never the pooled output
            module = getattr(inner, unused, None)
            if isinstance(module, nn.Module):
                module.requires_grad_(False)
        return tower

    def load_pretrained(self) -> None:
        """Load tower weights: packaged EfficientNet or GeoEmbed, or the HF tower named by
        `vision_name_or_path` (a local folder or the HF cache), whose keys and shapes must match
        this tower exactly. Nothing to load when the name is None (random weights)."""
        if _under_meta_device():
            return
        if self.config.vision_tower == "effnet_lite0":
            load_packaged_weights(self.tower)
            return
        if self.config.vision_tower == "geoembed_resnet18":
            load_geoembed_weights(self.tower)
            return
        if self.config.vision_name_or_path is None:
            return
        from transformers import AutoModel

        path = require_local(self.config.vision_name_or_path, "vision_name_or_path")
        loaded = load_pretrained_hf(AutoModel, path)
        vision = getattr(loaded, "vision_model", None)  # full CLIP/SigLIP: keep the image half
        state = (vision or loaded).state_dict()
        own = self.tower.vision_model if hasattr(self.tower, "vision_model") else self.tower
        expected = {k: tuple(v.shape) for k, v in own.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        where = f"pretrained vision tower {path} does not fit vision_config"
        require_same_shapes(where, expected, found)
        own.load_state_dict(state)

    def train(self, mode: bool = True) -> MultiLevelVisionEncoder:
        """A frozen tower stays in eval mode (dropout / BatchNorm statistics untouched)."""
        super().train(mode)
        if self.config.freeze_vision:
            self.tower.eval()
        return self

    def forward(self, pixel_values: torch.Tensor) -> MultiLevelFeatures:
        """(B, C, S, S) -> MultiLevelFeatures (C = in_bands; 3 without a band adapter)."""
        pixel_values = pixel_values.to(next(self.tower.parameters()).dtype)  # e.g. a bf16 tower
        if self.band_adapter is not None:
            pixel_values = self.band_adapter(pixel_values)  # (B, 3, S, S)
        # a frozen tower still passes gradients back to a band adapter that learns
        through = not self.config.freeze_vision or self.adapter_trains
        with torch.set_grad_enabled(torch.is_grad_enabled() and through):
            if self.config.vision_tower == "effnet_lite0":
                return self._effnet_levels(pixel_values)
            if self.config.vision_tower == "geoembed_resnet18":
                return self._map_levels(self.tower.level_maps(pixel_values))
            return self._hf_levels(pixel_values)

    @property
    def adapter_trains(self) -> bool:
        adapter = self.band_adapter
        return adapter is not None and any(p.requires_grad for p in adapter.parameters())

    def _hf_levels(self, pixel_values: torch.Tensor) -> MultiLevelFeatures:
        out = self.tower(pixel_values=pixel_values, output_hidden_states=True)
        states = out.hidden_states  # num_layers + 1 tensors of (B, [CLS] + P, Dv)
        cfg = self.config
        raw = {
            "scene": self._drop_cls(states[cfg.scene_layer]),  # (B, P, Dv)
            "region": self._drop_cls(states[cfg.region_layer]),
            "object": self._drop_cls(states[cfg.object_layer]),
        }
        return MultiLevelFeatures(self._pool_levels(raw), last=self._drop_cls(states[-1]))

    def _drop_cls(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, [CLS] + P, Dv) -> (B, P, Dv) as `vision_cls_token` says; P must be a square."""
        patches = hidden[:, 1:] if self.config.vision_cls_token else hidden
        n = patches.shape[1]
        if math.isqrt(n) ** 2 != n:
            raise ConfigError(
                f"the vision tower gives {hidden.shape[1]} tokens: with vision_cls_token="
                f"{self.config.vision_cls_token} that leaves {n} patches, not a square grid "
                "(does this tower have a [CLS] token? CLIP does, SigLIP does not)"
            )
        return patches

    def _effnet_levels(self, pixel_values: torch.Tensor) -> MultiLevelFeatures:
        pyr = self.tower.pyramid(pixel_values)
        return self._map_levels(
            {"scene": pyr.stride32, "region": pyr.stride16, "object": pyr.stride8}
        )

    def _map_levels(self, maps: dict[str, torch.Tensor]) -> MultiLevelFeatures:
        """A CNN tower's level -> (B, C, h, w) maps -> pooled level tokens; last = scene grid."""
        raw = {level: grid_to_tokens(m) for level, m in maps.items()}  # (B, h*w, C) each
        return MultiLevelFeatures(self._pool_levels(raw), last=raw["scene"])

    def _pool_levels(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg, levels = self.config, {}
        if "scene" in cfg.levels:
            levels["scene"] = raw["scene"].mean(dim=1, keepdim=True)  # (B, 1, D)
        if "region" in cfg.levels:
            levels["region"] = fit_tokens(raw["region"], cfg.region_grid**2)  # (B, G*G, D)
        if "object" in cfg.levels:
            obj = raw["object"]  # (B, P, D)
            if cfg.object_max_tokens is not None and obj.shape[1] > cfg.object_max_tokens:
                obj = fit_tokens(obj, cfg.object_max_tokens)
            levels["object"] = obj
        return levels
