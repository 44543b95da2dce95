"""Decode modes (model/decoding.py): the static cache and the compiled decoding step give the
tokens the dynamic cache gives (greedy), and unknown modes are refused by name."""

import pytest
import torch

from geostrata.errors import ConfigError
from geostrata.model.decoding import (
    bandwidth_bound_s,
    check_decode,
    generation_kwargs,
    weight_bytes,
)


def _decode(model, batch, mode):
    model.decode_mode = mode
    with torch.inference_mode():
        return model.generate(**batch, max_new_tokens=6, min_new_tokens=6)


def test_static_cache_decodes_the_same_tokens(make_model, prompt_batch):
    model = make_model().eval()
    assert torch.equal(_decode(model, prompt_batch, "static"),
                       _decode(model, prompt_batch, "dynamic"))  # fmt: skip


@pytest.mark.slow  # torch.compile's first call: ~30 s of inductor on 2 cores
def test_compiled_decoding_gives_the_same_tokens(make_model, prompt_batch):
    model = make_model().eval()
    assert torch.equal(_decode(model, prompt_batch, "compiled"),
                       _decode(model, prompt_batch, "dynamic"))  # fmt: skip


def test_modes_choose_transformers_caches():
    cpu = torch.device("cpu")
    assert generation_kwargs("dynamic", cpu) == {}
    assert generation_kwargs("static", cpu)["cache_implementation"] == "static"
    compiled = generation_kwargs("compiled", cpu)["compile_config"]
    assert compiled.mode == "default" and compiled._compile_all_devices  # CPU: no CUDA graphs
    gpu = generation_kwargs("compiled", torch.device("cuda", 0))["compile_config"]
    assert gpu.mode == "reduce-overhead"
    with pytest.raises(ConfigError, match="unknown decode mode 'fast'"):
        check_decode("fast")


def test_bandwidth_bound_is_weight_bytes_over_bandwidth():
    layer = torch.nn.Linear(1000, 1000).to(torch.bfloat16)
    assert weight_bytes(layer) == (1000 * 1000 + 1000) * 2
    assert bandwidth_bound_s(14_000_000_000, "NVIDIA H200") == pytest.approx(14e9 / 4.8e12)
    assert bandwidth_bound_s(1, "some cpu") is None
