"""GeoStrataProcessor: images + questions (+ answers) -> model-ready tensors.

Images go through one path, `ImageProcessor` (imaging.py): decode -> bands -> letterbox to S x S
-> normalise. Training (the image store caches its square stage), evaluation, the feature cache,
predict, chat, the app and the API all call it, so a model sees the same pixels everywhere.

The prompt holds ONE `<image>` placeholder, expanded here to `num_image_tokens` image ids so the
model can splice its image tokens in place. Without answers the batch is left-padded (generation
appends on the right); with answers it is right-padded and `labels` are -100 everywhere except the
answer tokens and the closing </s>, so the LM loss is on answers only.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geostrata.atomic import write_text_atomic
from geostrata.boxes import strip_boxes
from geostrata.errors import CheckpointError, GeoStrataError, InputError
from geostrata.model.imaging import (  # noqa: F401 - load_image, letterbox: re-exported
    BandInput,
    ImageInput,
    ImageProcessor,
    letterbox,
    load_image,
)
from geostrata.textio import read_json

PROMPT_TEMPLATE = "USER: <image> {question} ASSISTANT:"
MAX_HISTORY_TOKENS = 256  # earlier turns kept in the prompt (newest first), the image always kept
Turns = Sequence[tuple[str, str]]  # earlier (question, answer) turns, oldest first


def followup_template(prompt_template: str) -> str:
    """A later user turn of a plain prompt template: the template without its image slot, after a
    space ("USER: <image> {question} ASSISTANT:" -> " USER: {question} ASSISTANT:")."""
    return " " + re.sub(r"\s*<image>\s*", " ", prompt_template).strip()
CONFIG_NAME = "processor_config.json"

@dataclass(frozen=True)
class CueSlots:
    """Where the prompt holds retrieved knowledge as text: after the image tokens, each level's
    label ("scene:") and `per_level` slots of `name_tokens` ids; the model writes the names of
    the entries it retrieved into the slots (`cue_mask` marks them)."""

    levels: tuple[str, ...] = ()
    per_level: int = 0
    name_tokens: int = 0

    @classmethod
    def from_config(cls, config: Any) -> CueSlots:
        """The slots a GeoStrataConfig's model fills (none without retrieval or for llava)."""
        on = config.cue_text and config.retrieval and config.top_k > 0
        if not on or config.baseline == "llava":
            return cls()
        return cls(tuple(config.levels), config.cue_text_k, config.cue_name_tokens)

    @property
    def total(self) -> int:
        return len(self.levels) * self.per_level * self.name_tokens

    @property
    def pointer_tokens(self) -> list[str]:
        """One token per retrieved entry in the slots: `<cue1>` names the first entry written,
        and an answer that is a retrieved entry's name is learned as its pointer."""
        return [f"<cue{i + 1}>" for i in range(len(self.levels) * self.per_level)]


@dataclass
class CueVocabulary:
    """Token ids the model writes for retrieved entries, from the processor's tokenizer.

    slot: level -> (N_l, name_tokens) each entry's name and a comma, cut or padded, as written
    into the prompt; answer: level -> (N_l, A) each entry's name as an answer is tokenised
    (without </s>), padded with -1; pointers: the ids of `CueSlots.pointer_tokens` ([] when the
    tokenizer has none: no pointing)."""

    slot: dict[str, torch.Tensor]
    answer: dict[str, torch.Tensor]
    pointers: list[int]


class GeoStrataProcessor:
    """Images (through `image_processor`), prompt formatting, tokenisation, padding, question
    embeddings and the slots for cue text."""

    def __init__(
        self,
        tokenizer: object,
        image_size: int,
        num_image_tokens: int,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        question_encoder: Callable[[list[str]], np.ndarray] | None = None,
        prompt_template: str = PROMPT_TEMPLATE,
        cue_slots: CueSlots | None = None,
        turn_template: str | None = None,
        max_history_tokens: int = MAX_HISTORY_TOKENS,
        bands: BandInput | None = None,
    ) -> None:
        if prompt_template.count("<image>") != 1 or "{question}" not in prompt_template:
            raise InputError(
                f"prompt_template {prompt_template!r}: needs one <image> and {{question}}"
            )
        turn_template = turn_template or followup_template(prompt_template)
        if "<image>" in turn_template or "{question}" not in turn_template:
            raise InputError(f"turn_template {turn_template!r}: needs {{question}}, no <image>")
        self.tokenizer = tokenizer
        self.image_processor = ImageProcessor(image_size, mean, std, bands)
        self.num_image_tokens = num_image_tokens
        self.question_encoder = question_encoder
        self.prompt_template = prompt_template
        self.turn_template = turn_template  # a later user turn (after an answer and its end token)
        self.max_history_tokens = max_history_tokens
        self.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
        self.cue_slots = cue_slots or CueSlots()
        self._cue_ids, self._cue_at = self._cue_segment()

    # ---- text --------------------------------------------------------------------------------
    def _cue_segment(self) -> tuple[list[int], list[int]]:
        """The ids that follow the image tokens when cue text is on ("scene:" + pad slots per
        level) and the offsets of the slots within them."""
        ids: list[int] = []
        at: list[int] = []
        slots = self.cue_slots.per_level * self.cue_slots.name_tokens
        for level in self.cue_slots.levels:
            ids += self.tokenizer(f" {level}:", add_special_tokens=False)["input_ids"]
            at += range(len(ids), len(ids) + slots)
            ids += [self.tokenizer.pad_token_id] * slots
        return ids, at

    def prompt(self, question: str, history: Turns = ()) -> tuple[list[int], list[int]]:
        """(<s> + prompt ids with <image> expanded to num_image_tokens ids and the cue segment
        after them, the positions of the cue slots).

        `history` (earlier (question, answer) turns, oldest first) is written before `question`:
        the oldest kept turn takes the image slot, each answer ends with the end token, later
        questions follow `turn_template`. Turns are dropped oldest first until they fit
        `max_history_tokens`, so the image and the current question always stay.
        """
        for text in (question, *(t for turn in history for t in turn)):
            if "<image>" in text:
                raise InputError(f"question {text[:60]!r} must not contain <image>")
        turns = self._kept_turns(history)
        first = turns[0][0] if turns else question
        text = self.prompt_template.format(question=first.strip())
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        at = ids.index(self.image_token_id)
        image = [self.image_token_id] * self.num_image_tokens
        bos = self.tokenizer.bos_token_id  # a chat template may open with it already (SmolLM2)
        start = [] if bos is None or ids[:1] == [bos] else [bos]
        head = [*start, *ids[:at], *image]
        slots = [len(head) + i for i in self._cue_at]
        tail = ids[at + 1 :]
        for i, (_, answer) in enumerate(turns):
            following = turns[i + 1][0] if i + 1 < len(turns) else question
            tail += self.answer_ids(answer) + self._turn_ids(following)
        return [*head, *self._cue_ids, *tail], slots

    def _turn_ids(self, question: str) -> list[int]:
        text = self.turn_template.format(question=question.strip())
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _kept_turns(self, history: Turns) -> list[tuple[str, str]]:
        """The newest turns whose question + answer ids fit max_history_tokens (oldest first)."""
        kept: list[tuple[str, str]] = []
        used = 0
        for question, answer in reversed([tuple(t) for t in history]):
            used += len(self._turn_ids(question)) + len(self.answer_ids(answer))
            if used > self.max_history_tokens:
                break
            kept.insert(0, (question, answer))
        return kept

    def prompt_ids(self, question: str, history: Turns = ()) -> list[int]:
        return self.prompt(question, history)[0]

    def cue_vocabulary(self, names: Mapping[str, Sequence[str]]) -> CueVocabulary:
        """What the model writes for each entry of `names` (level -> entry names, in the
        knowledge base's row order) in the cue slots and as an answer."""
        m, pad = self.cue_slots.name_tokens, self.tokenizer.pad_token_id
        slot, answer = {}, {}
        for level in self.cue_slots.levels:
            rows = []
            for name in names[level]:
                ids = self.tokenizer(f" {name},", add_special_tokens=False)["input_ids"]
                ids = ids[: m - 1] + ids[-1:] if len(ids) > m else ids  # keep the comma
                rows.append(ids + [pad] * (m - len(ids)))
            slot[level] = torch.tensor(rows, dtype=torch.long).reshape(len(rows), m)
            answers = [self.answer_ids(name)[:-1] for name in names[level]]
            width = max((len(a) for a in answers), default=1)
            answer[level] = torch.tensor(
                [a + [-1] * (width - len(a)) for a in answers], dtype=torch.long
            ).reshape(len(answers), width)
        return CueVocabulary(slot, answer, self.pointer_ids())

    def pointer_ids(self) -> list[int]:
        """Ids of the pointer tokens, or [] when the tokenizer lacks them."""
        tokens = self.cue_slots.pointer_tokens
        ids = [self.tokenizer.convert_tokens_to_ids(t) for t in tokens]
        unk = self.tokenizer.unk_token_id
        return ids if tokens and all(i is not None and i != unk for i in ids) else []

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer(answer.strip(), add_special_tokens=False)["input_ids"] + [
            self.tokenizer.eos_token_id
        ]

    def _pad(
        self, rows: list[list[int]], labels: list[list[int]] | None, left: bool
    ) -> dict[str, torch.Tensor]:
        width, pad = max(len(r) for r in rows), self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        lab = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, span], mask[i, span] = torch.tensor(row), 1
            if labels is not None:
                lab[i, span] = torch.tensor(labels[i])
        out = {"input_ids": ids, "attention_mask": mask}
        if labels is not None:
            out["labels"] = lab
        return out

    # ---- batch -------------------------------------------------------------------------------
    def __call__(
        self,
        images: Sequence[ImageInput] | None,
        questions: list[str],
        answers: list[str] | None = None,
        histories: Sequence[Turns] | None = None,
    ) -> dict[str, torch.Tensor]:
        """`images=None` builds the text side only (for cached tower features); `histories`:
        each sample's earlier turns (see `prompt`)."""
        if (images is not None and len(images) != len(questions)) or (
            answers is not None and len(answers) != len(questions)
        ):
            raise InputError(
                f"batch sizes differ: {'no' if images is None else len(images)} images, "
                f"{len(questions)} questions, "
                f"{'no' if answers is None else len(answers)} answers"
            )
        histories = histories if histories is not None else [()] * len(questions)
        if len(histories) != len(questions):
            raise InputError(f"{len(histories)} histories for {len(questions)} questions")
        prompts, slots = zip(
            *[self.prompt(q, h) for q, h in zip(questions, histories, strict=True)], strict=True
        )
        if answers is None:
            rows = list(prompts)
            batch = self._pad(rows, None, left=True)
        else:
            ans = [self.answer_ids(a) for a in answers]
            rows = [p + a for p, a in zip(prompts, ans, strict=True)]
            labels = [[-100] * len(p) + a for p, a in zip(prompts, ans, strict=True)]
            batch = self._pad(rows, labels, left=False)
        if self.cue_slots.total:
            shifts = [batch["input_ids"].shape[1] - len(r) if answers is None else 0 for r in rows]
            batch["cue_mask"] = _slot_mask(batch["input_ids"].shape, slots, shifts)
        if images is not None:
            batch["pixel_values"] = self.image_processor(images)  # (B, C, S, S)
        if self.question_encoder is not None:
            # boxes say nothing to a sentence encoder and make every region question a new text
            # (encoded alone, past any cache): the question is embedded without them
            texts = [strip_boxes(q) for q in questions]
            emb = np.asarray(self.question_encoder(texts), dtype=np.float32)  # (B, Dk)
            batch["question_embeds"] = torch.from_numpy(emb)
        return batch

    # ---- persistence -------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(directory))
        cfg = {
            "image_size": self.image_processor.image_size,
            "num_image_tokens": self.num_image_tokens,
            "mean": self.image_processor.mean.ravel().tolist(),
            "std": self.image_processor.std.ravel().tolist(),
            "prompt_template": self.prompt_template,
            "turn_template": self.turn_template,
            "max_history_tokens": self.max_history_tokens,
            "cue_slots": dataclasses.asdict(self.cue_slots),
            "bands": self.image_processor.bands.to_dict(),
        }
        write_text_atomic(directory / CONFIG_NAME, json.dumps(cfg, indent=2))

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        question_encoder: Callable[[list[str]], np.ndarray] | None = None,
    ) -> GeoStrataProcessor:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise CheckpointError(f"{path}: processor config not found")
        cfg = read_json(path, CheckpointError)
        tokenizer = _load_tokenizer(Path(directory))
        try:
            return cls(
                tokenizer,
                cfg["image_size"],
                cfg["num_image_tokens"],
                cfg["mean"],
                cfg["std"],
                question_encoder,
                cfg.get("prompt_template", PROMPT_TEMPLATE),
                _cue_slots(cfg.get("cue_slots")),
                cfg.get("turn_template"),
                cfg.get("max_history_tokens", MAX_HISTORY_TOKENS),
                BandInput.from_dict(cfg.get("bands")),
            )
        except (KeyError, TypeError, ValueError, AttributeError, GeoStrataError) as exc:
            raise CheckpointError(f"{path}: not a valid processor config ({exc!r})") from exc


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _load_tokenizer(directory: Path) -> object:
    """The saved tokenizer; a damaged file is a CheckpointError naming it (JSON: with its line)."""
    from transformers import AutoTokenizer, PreTrainedConfig

    for name in TOKENIZER_FILES:
        if (directory / name).is_file():
            read_json(directory / name, CheckpointError)
    try:
        # A model folder's config.json is GeoStrata's, which AutoTokenizer cannot map (it warned
        # "a model of type `geostrata` ... of type ``"); tokenizer_config.json names the class.
        return AutoTokenizer.from_pretrained(str(directory), config=PreTrainedConfig())
    except Exception as exc:  # tokenizers' own errors have no common base class
        raise CheckpointError(f"{directory}: cannot load the tokenizer files ({exc})") from exc


def _slot_mask(
    shape: torch.Size, slots: Sequence[list[int]], shifts: Sequence[int]
) -> torch.Tensor:
    """(B, T) True at each row's cue slots, moved right by the row's left padding."""
    mask = torch.zeros(shape, dtype=torch.bool)
    for i, (row, shift) in enumerate(zip(slots, shifts, strict=True)):
        mask[i, [shift + j for j in row]] = True
    return mask


def _cue_slots(saved: Any) -> CueSlots:
    """CueSlots from processor_config.json (absent in folders saved before cue text: none)."""
    if saved is None:
        return CueSlots()
    return CueSlots(tuple(saved["levels"]), int(saved["per_level"]), int(saved["name_tokens"]))
