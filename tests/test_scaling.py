"""The scaling estimator: counts agree with independent counts, the memory and FLOP formulas
respond to each setting the way their derivation (docs/scaling.md) says they must."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from geostrata.errors import ConfigError
from geostrata.model import GeoStrataConfig, count_parameters
from geostrata.scaling import (
    DTYPE_BYTES,
    GIB,
    Estimate,
    estimate,
    glue_parameters,
    llama_parameters,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def base() -> Any:
    return GeoStrataConfig.from_preset("base")


def _est(config: Any, **kwargs: Any) -> Estimate:
    settings = {"seq_len": 1024, "micro_batch": 2, **kwargs}
    return estimate(config, **settings)


def test_llm_closed_form_matches_meta_device_count(base: Any) -> None:
    est = _est(base)
    closed = llama_parameters(base.text_config)
    assert closed["total"] == est.params.llm  # two independent counts of the same model
    assert closed["linear"] == est.params.llm_linear
    assert closed["embedding"] == est.params.llm_embedding
    assert abs(est.params.llm - 6.74e9) / 6.74e9 < 0.01  # the published Llama-2/Vicuna 7B size


def test_counts_agree_with_the_model_package(base: Any) -> None:
    ref = count_parameters(base)
    comps = ref["components"]
    est = _est(base)
    assert est.params.vision == comps["vision"]["frozen"]
    assert est.params.lora == comps["llm"]["trainable"]  # peft's adapters vs r * (in + out)
    glue = sum(comps[c]["trainable"] for c in ("augmentation", "experts", "fusion"))
    assert abs(glue_parameters(base, base.vision_config.hidden_size) - glue) / glue < 0.01
    assert abs(est.params.trainable - ref["trainable"]) / ref["trainable"] < 0.01
    assert est.params.frozen == ref["frozen"]


def test_trained_parameter_costs_16_bytes_under_ddp(base: Any) -> None:
    full = _est(base, lora=False, freeze_llm=False, gpus=8, strategy="ddp")
    m, p = full.memory, full.params
    frozen_bytes = p.frozen * DTYPE_BYTES["bf16"]
    per_param = (m.weights - frozen_bytes + m.gradients + m.optimizer) / p.trainable
    assert per_param == pytest.approx(16.0)
    assert not full.fits  # 16 bytes x 6.8 B parameters cannot fit one 80 GB GPU
    fp32 = _est(base, lora=False, freeze_llm=False, dtype="fp32")
    assert (fp32.memory.gradients + fp32.memory.optimizer) / fp32.params.trainable == 12


def test_sharding_order_and_single_gpu_equivalence(base: Any) -> None:
    full = {"lora": False, "freeze_llm": False, "gpus": 8}
    ddp, zero2 = _est(base, strategy="ddp", **full), _est(base, strategy="zero2", **full)
    zero3, fsdp = _est(base, strategy="zero3", **full), _est(base, strategy="fsdp", **full)
    assert zero2.memory.optimizer == pytest.approx(ddp.memory.optimizer / 8)
    assert zero2.memory.weights == ddp.memory.weights  # ZeRO-2 keeps whole weights
    assert fsdp.memory.weights == pytest.approx(ddp.memory.weights / 8)
    assert fsdp.memory.gathered > 0 and ddp.memory.gathered == 0
    assert fsdp.memory.total < zero2.memory.total < ddp.memory.total
    assert zero3.memory == fsdp.memory
    single = [_est(base, strategy=s, **{**full, "gpus": 1}).memory.total
              for s in ("ddp", "zero2", "fsdp")]
    assert single == pytest.approx([single[0]] * 3)  # nothing to shard over on one GPU


def test_activations_scale_and_checkpointing_saves(base: Any) -> None:
    one, two = _est(base, micro_batch=1), _est(base, micro_batch=2)
    assert two.memory.activations == pytest.approx(2 * one.memory.activations)
    plain = _est(base, grad_checkpointing=False)
    ckpt = _est(base, grad_checkpointing=True)
    assert plain.memory.activations > 3 * ckpt.memory.activations
    eager = _est(base, flash_attention=False, seq_len=2048)
    flash = _est(base, seq_len=2048)
    assert eager.memory.activations > flash.memory.activations


def test_qlora_shrinks_the_frozen_llm_about_fourfold(base: Any) -> None:
    lora, qlora = _est(base, lora=True), _est(base, lora=True, qlora=True)
    saved = lora.memory.weights - qlora.memory.weights
    linear_bf16 = lora.params.llm_linear * 2
    assert 0.70 < saved / linear_bf16 < 0.75  # 16 bits -> ~4.13 bits per Linear weight
    assert qlora.params.trainable == lora.params.trainable


def test_flops_full_versus_lora_and_throughput_scaling(base: Any) -> None:
    full = _est(base, lora=False, freeze_llm=False, grad_checkpointing=False)
    lora = _est(base, lora=True, grad_checkpointing=False)
    assert 1.4 < full.flops_per_token / lora.flops_per_token <= 1.5  # 6N vs 4N, plus extras
    ckpt = _est(base, lora=True, grad_checkpointing=True)
    assert 1.4 < ckpt.flops_per_token / lora.flops_per_token <= 1.5  # 4N -> 6N
    eight = _est(base, gpus=8, strategy="zero2")
    assert eight.tokens_per_s == pytest.approx(8 * eight.tokens_per_s_per_gpu)
    half = _est(base, gpus=8, strategy="zero2", mfu=0.2)
    assert half.tokens_per_s == pytest.approx(eight.tokens_per_s / 2)
    a100 = _est(base, gpus=8, strategy="zero2", gpu="a100")
    assert a100.tokens_per_s < eight.tokens_per_s
    assert eight.samples_per_s == pytest.approx(eight.tokens_per_s / 1024)


def test_lora_defaults_follow_the_config(base: Any) -> None:
    assert _est(base).setup.lora is True  # the base preset is a LoRA preset
    est = _est(base)
    assert est.params.trainable < 0.05 * est.params.total
    assert est.to_dict()["memory_gib"] == pytest.approx(est.memory.total / GIB)


@pytest.mark.parametrize(
    "kwargs",
    [{"strategy": "zero4"}, {"gpus": 0}, {"dtype": "int8"}, {"gpu": "tpu"}, {"mfu": 1.5},
     {"lora": False, "qlora": True}, {"seq_len": 100}, {"micro_batch": True}],
)
def test_invalid_settings_raise(base: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        _est(base, **kwargs)


def test_unknown_preset_raises() -> None:
    with pytest.raises(ConfigError, match="huge"):
        estimate("huge")


def test_bench_replaces_only_the_marked_block() -> None:
    spec = importlib.util.spec_from_file_location("bench_scaling", ROOT / "bench" / "scaling.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    text = "intro\n<!-- t:start -->\nold\n<!-- t:end -->\noutro\n"
    once = bench.replace_block(text, "t", "| a |")
    assert once == "intro\n<!-- t:start -->\n| a |\n<!-- t:end -->\noutro\n"
    assert bench.replace_block(once, "t", "| a |") == once
    with pytest.raises(SystemExit, match="missing"):
        bench.replace_block(text, "missing", "x")
