"""GeoStrataConfig: one Hugging Face config for the whole model, saved as config.json.

Its fields are flat (every ablation switch is one field, so `from_preset("tiny", experts=False)`
and config.json stay simple) and come from the section dataclasses of `settings.py`, where each is
defined and validated once; it adds the nested vision/text configs of the two pretrained parts.
Each component takes only its own validated section, from `GeoStrataConfig.sections()`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from geostrata.errors import CheckpointError, ConfigError
from geostrata.model.settings import (
    SETTINGS,
    SUBCONFIGS,
    TINY_TEXT,
    TINY_VISION,
    ModelSections,
    build_sections,
    preset_values,
    setting_fields,
)
from geostrata.textio import check_known_keys, read_json

CONFIG_NAME = "config.json"
HF_BOOKKEEPING = {"model_type", "transformers_version"}  # written by save_pretrained, not fields


def _fresh(f: dataclasses.Field) -> dataclasses.Field:
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory)
    return dataclasses.field(default=f.default)


# Every setting as a flat dataclass field, copied from its one definition in settings.py. It comes
# first in GeoStrataConfig's bases so that a setting shadows a same-named PreTrainedConfig
# property (`torch_dtype`).
_Settings = dataclasses.make_dataclass(
    "_Settings", [(f.name, f.type, _fresh(f)) for f in setting_fields()], kw_only=True
)


class GeoStrataConfig(_Settings, PreTrainedConfig):
    """Everything that defines a GeoStrata model; saved as config.json next to the weights."""

    model_type = "geostrata"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="clip_vision_model",
            init_kwargs=TINY_VISION,
            optional=True,
        ),
        "text_config": SubConfigSpec(
            config_class=AutoConfig, model_type="llama", init_kwargs=TINY_TEXT
        ),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if self.vision_config is None and self.vision_tower == "hf":
            self.vision_config = dict(TINY_VISION)  # optional only for the EfficientNet tower
        PreTrainedConfig.__post_init__(self, **kwargs)
        if self.vision_tower == "hf" and self.vision_config is not None:
            self.vision_config.image_size = self.image_size
        for name, value in self.sections().settings().items():  # validates every setting now
            setattr(self, name, value)  # normalised: levels coarse to fine, floats as floats

    def sections(self) -> ModelSections:
        """One validated config per component, from the current field values."""
        vision = self.vision_config.to_dict() if self.vision_tower == "hf" else None
        values = {name: getattr(self, name) for name in SETTINGS}
        return build_sections(values, vision, self.text_config.hidden_size)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GeoStrataConfig:
        """A named preset (settings.PRESETS), overridable field by field; `vision_config` /
        `text_config` dicts merge, and their keys are checked against the HF config class."""
        values = preset_values(name, overrides)
        for key in SUBCONFIGS:
            if isinstance(overrides.get(key), dict) and values[key] is not None:
                _check_subconfig_keys(key, overrides[key], values[key])
        return cls(**values)


def _check_subconfig_keys(name: str, given: dict[str, Any], merged: dict[str, Any]) -> None:
    """A typo in a sub-config override (`num_hiden_layers`) would be kept by HF as an unused
    attribute: refuse keys that are not fields of the HF config class, naming the closest one."""
    model_type = merged.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(f"{name}.model_type={model_type!r}: not an HF model type")
    config_class = CONFIG_MAPPING[model_type]
    known = {f.name for f in dataclasses.fields(config_class)} | set(config_class.attribute_map)
    known |= {"model_type", "rope_theta", "rope_scaling"}  # HF converts these on load
    check_known_keys(given, known, f"{name} ({config_class.__name__})")


def load_saved_config(folder: str | Path) -> GeoStrataConfig:
    """`folder/config.json` as a GeoStrataConfig; bad JSON, an unknown key or an invalid value
    is one CheckpointError naming the file (instead of HF's traceback or a silent default)."""
    file = Path(folder) / CONFIG_NAME
    try:
        data = read_json(file, CheckpointError)
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read the model config ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(data).__name__}")
    if data.get("model_type") != GeoStrataConfig.model_type:
        raise CheckpointError(f"{file}: model_type={data.get('model_type')!r}, not 'geostrata'")
    known = {f.name for f in dataclasses.fields(GeoStrataConfig)} | HF_BOOKKEEPING
    try:
        check_known_keys(data, known, "config")
        return GeoStrataConfig.from_dict(data)
    except (ConfigError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{file}: {exc}") from exc
