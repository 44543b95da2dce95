"""QLoRA (model.load_in_4bit) refuses, before building anything, where it cannot run: a model
whose LLM is built from its config (nothing to quantise), no bitsandbytes, no CUDA GPU. Where all
three are present (the GPU bench, bench/bench_qlora.py) it quantises the pretrained LLM to NF4."""

import sys

import pytest
import torch

from geostrata.errors import ConfigError
from geostrata.model import GeoStrataConfig, GeoStrataForConditionalGeneration
from geostrata.model.modeling import check_qlora

QLORA = {"load_in_4bit": True, "use_lora": True, "freeze_llm": True}


def test_a_config_built_llm_has_nothing_to_quantise():
    with pytest.raises(ConfigError, match="nothing to quantise"):
        GeoStrataForConditionalGeneration(GeoStrataConfig.from_preset("tiny", **QLORA))


def _pretrained(tmp_path):
    config = GeoStrataConfig.from_preset("tiny", **QLORA)
    config.text_name_or_path = str(tmp_path)  # check_qlora reads only that it is set
    return config


def test_without_bitsandbytes_the_package_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails
    with pytest.raises(ConfigError, match="bitsandbytes package"):
        check_qlora(_pretrained(tmp_path))


def test_without_a_gpu_the_gpu_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", type(sys)("bitsandbytes"))  # present
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA GPU"):
        check_qlora(_pretrained(tmp_path))
