"""GeoStrataConfig: one Hugging Face config for the whole model, one dataclass per component.

The HF config is flat (every ablation switch is one field, so
`from_preset("tiny", experts=False)` and
config.json stay simple) and holds the nested vision/text configs of the two pretrained parts. Each
component (vision, augmentation, experts, fusion) takes only its own validated dataclass, built by
`GeoStrataConfig.<component>_settings()`, so no component reads fields it does not own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from geostrata.errors import ConfigError
from geostrata.levels import VISUAL_LEVELS

LEVEL_ORDER = VISUAL_LEVELS  # coarse to fine
BASELINES: tuple[str, ...] = ("none", "llava")
TOWERS: tuple[str, ...] = ("hf", "effnet_lite0", "geoembed_resnet18")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


TORCH_DTYPES = ("float32", "bfloat16", "float16")


def ordered_levels(levels: list[str] | tuple[str, ...]) -> list[str]:
    """Validate a level subset and return it coarse-to-fine (the order experts and fusion use)."""
    levels = list(levels)
    for level in levels:
        if level not in LEVEL_ORDER:
            raise ConfigError(
                f"levels: unknown level {level!r} (expected a subset of {LEVEL_ORDER})"
            )
    if len(set(levels)) != len(levels):
        raise ConfigError(f"levels: duplicate entries in {levels!r}")
    return [lv for lv in LEVEL_ORDER if lv in levels]


def _require(ok: bool, name: str, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r}: {why}")


@dataclass
class VisionLevelsConfig:
    """Which tower and which of its layers feed each semantic level."""

    # "hf" (any HF vision tower via vision_config) | "effnet_lite0" (packaged weights) |
    # "geoembed_resnet18" (aerial ResNet-18, weights from the installed geoembed package)
    tower: str = "hf"
    vision_config: dict[str, Any] | None = None  # HF vision config as a dict (tower == "hf")
    pretrained: str | None = None  # HF name or local path, loaded only when it exists locally
    levels: list[str] = field(default_factory=lambda: list(LEVEL_ORDER))
    scene_layer: int = -1  # hidden_states index; deep layer, globally pooled -> 1 token
    region_layer: int = -2  # middle layer, pooled to region_grid x region_grid tokens
    region_grid: int = 2
    object_layer: int = -3  # shallower layer, patch tokens
    object_max_tokens: int | None = None  # pool object tokens down to this many (None: keep all)
    freeze: bool = True

    def __post_init__(self) -> None:
        self.levels = ordered_levels(self.levels)
        _require(self.tower in TOWERS, "vision_tower", self.tower, f"expected one of {TOWERS}")
        _require(self.region_grid >= 1, "region_grid", self.region_grid, "must be >= 1")
        ok = self.object_max_tokens is None or self.object_max_tokens >= 1
        _require(ok, "object_max_tokens", self.object_max_tokens, "must be >= 1 or None")
        if self.tower == "hf":
            _require(self.vision_config is not None, "vision_config", None, "needed for tower 'hf'")
            n_states = self.vision_config.get("num_hidden_layers", 0) + 1
            for name in ("scene_layer", "region_layer", "object_layer"):
                idx = getattr(self, name)
                _require(
                    -n_states <= idx < n_states, name, idx, f"tower has {n_states} hidden states"
                )


@dataclass
class AugmentationConfig:
    """Semantic Augmentation Module: retrieval, cue fusion and the alignment loss."""

    levels: list[str]
    in_dims: dict[str, int]  # feature width of each level as the tower gives it
    hidden_size: int
    knowledge_dim: int
    retrieval: bool = True
    top_k: int = 4
    temperature: float = 0.1  # softmax temperature over cue scores
    gate_init: float = 0.1  # tanh gate starts small but non-zero so cues get gradient at step 0
    align_temperature: float = 0.07
    num_heads: int = 4

    def __post_init__(self) -> None:
        self.levels = ordered_levels(self.levels)
        _require(self.top_k >= 0, "top_k", self.top_k, "must be >= 0")
        _require(self.temperature > 0, "retrieval_temperature", self.temperature, "must be > 0")
        _require(
            self.align_temperature > 0, "align_temperature", self.align_temperature, "must be > 0"
        )
        _require(
            self.hidden_size % self.num_heads == 0,
            "num_heads",
            self.num_heads,
            f"must divide hidden_size={self.hidden_size}",
        )
        missing = [lv for lv in self.levels if lv not in self.in_dims]
        _require(not missing, "in_dims", self.in_dims, f"missing levels {missing}")


@dataclass
class ExpertsConfig:
    """Semantic experts: one block per level (or one shared dense block) and the router."""

    levels: list[str]
    hidden_size: int
    knowledge_dim: int
    experts: bool = True
    num_heads: int = 4
    ffn_mult: int = 4

    def __post_init__(self) -> None:
        self.levels = ordered_levels(self.levels)
        _require(
            self.hidden_size % self.num_heads == 0,
            "num_heads",
            self.num_heads,
            f"must divide hidden_size={self.hidden_size}",
        )
        _require(self.ffn_mult >= 1, "expert_ffn_mult", self.ffn_mult, "must be >= 1")


@dataclass
class FusionConfig:
    """Cross-modal fusion: level tokens -> a fixed budget of LLM-width image tokens."""

    levels: list[str]
    hidden_size: int  # width of the level tokens (or of the tower's last layer for llava)
    llm_hidden_size: int
    num_image_tokens: int
    region_grid: int = 2
    baseline: str = "none"

    def __post_init__(self) -> None:
        self.levels = ordered_levels(self.levels)
        _require(
            self.baseline in BASELINES, "baseline", self.baseline, f"expected one of {BASELINES}"
        )
        _require(
            self.num_image_tokens >= 1, "num_image_tokens", self.num_image_tokens, "must be >= 1"
        )
        if self.baseline == "none":
            _require(bool(self.levels), "levels", self.levels, "need at least one level")
            self.token_budget()  # raises when the fixed levels alone exceed the budget

    def token_budget(self) -> dict[str, int]:
        """Tokens per level: scene 1, region G*G, and the finest active level takes the rest.

        Keeping the total fixed means every ablation (levels subset, llava) sees the same prompt
        length, so the processor never depends on which levels are switched on.
        """
        fixed = {"scene": 1, "region": self.region_grid**2}
        budget = {lv: fixed.get(lv, 0) for lv in self.levels[:-1]}
        rest = self.num_image_tokens - sum(budget.values())
        _require(
            rest >= 1,
            "num_image_tokens",
            self.num_image_tokens,
            f"too small for levels {self.levels} (scene takes 1, region {self.region_grid**2})",
        )
        budget[self.levels[-1]] = rest
        return budget


def _tiny_vision() -> dict[str, Any]:
    return {
        "model_type": "clip_vision_model",
        "image_size": 96,
        "patch_size": 12,
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
    }


def _tiny_text() -> dict[str, Any]:
    return {
        "model_type": "llama",
        "vocab_size": 2000,
        "hidden_size": 128,
        "intermediate_size": 352,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 512,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
    }


class GeoStrataConfig(PreTrainedConfig):
    """Everything that defines a GeoStrata model; saved as config.json next to the weights."""

    model_type = "geostrata"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="clip_vision_model",
            init_kwargs=_tiny_vision(),
            optional=True,
        ),
        "text_config": SubConfigSpec(
            config_class=AutoConfig, model_type="llama", init_kwargs=_tiny_text()
        ),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    vision_tower: str = "hf"
    vision_name_or_path: str | None = None
    text_name_or_path: str | None = None
    image_size: int = 96
    image_mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(CLIP_STD))
    levels: list[str] = field(default_factory=lambda: list(LEVEL_ORDER))
    baseline: str = "none"
    hidden_size: int = 128
    knowledge_dim: int = 384
    knowledge_encoder: str | None = None
    num_image_tokens: int = 21
    scene_layer: int = -1
    region_layer: int = -2
    region_grid: int = 2
    object_layer: int = -3
    object_max_tokens: int | None = None
    retrieval: bool = True
    top_k: int = 4
    retrieval_temperature: float = 0.1
    gate_init: float = 0.1
    align_temperature: float = 0.07
    num_heads: int = 4
    experts: bool = True
    expert_ffn_mult: int = 4
    freeze_vision: bool = True
    freeze_llm: bool = False
    use_lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lambda_align: float = 0.1
    lambda_balance: float = 0.01
    lambda_router: float = 0.0  # > 0: teach the router each training question's semantic level
    image_token_id: int = 4
    # Scale-out switches (used by the base/large presets on GPUs; inert for random tiny models).
    gradient_checkpointing: bool = False  # recompute LLM activations in backward
    torch_dtype: str = "float32"  # dtype a pretrained LLM is loaded in: float32|bfloat16|float16
    load_in_4bit: bool = False  # QLoRA: 4-bit NF4 base LLM (needs bitsandbytes + CUDA, and LoRA)

    def __post_init__(self, **kwargs: Any) -> None:
        if self.vision_config is None and self.vision_tower == "hf":
            self.vision_config = _tiny_vision()  # optional only for the EfficientNet tower
        super().__post_init__(**kwargs)
        self.levels = ordered_levels(self.levels)
        _require(
            self.baseline in BASELINES, "baseline", self.baseline, f"expected one of {BASELINES}"
        )
        _require(self.top_k >= 0, "top_k", self.top_k, "must be >= 0")
        _require(self.image_size >= 8, "image_size", self.image_size, "must be >= 8")
        _require(self.lora_r >= 1, "lora_r", self.lora_r, "must be >= 1")
        for name in ("lambda_align", "lambda_balance", "lambda_router"):
            _require(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        _require(self.torch_dtype in TORCH_DTYPES, "torch_dtype", self.torch_dtype,
                 f"expected one of {TORCH_DTYPES}")
        _require(not self.load_in_4bit or self.use_lora, "load_in_4bit", self.load_in_4bit,
                 "4-bit weights cannot be trained directly: set use_lora=True (QLoRA)")
        if self.vision_tower == "hf" and self.vision_config is not None:
            self.vision_config.image_size = self.image_size
        self.vision_settings()  # validate every component now, not at the first forward
        self.fusion_settings(self.hidden_size)

    # ---- presets -------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GeoStrataConfig:
        """A named preset, overridable field by field; `vision_config`/`text_config` dicts merge."""
        kwargs = preset_kwargs(name)
        for key in ("vision_config", "text_config"):
            value = overrides.pop(key, {})
            if value is None or kwargs.get(key) is None:
                kwargs[key] = value or None  # switching a tower off / on replaces the whole dict
            else:
                kwargs[key] = {**kwargs[key], **value}
        if "vocab_size" in overrides:  # the tokenizer is trained locally, so its size comes late
            kwargs["text_config"] = {
                **kwargs["text_config"],
                "vocab_size": overrides.pop("vocab_size"),
            }
        known = {f for f in cls.__dataclass_fields__}
        for key in overrides:
            if key not in known:
                raise ConfigError(f"override {key!r}: not a GeoStrataConfig field")
        return cls(**{**kwargs, **overrides})

    # ---- component configs ---------------------------------------------------------------------
    def vision_settings(self) -> VisionLevelsConfig:
        vc = (
            self.vision_config.to_dict()
            if self.vision_tower == "hf" and self.vision_config
            else None
        )
        return VisionLevelsConfig(
            tower=self.vision_tower,
            vision_config=vc,
            pretrained=self.vision_name_or_path,
            levels=self.levels,
            scene_layer=self.scene_layer,
            region_layer=self.region_layer,
            region_grid=self.region_grid,
            object_layer=self.object_layer,
            object_max_tokens=self.object_max_tokens,
            freeze=self.freeze_vision,
        )

    def augmentation_settings(self, in_dims: dict[str, int]) -> AugmentationConfig:
        return AugmentationConfig(
            levels=self.levels,
            in_dims=in_dims,
            hidden_size=self.hidden_size,
            knowledge_dim=self.knowledge_dim,
            retrieval=self.retrieval,
            top_k=self.top_k,
            temperature=self.retrieval_temperature,
            gate_init=self.gate_init,
            align_temperature=self.align_temperature,
            num_heads=self.num_heads,
        )

    def experts_settings(self) -> ExpertsConfig:
        return ExpertsConfig(
            levels=self.levels,
            hidden_size=self.hidden_size,
            knowledge_dim=self.knowledge_dim,
            experts=self.experts,
            num_heads=self.num_heads,
            ffn_mult=self.expert_ffn_mult,
        )

    def fusion_settings(self, in_hidden_size: int) -> FusionConfig:
        return FusionConfig(
            levels=self.levels,
            hidden_size=in_hidden_size,
            llm_hidden_size=self.text_config.hidden_size,
            num_image_tokens=self.num_image_tokens,
            region_grid=self.region_grid,
            baseline=self.baseline,
        )


def preset_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments of a named preset (fresh dicts, safe to mutate)."""
    presets = {
        "tiny": _tiny,
        "tiny-effnet": _tiny_effnet,
        "tiny-geoembed": _tiny_geoembed,
        "base": _base,
        "large": _large,
    }
    if name not in presets:
        raise ConfigError(f"preset {name!r}: unknown (expected one of {sorted(presets)})")
    return copy.deepcopy(presets[name]())


def _tiny() -> dict[str, Any]:
    # Random-init ViT (8x8 patches at 96 px) that trains with the rest: scene = layer 4,
    # region = layer 3 (2x2 grid), object = layer 2 (64 patches pooled to 16): 1 + 4 + 16 = 21.
    return {
        "vision_config": _tiny_vision(),
        "text_config": _tiny_text(),
        "image_size": 96,
        "hidden_size": 128,
        "num_image_tokens": 21,
        "freeze_vision": False,
    }


def _tiny_effnet() -> dict[str, Any]:
    # Packaged ImageNet EfficientNet-Lite0 (frozen); at 96 px its strides 32/16/8 give 3x3, 6x6
    # and 12x12 maps for scene / region / object. Lite models were trained on (x - 127) / 128.
    return {
        "vision_config": None,
        "vision_tower": "effnet_lite0",
        "text_config": _tiny_text(),
        "image_size": 96,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "hidden_size": 128,
        "num_image_tokens": 21,
        "freeze_vision": True,
    }


def _tiny_geoembed() -> dict[str, Any]:
    # geoembed's aerial ResNet-18 (frozen), at the 128 px it was trained at, on [-1, 1] inputs:
    # scene = layer4 (16x16), region = layer3 (32x32 -> 2x2), object = layer2 (64x64 pooled to
    # 16x16 so the feature cache stays ~0.13 MiB an image).
    return {
        **_tiny_effnet(),
        "vision_tower": "geoembed_resnet18",
        "image_size": 128,
        "image_mean": [0.5, 0.5, 0.5],  # geoembed's own (x / 255 - 0.5) / 0.5
        "image_std": [0.5, 0.5, 0.5],
        "object_max_tokens": 256,
    }


def _base() -> dict[str, Any]:
    vision = {
        "model_type": "clip_vision_model",
        "image_size": 336,
        "patch_size": 14,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
    }
    text = {
        "model_type": "llama",
        "vocab_size": 32001,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
    }
    # LLaVA-1.5 reads layer -2; region/object come from layers 16 and 10 of 24.
    return {
        "vision_config": vision,
        "text_config": text,
        "image_size": 336,
        "vision_name_or_path": "openai/clip-vit-large-patch14-336",
        "text_name_or_path": "lmsys/vicuna-7b-v1.5",
        "hidden_size": 1024,
        "num_heads": 16,
        "scene_layer": -2,
        "region_layer": -9,
        "region_grid": 4,
        "object_layer": -15,
        "object_max_tokens": 144,
        "num_image_tokens": 161,
        "use_lora": True,
        "lora_r": 64,
        "lora_alpha": 128,
        "freeze_llm": True,
        "image_token_id": 32000,
    }


def _large() -> dict[str, Any]:
    vision = {
        "model_type": "siglip_vision_model",
        "image_size": 384,
        "patch_size": 14,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
    }
    text = {
        "model_type": "llama",
        "vocab_size": 32001,
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "num_key_value_heads": 40,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
    }
    return {
        "vision_config": vision,
        "text_config": text,
        "image_size": 384,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "vision_name_or_path": "google/siglip-so400m-patch14-384",
        "text_name_or_path": "lmsys/vicuna-13b-v1.5",
        "hidden_size": 1152,
        "num_heads": 16,
        "scene_layer": -2,
        "region_layer": -10,
        "region_grid": 4,
        "object_layer": -17,
        "object_max_tokens": 144,
        "num_image_tokens": 161,
        "use_lora": True,
        "lora_r": 64,
        "lora_alpha": 128,
        "freeze_llm": True,
        "image_token_id": 32000,
    }
