"""Fixtures for the model tests: a fake retriever, a tiny tokenizer, tiny configs and batches.

Everything here is random and small (32 px images, hidden 32, 2-3 layers) so the whole model
suite runs in seconds on a shared CPU; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import pytest
import torch

from geostrata.knowledge.protocol import SearchResult
from geostrata.knowledge.relations import Relations

DIM = 16
N_ENTRIES = {"scene": 12, "region": 7, "object": 9, "attribute": 5}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class FakeRetriever:
    """Random unit vectors per level, exact numpy top-k, a hashing text encoder; records calls."""

    def __init__(self, dim: int = DIM, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self._dim = dim
        self.emb = {lv: _unit(rng.normal(size=(n, dim))) for lv, n in N_ENTRIES.items()}
        self.calls: list[tuple[str, int, np.ndarray]] = []
        # (level, other) -> (N_level, N_other) 0/1 relations; tests set what they need
        self.related: dict[tuple[str, str], np.ndarray] = {}

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def encoder_name(self) -> str:
        return "fake-hash"

    def level_ids(self, level: str) -> list[str]:
        return [f"{level}:{i}" for i in range(len(self.emb[level]))]

    def level_embeddings(self, level: str) -> np.ndarray:
        return self.emb[level]

    def search(self, queries: np.ndarray, level: str, k: int) -> SearchResult:
        self.calls.append((level, k, queries.copy()))
        scores = queries @ self.emb[level].T  # (B, N)
        idx = np.argsort(-scores, axis=1)[:, :k]
        ids = [[self.level_ids(level)[i] for i in row] for row in idx]
        return SearchResult(ids, idx.astype(np.int64), np.take_along_axis(scores, idx, 1))

    def relations(self, level: str, other: str) -> Relations:
        shape = (N_ENTRIES[level], N_ENTRIES[other])
        matrix = self.related.get((level, other), np.zeros(shape, np.float32))
        return Relations(matrix.astype(np.float32), matrix.sum(axis=1).astype(np.float32))

    def encode_text(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                out[i, h % self._dim] += 1.0 if (h >> 8) % 2 else -1.0
        return _unit(out + 1e-6)

    def resolve(self, label: str, dataset: str | None = None, level: str | None = None) -> str:
        return f"scene:{label}"


@pytest.fixture
def retriever() -> FakeRetriever:
    return FakeRetriever()


@pytest.fixture(scope="session")
def tokenizer():
    from geostrata.model import train_tokenizer

    texts = [
        "how many cars are there in the image",
        "is there a forest",
        "what is the scene",
        "residential industrial farmland forest meadow river harbor beach airport",
        "yes no 0 1 2 3 4 5 building car ship airplane tree road",
    ] * 5
    return train_tokenizer(texts, vocab_size=200)


@pytest.fixture
def make_config(tokenizer) -> Callable[..., object]:
    """Tiny config factory: 32 px, 4x4 patches, hidden 32; overrides go through from_preset."""
    from geostrata.model import GeoStrataConfig

    def make(**overrides: object) -> GeoStrataConfig:
        kwargs = dict(
            image_size=32,
            hidden_size=32,
            num_heads=2,
            knowledge_dim=DIM,
            num_image_tokens=9,
            vision_config={
                "patch_size": 8,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 3,
                "num_attention_heads": 2,
            },
            text_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "vocab_size": len(tokenizer),
            },
            top_k=3,
            expert_ffn_mult=2,
            freeze_vision=True,
        )
        kwargs.update(overrides)
        return GeoStrataConfig.from_preset("tiny", **kwargs)

    return make


@pytest.fixture
def make_model(make_config, retriever) -> Callable[..., object]:
    """Seeded tiny model with the fake knowledge base attached, in eval mode."""
    from geostrata.model import GeoStrataForConditionalGeneration

    def make(seed: int = 0, **overrides: object) -> GeoStrataForConditionalGeneration:
        torch.manual_seed(seed)
        model = GeoStrataForConditionalGeneration(make_config(**overrides))
        model.attach_knowledge(retriever)
        return model.eval()

    return make


@pytest.fixture
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8) for _ in range(2)]


QUESTIONS = ["how many cars are there?", "is there a forest in the image?"]
ANSWERS = ["2", "yes"]


@pytest.fixture
def processor(tokenizer, retriever):
    from geostrata.model import GeoStrataProcessor

    return GeoStrataProcessor(
        tokenizer, image_size=32, num_image_tokens=9, question_encoder=retriever.encode_text
    )


@pytest.fixture
def train_batch(processor, images) -> dict[str, torch.Tensor]:
    return processor(images, QUESTIONS, ANSWERS)


@pytest.fixture
def prompt_batch(processor, images) -> dict[str, torch.Tensor]:
    return processor(images, QUESTIONS)
