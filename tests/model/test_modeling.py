"""The composed model: shapes, gradients, save/load, generation, ablations, scoring, presets."""

import pytest
import torch

from geostrata.errors import InputError
from geostrata.model import (
    GeoStrataConfig,
    GeoStrataForConditionalGeneration,
    RetrievedCues,
    count_parameters,
)

from .conftest import DIM, N_ENTRIES


def _align_targets(batch=2):
    targets = {}
    for level in ("scene", "region", "object"):
        t = torch.zeros(batch, N_ENTRIES[level])
        t[0, 1] = 1.0  # row 1 stays unlabelled
        targets[level] = t
    return targets


def test_forward_shapes_and_losses(make_model, train_batch):
    model = make_model()
    out = model(**train_batch, align_targets=_align_targets())
    b, t = train_batch["input_ids"].shape
    assert out.logits.shape == (b, t, model.config.text_config.vocab_size)
    assert out.router_weights.shape == (b, 3)
    assert torch.allclose(out.router_weights.sum(-1), torch.ones(b))
    for level in ("scene", "region", "object"):
        found = out.retrieved[level]
        assert isinstance(found, RetrievedCues)
        assert len(found.ids) == b and len(found.ids[0]) == 3
        assert found.scores.shape == found.indices.shape == (b, 3)
    cfg = model.config
    expected = (
        out.lm_loss + cfg.lambda_align * out.align_loss + cfg.lambda_balance * out.balance_loss
    )
    assert torch.allclose(out.loss, expected)


def test_features_path_equals_pixel_path(make_model, train_batch):
    model = make_model()
    feats = model.encode_images(train_batch["pixel_values"])
    batch = {k: v for k, v in train_batch.items() if k != "pixel_values"}
    a = model(**train_batch).logits
    b = model(**batch, features=feats).logits
    assert torch.equal(a, b)


@pytest.mark.parametrize("overrides", [{}, {"use_lora": True, "lora_r": 2}])
def test_gradients_reach_trainable_parts_only(make_model, train_batch, overrides):
    model = make_model(**overrides).train()
    with torch.no_grad():  # LoRA-B starts at zero, which zeroes LoRA-A's gradient at step 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    batch = {k: v for k, v in train_batch.items() if k != "question_embeds"}  # default question
    model(**batch, align_targets=_align_targets()).loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    assert trainable and frozen  # tower frozen (and the base LLM under LoRA)
    missing = [n for n, p in trainable if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert all(p.grad is None for _, p in frozen)
    parts = {n.split(".")[0] for n, _ in trainable}
    assert {"augmentation", "experts", "fusion", "llm", "default_question"} <= parts
    if overrides:
        assert all("lora_" in n for n, _ in trainable if n.startswith("llm."))


def test_trainable_tower_gets_gradient(make_model, train_batch):
    model = make_model(freeze_vision=False).train()
    model(**train_batch).loss.backward()
    assert all(p.grad is not None for p in model.vision.parameters() if p.requires_grad)
    assert any(p.requires_grad for p in model.vision.parameters())


@pytest.mark.parametrize("overrides", [{}, {"use_lora": True, "lora_r": 2}, {"baseline": "llava"}])
def test_save_load_round_trip_is_identical(tmp_path, make_model, retriever, train_batch, overrides):
    model = make_model(**overrides)
    with torch.no_grad():  # make LoRA-B non-zero so the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    back = GeoStrataForConditionalGeneration.from_pretrained(tmp_path).eval()
    back.attach_knowledge(retriever)
    assert torch.equal(model(**train_batch).logits, back(**train_batch).logits)


def test_a_folder_with_the_old_scalar_gates_loads(tmp_path, make_model, retriever, train_batch):
    """Before FSDP2 support the retrieval gates were 0-d; such folders still load, exactly."""
    from safetensors.torch import load_file, save_file

    model = make_model()
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    gates = [k for k in tensors if k.endswith("gate")]
    assert gates and all(tensors[k].shape == (1,) for k in gates)
    save_file({k: v.reshape(()) if k in gates else v for k, v in tensors.items()},
              tmp_path / "model.safetensors", metadata={"format": "pt"})  # fmt: skip
    back = GeoStrataForConditionalGeneration.from_pretrained(tmp_path).eval()
    back.attach_knowledge(retriever)
    assert torch.equal(model(**train_batch).logits, back(**train_batch).logits)
    fresh = make_model()  # torch's own load_state_dict (checkpoint restore) takes them too
    fresh.load_state_dict({k: v.reshape(()) if k in gates else v for k, v in tensors.items()})
    assert all(torch.equal(fresh.state_dict()[k], tensors[k]) for k in gates)


def test_generate_with_and_without_cache_agree(make_model, prompt_batch):
    model = make_model()
    cached = model.generate(**prompt_batch, max_new_tokens=5, do_sample=False)
    uncached = model.generate(**prompt_batch, max_new_tokens=5, do_sample=False, use_cache=False)
    assert cached.shape == (2, 5)
    assert torch.equal(cached, uncached)


def test_generate_matches_greedy_forward_with_cache(make_model, prompt_batch):
    model = make_model()
    out = model(**prompt_batch, use_cache=True)
    mask, token, steps = prompt_batch["attention_mask"], out.logits[:, -1].argmax(-1), []
    cache = out.past_key_values
    for _ in range(3):
        steps.append(token)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(
            input_ids=token[:, None], attention_mask=mask, past_key_values=cache, use_cache=True
        )
        cache, token = out.past_key_values, out.logits[:, -1].argmax(-1)
    steps.append(token)
    assert torch.equal(torch.stack(steps, 1), model.generate(**prompt_batch, max_new_tokens=4))


def test_image_token_count_mismatch_raises(make_model, prompt_batch):
    model = make_model()
    ids = prompt_batch["input_ids"].clone()
    first = int((ids[0] == 4).nonzero()[0])
    ids[0, first] = 5  # one placeholder fewer in row 0
    with pytest.raises(ValueError, match=r"17 <image> tokens.*18 image features"):
        model(**{**prompt_batch, "input_ids": ids})


def _logits_with_shared_weights(full, ablated, batch):
    own = ablated.state_dict()
    shared = {k: v for k, v in full.state_dict().items() if k in own and own[k].shape == v.shape}
    ablated.load_state_dict(shared, strict=False)  # every weight the two variants have in common
    return full(**batch).logits, ablated(**batch).logits


@pytest.mark.parametrize(
    ("overrides", "same_params"),
    [
        ({"retrieval": False}, False),
        ({"experts": False}, False),
        ({"levels": ["scene", "region"]}, False),
        ({"baseline": "llava"}, False),
        ({"top_k": 1}, True),
    ],
)
def test_each_ablation_changes_the_computation(make_model, train_batch, overrides, same_params):
    full, ablated = make_model(seed=0), make_model(seed=0, **overrides)
    names_full = {n for n, _ in full.named_parameters()}
    names_ablated = {n for n, _ in ablated.named_parameters()}
    assert (names_full == names_ablated) == same_params
    a, b = _logits_with_shared_weights(full, ablated, train_batch)
    assert a.shape == b.shape  # same prompt length for every variant
    assert not torch.allclose(a, b)


def test_k_zero_equals_retrieval_off_in_the_full_model(make_model, train_batch, retriever):
    off, k0 = make_model(seed=0, retrieval=False), make_model(seed=1, top_k=0)
    k0.load_state_dict(off.state_dict())
    retriever.calls.clear()
    assert torch.equal(off(**train_batch).logits, k0(**train_batch).logits)
    assert retriever.calls == []


def test_question_embeddings_steer_router_and_retrieval(
    make_model, train_batch, retriever, monkeypatch
):
    monkeypatch.setattr("geostrata.model.augmentation.EXACT_SEARCH_MAX", 0)  # via the retriever
    model = make_model()
    a = model(**train_batch)
    swapped = {**train_batch, "question_embeds": train_batch["question_embeds"].flip(0)}
    b = model(**swapped)
    assert not torch.allclose(a.router_weights, b.router_weights)
    assert retriever.calls[0][0] == "scene"


def test_score_candidates_sums_candidate_log_probs(make_model, processor, images):
    model = make_model()
    prompts = processor(images, ["what is the scene"] * 2)
    candidates = [processor.answer_ids(name) for name in ("forest", "harbor", "river")]
    scores = model.score_candidates(prompts, candidates)
    assert scores.shape == (2, 3) and (scores < 0).all()
    # the same number from a teacher-forced forward on the right-padded training batch
    batch = processor(images[:1], ["what is the scene"], ["harbor"])
    out = model(**batch)
    labels = batch["labels"][0, 1:]
    logp = out.logits[0, :-1].log_softmax(-1)
    keep = labels != -100
    expected = logp[keep].gather(-1, labels[keep, None]).sum()
    assert torch.allclose(scores[0, 1], expected, atol=1e-4)


@pytest.mark.parametrize("bad", [[], [[]], ["forest"], [[5, "x"]]])
def test_score_candidates_wants_token_id_lists(make_model, prompt_batch, bad):
    with pytest.raises(InputError, match="candidate|no candidates"):
        make_model().score_candidates(prompt_batch, bad)


def test_attach_knowledge_checks_dimension(make_config, retriever):
    from geostrata.errors import KnowledgeBaseError

    model = GeoStrataForConditionalGeneration(make_config(knowledge_dim=DIM + 1))
    with pytest.raises(KnowledgeBaseError, match="dim"):
        model.attach_knowledge(retriever)


def _standin(name):
    """The preset's architecture at reduced depth/width; same patch geometry and token budget."""
    return GeoStrataConfig.from_preset(
        name,
        vision_name_or_path=None,
        text_name_or_path=None,
        knowledge_dim=DIM,
        hidden_size=32,
        num_heads=2,
        lora_r=2,
        scene_layer=-1,
        region_layer=-2,
        object_layer=-3,
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
        },
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
        },
    )


@pytest.mark.parametrize(("name", "grid"), [("base", 24), ("large", 27)])
def test_base_and_large_standins_shape_check(name, grid, retriever):
    cfg = _standin(name)
    torch.manual_seed(0)
    model = GeoStrataForConditionalGeneration(cfg).eval()
    model.attach_knowledge(retriever)
    pixels = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    feats = model.encode_images(pixels)
    assert feats.last is None  # the last layer is kept only for the LLaVA baseline
    assert model.vision(pixels).last.shape == (1, grid * grid, 32)
    assert feats.levels["region"].shape == (1, 16, 32) and feats.levels["object"].shape == (
        1,
        144,
        32,
    )
    ids = torch.tensor([[1] + [cfg.image_token_id] * cfg.num_image_tokens + [7, 8]])
    out = model(input_ids=ids, features=feats)
    assert out.logits.shape == (1, cfg.num_image_tokens + 3, cfg.text_config.vocab_size)


@pytest.mark.parametrize("name", ["base", "large"])
def test_count_parameters_from_config_only(name):
    counts = count_parameters(GeoStrataConfig.from_preset(name))
    assert counts["frozen"] > 10 * counts["trainable"] > 0  # frozen tower + LLM under LoRA
    comps = counts["components"]
    assert comps["vision"]["trainable"] == 0 and comps["vision"]["frozen"] > 2e8
    assert comps["llm"]["frozen"] > 6e9 and comps["llm"]["trainable"] > 0  # adapters only
    assert counts["trainable"] + counts["frozen"] == sum(
        c["trainable"] + c["frozen"] for c in comps.values()
    )


def test_tiny_effnet_model_keeps_packaged_weights(tokenizer, retriever, processor, images):
    from geostrata.model.effnet import packaged_weights_path

    cfg = GeoStrataConfig.from_preset(
        "tiny-effnet",
        image_size=32,
        knowledge_dim=DIM,
        hidden_size=32,
        num_heads=2,
        num_image_tokens=9,
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
        },
    )
    model = GeoStrataForConditionalGeneration(cfg).eval()  # post_init must not re-initialise them
    model.attach_knowledge(retriever)
    state = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    tower = model.vision.tower.state_dict()
    for key in ("_conv_stem.weight", "_blocks.3._depthwise_conv.weight", "_bn1.running_var"):
        assert torch.equal(tower[key], state[key])
    assert all(not p.requires_grad for p in model.vision.parameters())
    feats = model.encode_images(processor(images, ["q", "q"])["pixel_values"])
    assert feats.levels["scene"].shape == (2, 1, 1280) and feats.levels["object"].shape == (
        2,
        16,
        40,
    )
    out = model(**processor(images, ["how many cars", "is there a forest"], ["2", "yes"]))
    assert torch.isfinite(out.loss)


def test_local_pretrained_llm_is_loaded_without_building_a_random_copy(
    tmp_path, make_config, monkeypatch
):
    from transformers import AutoModelForCausalLM

    from geostrata.model import modeling

    donor = GeoStrataForConditionalGeneration(make_config()).llm  # stands in for a real LLM
    donor.save_pretrained(tmp_path / "llm")
    built_on = []
    from_config = AutoModelForCausalLM.from_config

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        built_on.append(torch.empty(0).device.type)
        return from_config(*args, **kwargs)

    monkeypatch.setattr(modeling.AutoModelForCausalLM, "from_config", recording)
    model = GeoStrataForConditionalGeneration(make_config(text_name_or_path=str(tmp_path / "llm")))
    assert built_on == ["meta"]  # the placeholder LLM allocated nothing
    loaded = dict(model.llm.named_parameters())
    for name, param in donor.named_parameters():
        torch.testing.assert_close(loaded[name], param, rtol=0, atol=0)
    model.to("cpu")  # nothing left on the meta device
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_empty_knowledge_base_is_refused_when_retrieval_is_on(make_config, retriever, caplog):
    """An empty base used to be accepted: every answer then came without a single cue."""
    import logging

    from geostrata.errors import KnowledgeBaseError

    levels = list(retriever.emb)
    retriever.emb["object"] = retriever.emb["object"][:0]
    model = GeoStrataForConditionalGeneration(make_config())
    with caplog.at_level(logging.WARNING, logger="geostrata.model.modeling"):
        model.attach_knowledge(retriever)  # one empty level: a warning naming it
    assert "no entries at level(s) object" in caplog.text
    for level in levels:
        retriever.emb[level] = retriever.emb[level][:0]
    with pytest.raises(KnowledgeBaseError, match=r"no entries at any level .*top_k=3"):
        GeoStrataForConditionalGeneration(make_config()).attach_knowledge(retriever)
    for off in ({"retrieval": False}, {"top_k": 0}, {"baseline": "llava"}):
        GeoStrataForConditionalGeneration(make_config(**off)).attach_knowledge(retriever)


def _saved_llm(path, text_config, **changes):
    """A random LLM saved as a pretrained folder (what text_name_or_path names)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    values = {**text_config.to_dict(), **changes}
    torch.manual_seed(2)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**values)).save_pretrained(path)
    return str(path)


def test_a_pretrained_llm_is_loaded_whole(tmp_path, make_config):
    from transformers import AutoModelForCausalLM

    path = _saved_llm(tmp_path / "llm", make_config().text_config)
    model = GeoStrataForConditionalGeneration(make_config(text_name_or_path=path))
    saved = AutoModelForCausalLM.from_pretrained(path).state_dict()
    assert all(torch.equal(saved[k], v) for k, v in model.llm.state_dict().items())


def test_a_pretrained_llm_of_another_architecture_is_refused(tmp_path, make_config):
    """from_pretrained took the folder's own config: 1 layer where text_config says 2 ran."""
    from geostrata.errors import CheckpointError

    path = _saved_llm(tmp_path / "llm", make_config().text_config, num_hidden_layers=1)
    with pytest.raises(CheckpointError, match=rf"{path} is not the model text_config describes: "
                                              r"num_hidden_layers=1 \(text_config: 2\)"):
        GeoStrataForConditionalGeneration(make_config(text_name_or_path=path))


def test_a_pretrained_llm_with_a_missing_weight_is_refused(tmp_path, make_config):
    """HF initialises a weight its folder lacks at random and goes on."""
    from safetensors.torch import save_file

    from geostrata.errors import CheckpointError
    from geostrata.weights import read_safetensors

    path = _saved_llm(tmp_path / "llm", make_config().text_config)
    tensors = read_safetensors(tmp_path / "llm" / "model.safetensors")
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, tmp_path / "llm" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"{path} are incomplete: missing keys "
                                              r"\[model.layers.1.mlp.down_proj.weight\]"):
        GeoStrataForConditionalGeneration(make_config(text_name_or_path=path))


@pytest.mark.parametrize("setting", ["vision_name_or_path", "text_name_or_path"])
def test_pretrained_names_that_are_not_here_fail_inside_the_model(make_config, setting):
    """Wherever the model is built (from_preset("base") directly too), an absent pretrained part
    is an error naming the setting, not a silently random tower or LLM."""
    from geostrata.errors import ConfigError

    cfg = make_config(**{setting: "nobody/not-downloaded"})
    with pytest.raises(ConfigError, match=rf"{setting}='nobody/not-downloaded': pretrained "
                                          "weights are not on this machine"):
        GeoStrataForConditionalGeneration(cfg)
    assert count_parameters(cfg)["trainable"] > 0  # counting builds on meta: no weights needed
