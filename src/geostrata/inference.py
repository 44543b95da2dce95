"""The one inference API the CLI, chat, web app and evaluation share: load_model() and predict().

`predict` answers a question about one image and says why: the knowledge-base cues retrieved at
each semantic level (with scores), the router's weight on each level's expert, and (when classes
are given) the scene-class probabilities from closed-set scoring.
"""

from __future__ import annotations

import collections
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geostrata.errors import CheckpointError, InputError

MAX_QUESTION_CHARS = 500
CONFIG_FILE = "experiment.yaml"
IMAGE_PLACEHOLDER = "<image>"  # the prompt's own image slot (model/processing.py)
LINE_BREAKS = re.compile(r"[\t\n\r\v\f\u0085\u2028\u2029]+")  # pasted text: become spaces
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True)
class Cue:
    id: str
    name: str
    score: float


@dataclass
class Prediction:
    answer: str
    cues: dict[str, list[Cue]] = field(default_factory=dict)  # level -> top-k cues, best first
    router: dict[str, float] = field(default_factory=dict)  # level -> expert weight (sums to 1)
    class_probs: list[tuple[str, float]] = field(default_factory=list)  # top classes, best first


@dataclass
class LoadedModel:
    model: Any  # GeoStrataForConditionalGeneration, eval mode
    processor: Any  # GeoStrataProcessor
    knowledge: Any  # KnowledgeBase
    cfg: Any  # ExperimentConfig the model was trained with
    path: Path


def load_model(
    path: str | Path, knowledge: Any = None, device: str | None = None, dtype: str | None = None
) -> LoadedModel:
    """Load a saved GeoStrata model folder (weights are safetensors only) and its knowledge base.

    ``device``: None or "auto" takes this process's GPU when there is one, else the CPU.
    ``dtype``: the whole model's dtype; None keeps float32 on the CPU and uses the config's
    ``torch_dtype`` (the LLM's training dtype, bfloat16 for the real presets) on a GPU.
    """
    from geostrata.device import resolve_device, resolve_dtype
    from geostrata.model import GeoStrataForConditionalGeneration, GeoStrataProcessor
    from geostrata.train.checkpoint import verify_safetensors
    from geostrata.train.experiment import ExperimentConfig
    from geostrata.train.pipeline import load_knowledge

    path = Path(path)
    weights = sorted(path.glob("model*.safetensors"))
    if not weights:
        raise CheckpointError(
            f"{path} holds no model.safetensors: not a saved GeoStrata model folder"
        )
    for file in weights:  # refuse a renamed pickle or a cut file before anything parses it
        verify_safetensors(file)
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(
            f"{path} has weights but no {CONFIG_FILE}: an incomplete model folder"
        )
    cfg = ExperimentConfig.from_yaml(path / CONFIG_FILE)
    target = resolve_device(device)
    knowledge = knowledge if knowledge is not None else load_knowledge(cfg.knowledge)
    processor = GeoStrataProcessor.from_pretrained(path, question_encoder=knowledge.encode_text)
    model = GeoStrataForConditionalGeneration.from_pretrained(path, use_safetensors=True)
    default_dtype = "float32" if target.type == "cpu" else model.config.torch_dtype
    model.to(device=target, dtype=resolve_dtype(dtype, default_dtype))
    model.attach_knowledge(knowledge)  # after the move: cue buffers go where the model is
    return LoadedModel(model.eval(), processor, knowledge, cfg, path)


def check_question(question: str) -> str:
    """A question fit for the prompt, or an InputError saying why not.

    Cheap and model-free, so callers check before loading anything: non-empty, at most
    MAX_QUESTION_CHARS, no `<image>` (the prompt's own image slot), and no control characters
    (they would reach terminals and logs raw). Tabs and line breaks become spaces; the result is
    stripped.
    """
    if not isinstance(question, str) or not question.strip():
        raise InputError("the question is empty: ask something about the image")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(
            f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}"
        )
    question = LINE_BREAKS.sub(" ", question).strip()
    for position, char in enumerate(question):
        if unicodedata.category(char) == "Cc" or char in BIDI_CONTROLS:
            raise InputError(
                f"the question holds control character U+{ord(char):04X} at position "
                f"{position}; remove it"
            )
    if IMAGE_PLACEHOLDER in question:
        raise InputError(
            f"the question must not contain {IMAGE_PLACEHOLDER}: the image goes in its own "
            "slot of the prompt"
        )
    return question


def _as_image(image: np.ndarray | str | Path) -> np.ndarray:
    from geostrata.data.images import read_image

    if isinstance(image, str | Path):
        return read_image(image)
    if (
        not isinstance(image, np.ndarray)
        or image.ndim != 3
        or image.shape[2] != 3
        or image.dtype != np.uint8
    ):
        raise InputError(
            f"expected an (H, W, 3) uint8 image, got {getattr(image, 'shape', type(image))}"
        )
    return image


def predict(
    loaded: LoadedModel,
    image: np.ndarray | str | Path,
    question: str,
    classes: list[str] | None = None,
    max_new_tokens: int = 16,
    top_classes: int = 5,
) -> Prediction:
    """Answer `question` about `image`, with retrieved cues, router weights and class scores
    (the final state of `stream_predict`)."""
    steps = stream_predict(loaded, image, question, classes, max_new_tokens, top_classes)
    return collections.deque(steps, maxlen=1)[0]  # the last state; it always yields


@torch.no_grad()
def stream_predict(
    loaded: LoadedModel,
    image: np.ndarray | str | Path,
    question: str,
    classes: list[str] | None = None,
    max_new_tokens: int = 16,
    top_classes: int = 5,
) -> Iterator[Prediction]:
    """`predict`, step by step: yields the Prediction as it grows, for chat and the web app.

    The first yield (empty answer) already carries the cues and router weights, which come out
    of the prompt's forward pass; then one yield per generated token with the answer so far;
    the last yield adds the class probabilities. Decoding is greedy with the KV cache, like
    `model.generate`, so the final answer is the same; the image path runs once.
    """
    question, image = check_question(question), _as_image(image)
    batch = _batch(loaded, image, question)
    out = loaded.model(**batch, use_cache=True)
    pred = Prediction("", _cues(loaded, out.retrieved), _router(loaded, out.router_weights))
    yield pred
    for text in _greedy_text(loaded, out, batch["attention_mask"], max_new_tokens):
        pred = replace(pred, answer=text)
        yield pred
    yield replace(pred, class_probs=_class_probs(loaded, image, classes, top_classes))


def _greedy_text(
    loaded: LoadedModel, out: Any, mask: torch.Tensor, max_new_tokens: int
) -> Iterator[str]:
    """Greedy decoding from a prompt's forward output; yields the decoded answer after each token.

    The whole answer is decoded each step (not token by token) so word-piece spacing comes out
    as the tokenizer would join it.
    """
    tokenizer, eos = loaded.processor.tokenizer, loaded.model.config.text_config.eos_token_id
    stop = set(eos) if isinstance(eos, list | tuple) else {eos}
    ids: list[int] = []
    next_id = out.logits[:, -1].argmax(dim=-1)  # (1,)
    while int(next_id) not in stop and len(ids) < max_new_tokens:
        ids.append(int(next_id))
        yield tokenizer.decode(ids, skip_special_tokens=True).strip()
        if len(ids) == max_new_tokens:
            return
        mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)  # (1, T + n)
        out = loaded.model(
            input_ids=next_id[:, None],
            attention_mask=mask,  # ids (1, 1)
            past_key_values=out.past_key_values,
            use_cache=True,
        )
        next_id = out.logits[:, -1].argmax(dim=-1)  # (1,)


def _batch(loaded: LoadedModel, image: np.ndarray, question: str) -> dict[str, torch.Tensor]:
    device = next(loaded.model.parameters()).device
    return {k: v.to(device) for k, v in loaded.processor([image], [question]).items()}


def _cues(loaded: LoadedModel, retrieved: dict | None) -> dict[str, list[Cue]]:
    cues: dict[str, list[Cue]] = {}
    for level, (ids, scores) in (retrieved or {}).items():
        cues[level] = [
            Cue(i, loaded.knowledge.get(i).name, float(s))
            for i, s in zip(ids[0], scores[0].tolist(), strict=True)
            if i
        ]
    return cues


def _router(loaded: LoadedModel, weights: torch.Tensor | None) -> dict[str, float]:
    if weights is None:
        return {}
    levels = loaded.model.config.levels
    return {lv: float(w) for lv, w in zip(levels, weights[0].tolist(), strict=True)}


def _class_probs(
    loaded: LoadedModel, image: np.ndarray, classes: list[str] | None, top: int
) -> list[tuple[str, float]]:
    """Closed-set scene scores for "What type of scene is this?", softmaxed over `classes`."""
    from geostrata.train.samples import SCENE_QUESTION, scene_answer

    if not classes:
        return []
    scene_batch = _batch(loaded, image, SCENE_QUESTION)
    scores = loaded.model.score_candidates(
        scene_batch, [scene_answer(c) for c in classes], loaded.processor.tokenizer
    )[0]
    probs = torch.softmax(scores.float(), dim=0).tolist()
    ranked = sorted(zip(classes, probs, strict=True), key=lambda cp: -cp[1])
    return ranked[:top]
