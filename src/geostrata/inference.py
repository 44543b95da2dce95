"""The one inference API the CLI, chat and web app share: predict() on a `load_model()` result.

`predict` answers a question about one image and says why: the knowledge-base cues retrieved at
each semantic level (with scores), the router's weight on each level's expert, and (when classes
are given) the scene-class probabilities from closed-set scoring.
"""

from __future__ import annotations

import collections
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from geostrata.boxes import Box, parse_boxes
from geostrata.errors import InputError
from geostrata.model.outputs import RetrievedCues
from geostrata.model.processing import ImageInput, Turns
from geostrata.session import SCENE_QUESTION, LoadedModel, load_model, scene_answer

__all__ = [
    "Cue",
    "LoadedModel",
    "Prediction",
    "SceneReading",
    "check_history",
    "check_question",
    "classify",
    "load_model",
    "predict",
    "stream_predict",
]

MAX_QUESTION_CHARS = 500
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
    prompt: str = ""  # the prompt as the LLM read it (image tokens as one <image>, cue names in)

    @property
    def boxes(self) -> list[Box]:
        """The boxes the answer holds ({<x1><y1><x2><y2>}, 0-100 of the image), in order."""
        return parse_boxes(self.answer)


@dataclass(frozen=True)
class SceneReading:
    """One image's scene classes and retrieved cues, without a generated answer (`classify`)."""

    class_probs: list[tuple[str, float]]  # top classes, best first (softmax over all classes)
    cues: dict[str, list[Cue]]  # level -> top-k cues for the scene question, best first


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


def check_history(history: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """Earlier (question, answer) turns fit for the prompt (questions as `check_question`;
    answers are text without control characters), or an InputError naming the turn."""
    turns = []
    for i, turn in enumerate(history):
        if not isinstance(turn, Sequence) or isinstance(turn, str) or len(turn) != 2:
            raise InputError(f"history turn {i + 1}: needs (question, answer), got {turn!r:.80}")
        question, answer = turn
        try:
            question = check_question(question)
            answer = check_question(answer) if str(answer).strip() else ""
        except InputError as exc:
            raise InputError(f"history turn {i + 1}: {exc}") from exc
        turns.append((question, answer))
    return turns


def predict(
    loaded: LoadedModel,
    image: ImageInput,
    question: str,
    classes: list[str] | None = None,
    max_new_tokens: int = 16,
    top_classes: int = 5,
    history: Turns = (),
) -> Prediction:
    """Answer `question` about `image`, with retrieved cues, router weights and class scores
    (the final state of `stream_predict`); `history`: earlier (question, answer) turns about the
    same image, oldest first."""
    steps = stream_predict(loaded, image, question, classes, max_new_tokens, top_classes, history)
    return collections.deque(steps, maxlen=1)[0]  # the last state; it always yields


@torch.no_grad()
def classify(
    loaded: LoadedModel,
    images: Sequence[ImageInput],
    classes: Sequence[str],
    top_classes: int = 5,
) -> list[SceneReading]:
    """Scene-class probabilities and cues of many images in one batch, nothing generated.

    The same closed-set scoring as `predict`'s class_probs (for one image they agree), and the
    cues retrieved for the scene question; the tower runs once for both. For tiling a scene
    (`geostrata map`), where each tile needs a class, not an answer.
    """
    if not classes:
        raise InputError("classify needs at least one scene class")
    squares = [loaded.processor.image_processor.square(image) for image in images]
    batch = _batch_of(loaded, squares, [SCENE_QUESTION] * len(squares))
    features = loaded.model.encode_images(batch["pixel_values"])
    visual = loaded.model.visual_tokens(features, batch.get("question_embeds"))
    probs = _scene_probs(loaded, {**batch, "features": features}, classes)  # (B, C)
    return [
        SceneReading(_ranked(classes, row, top_classes), _cues(loaded, visual.retrieved, i))
        for i, row in enumerate(probs.tolist())
    ]


@torch.no_grad()
def stream_predict(
    loaded: LoadedModel,
    image: ImageInput,
    question: str,
    classes: list[str] | None = None,
    max_new_tokens: int = 16,
    top_classes: int = 5,
    history: Turns = (),
) -> Iterator[Prediction]:
    """`predict`, step by step: yields the Prediction as it grows, for chat and the web app.

    The first yield (empty answer) already carries the cues and router weights, which come out
    of the prompt's forward pass; then one yield per generated token with the answer so far;
    the last yield adds the class probabilities. Decoding is greedy with the KV cache, like
    `model.generate`, so the final answer is the same. The image is decoded and letterboxed once
    (a bad file fails before the model runs); the processor leaves that square unchanged.
    """
    question, history = check_question(question), check_history(history)
    image = loaded.processor.image_processor.square(image)  # (S, S, 3) uint8 or (S, S, C) float
    batch = _batch(loaded, image, question, history)
    out = loaded.model(**batch, use_cache=True)
    pred = Prediction(
        "",
        _cues(loaded, out.retrieved),
        _router(loaded, out.router_weights),
        prompt=prompt_text(loaded.processor, out.input_ids[0].tolist()),
    )
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
    model, tokenizer = loaded.model, loaded.processor.tokenizer
    eos = model.config.text_config.eos_token_id
    stop = set(eos) if isinstance(eos, list | tuple) else {eos}
    # a pointer token says "the entry in cue slot i": it is shown as that entry's name
    slots = model.slot_answers(out.retrieved)[0] if model.cue_pointers and out.retrieved else None
    ids: list[int] = []
    next_id = out.logits[:, -1].argmax(dim=-1)  # (1,)
    while int(next_id) not in stop and len(ids) < max_new_tokens:
        ids.append(int(next_id))
        shown = model.expand_pointers(ids, slots) if slots is not None else ids
        yield tokenizer.decode(shown, skip_special_tokens=True).strip()
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


def _batch(
    loaded: LoadedModel, image: ImageInput, question: str, history: Turns = ()
) -> dict[str, torch.Tensor]:
    """The model input for one image and question, through the processor like training's."""
    return _batch_of(loaded, [image], [question], [history])


def _batch_of(
    loaded: LoadedModel,
    images: Sequence[ImageInput],
    questions: list[str],
    histories: Sequence[Turns] | None = None,
) -> dict[str, torch.Tensor]:
    device = next(loaded.model.parameters()).device
    batch = loaded.processor(images, questions, histories=histories)
    return {k: v.to(device) for k, v in batch.items()}


def _cues(
    loaded: LoadedModel, retrieved: dict[str, RetrievedCues] | None, row: int = 0
) -> dict[str, list[Cue]]:
    """level -> batch row `row`'s cues, named from the knowledge base."""
    return {
        level: [Cue(i, loaded.knowledge.get(i).name, s) for i, s in found.row(row)]
        for level, found in (retrieved or {}).items()
    }


def _router(loaded: LoadedModel, weights: torch.Tensor | None) -> dict[str, float]:
    if weights is None:
        return {}
    levels = loaded.model.config.levels
    return {lv: float(w) for lv, w in zip(levels, weights[0].tolist(), strict=True)}


def _class_probs(
    loaded: LoadedModel, image: ImageInput, classes: list[str] | None, top: int
) -> list[tuple[str, float]]:
    """Closed-set scene scores for "What type of scene is this?", softmaxed over `classes`."""
    if not classes:
        return []
    probs = _scene_probs(loaded, _batch(loaded, image, SCENE_QUESTION), classes)  # (1, C)
    return _ranked(classes, probs[0].tolist(), top)


def _scene_probs(
    loaded: LoadedModel, scene_batch: dict[str, Any], classes: Sequence[str]
) -> torch.Tensor:
    """(B, C) softmax over `classes` of each candidate answer's log-likelihood."""
    candidates = [loaded.processor.answer_ids(scene_answer(c)) for c in classes]
    scores = loaded.model.score_candidates(scene_batch, candidates)  # (B, C)
    return torch.softmax(scores.float(), dim=1)


def _ranked(classes: Sequence[str], probs: list[float], top: int) -> list[tuple[str, float]]:
    ranked = sorted(zip(classes, probs, strict=True), key=lambda cp: -cp[1])
    return ranked[:top]


def prompt_text(processor: Any, ids: list[int]) -> str:
    """Prompt ids as the LLM read them, as text: the run of image tokens shown once as <image>,
    padding (unfilled cue slots, left padding) left out."""
    tok, image = processor.tokenizer, processor.image_token_id
    kept = [
        t
        for i, t in enumerate(ids)
        if t != tok.pad_token_id and not (t == image and i > 0 and ids[i - 1] == image)
    ]
    return tok.decode(kept, skip_special_tokens=False).strip()
