"""The accelerate launch configs and the real-data experiment YAMLs load and say what they claim.

Each accelerate file is read twice: with accelerate's own config class (what `accelerate launch
--config_file` parses) and through the launcher's env preparation into the plugin objects the
training process would build, so a key accelerate ignores or renames shows up here.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
import torch
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType
from transformers import AutoModelForCausalLM

from geostrata.model.configuration import GeoStrataConfig
from geostrata.session.experiment import ExperimentConfig

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = ROOT / "configs" / "accelerate"
EXPERIMENTS = ROOT / "configs" / "experiments"
EXPECTED = {
    "ddp.yaml": DistributedType.MULTI_GPU,
    "fsdp.yaml": DistributedType.FSDP,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
}
EXPERIMENT_FILES = ("base_lora.yaml", "base_qlora.yaml", "large_lora.yaml")


def _launch_env(name: str) -> tuple[object, dict[str, str]]:
    """The parsed launch args and the ACCELERATE_* / FSDP_* env `accelerate launch` would set."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(ACCELERATE / name), "x.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed:  # what `accelerate launch` does before its DeepSpeed launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, {k: v for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_"))}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerates_classes(name: str) -> None:
    config = load_config_from_file(str(ACCELERATE / name))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == EXPECTED[name]
    assert config.mixed_precision == "bf16"
    assert config.num_processes >= 2 and config.num_machines == 1
    assert ClusterConfig.from_yaml_file(str(ACCELERATE / name)).to_dict() == config.to_dict()


def test_fsdp_is_full_shard_with_checkpointed_decoder_layers() -> None:
    fsdp = load_config_from_file(str(ACCELERATE / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2
    assert fsdp["fsdp_reshard_after_forward"] is True  # FSDP2's FULL_SHARD
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert fsdp["fsdp_activation_checkpointing"] is True
    assert fsdp["fsdp_offload_params"] is False


def test_fsdp_plugin_built_from_launch_env() -> None:
    from accelerate.utils import FullyShardedDataParallelPlugin

    args, env = _launch_env("fsdp.yaml")
    assert args.use_fsdp and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True
    assert plugin.activation_checkpointing is True
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]


def test_fsdp_wraps_the_decoder_layer_class_of_the_presets_llm() -> None:
    """Accelerate refuses to wrap a class the model lacks: the name must match the real LLM."""
    wrap = load_config_from_file(str(ACCELERATE / "fsdp.yaml")).fsdp_config[
        "fsdp_transformer_layer_cls_to_wrap"]
    for preset in ("base", "large"):
        text_config = GeoStrataConfig.from_preset(preset).text_config
        with torch.device("meta"):
            llm = AutoModelForCausalLM.from_config(text_config)
        assert type(llm.get_decoder().layers[0]).__name__ == wrap, preset


@pytest.mark.parametrize(("name", "stage"), [("deepspeed_zero2.yaml", 2),
                                             ("deepspeed_zero3.yaml", 3)])
def test_deepspeed_plugin_built_from_launch_env(name: str, stage: int) -> None:
    from accelerate.utils import DeepSpeedPlugin

    config = load_config_from_file(str(ACCELERATE / name)).deepspeed_config
    assert config["zero_stage"] == stage
    # Set here, it would override the experiment's grad_accum through the launch env.
    assert "gradient_accumulation_steps" not in config
    args, env = _launch_env(name)
    assert args.use_deepspeed and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == stage
    assert plugin.gradient_accumulation_steps == "auto"  # filled from the Accelerator
    assert plugin.zero3_init_flag is (stage == 3)


def test_ddp_launch_env() -> None:
    args, env = _launch_env("ddp.yaml")
    assert args.multi_gpu and not args.use_fsdp and not args.use_deepspeed
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


@pytest.mark.parametrize("name", EXPERIMENT_FILES)
def test_experiment_parses(name: str) -> None:
    config = ExperimentConfig.from_yaml(EXPERIMENTS / name)
    assert config.preset in ("base", "large")
    assert config.data.kind in ("instruct", "rsvqa")
    assert config.model["use_lora"] is True
    for stage in (config.stage1, config.stage2):
        assert stage.mixed_precision == "bf16"
    assert config.stage("stage2").output_dir.startswith(config.output_dir)


@pytest.mark.parametrize("name", EXPERIMENT_FILES)
def test_experiment_preset_exists(name: str) -> None:
    config = ExperimentConfig.from_yaml(EXPERIMENTS / name)
    model = GeoStrataConfig.from_preset(config.preset)
    assert model.text_config.num_hidden_layers >= 32  # a real 7B / 13B LLM, not a tiny one


@pytest.mark.parametrize("name", EXPERIMENT_FILES)
def test_experiment_model_overrides_are_config_fields(name: str) -> None:
    config = ExperimentConfig.from_yaml(EXPERIMENTS / name)
    unknown = set(config.model) - set(GeoStrataConfig.__dataclass_fields__)
    assert not unknown, f"{name}: not GeoStrataConfig fields: {sorted(unknown)}"
    model = GeoStrataConfig.from_preset(config.preset, **config.model)
    assert model.use_lora and model.lora_r == config.model["lora_r"]
    assert list(model.lora_target_modules) == config.model["lora_target_modules"]
    for key in ("gradient_checkpointing", "load_in_4bit", "torch_dtype"):
        if key in config.model:  # the scale-out switches reach the model config unchanged
            assert getattr(model, key) == config.model[key], (name, key)
