"""GeoStrataProcessor: images + questions (+ answers) -> model-ready tensors.

The prompt holds ONE `<image>` placeholder, expanded here to `num_image_tokens` image ids so the
model can splice its image tokens in place. Without answers the batch is left-padded (generation
appends on the right); with answers it is right-padded and `labels` are -100 everywhere except the
answer tokens and the closing </s>, so the LM loss is on answers only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geostrata.atomic import write_text_atomic
from geostrata.errors import CheckpointError, ImageError, InputError
from geostrata.textio import read_json

PROMPT_TEMPLATE = "USER: <image> {question} ASSISTANT:"
CONFIG_NAME = "processor_config.json"


class GeoStrataProcessor:
    """Image resize/normalise, prompt formatting, tokenisation, padding, question embeddings."""

    def __init__(
        self,
        tokenizer: object,
        image_size: int,
        num_image_tokens: int,
        mean: list[float] | tuple[float, ...] = (0.5, 0.5, 0.5),
        std: list[float] | tuple[float, ...] = (0.5, 0.5, 0.5),
        question_encoder: Callable[[list[str]], np.ndarray] | None = None,
        prompt_template: str = PROMPT_TEMPLATE,
    ) -> None:
        if prompt_template.count("<image>") != 1 or "{question}" not in prompt_template:
            raise InputError(
                f"prompt_template {prompt_template!r}: needs one <image> and {{question}}"
            )
        self.tokenizer = tokenizer
        self.image_size, self.num_image_tokens = image_size, num_image_tokens
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.question_encoder = question_encoder
        self.prompt_template = prompt_template
        self.image_token_id = tokenizer.convert_tokens_to_ids("<image>")

    # ---- images ------------------------------------------------------------------------------
    def preprocess_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, S, S) float32, resized (bicubic) and normalised."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", type(image).__name__)
            raise ImageError(f"expected an (H, W, 3) uint8 array, got {shape}")
        if image.dtype != np.uint8:
            raise ImageError(f"expected dtype uint8, got {image.dtype}")
        pil = Image.fromarray(image).resize((self.image_size, self.image_size), Image.BICUBIC)
        x = np.asarray(pil, dtype=np.float32).transpose(2, 0, 1) / 255.0  # (3, S, S)
        return (x - self.mean) / self.std

    # ---- text --------------------------------------------------------------------------------
    def prompt_ids(self, question: str) -> list[int]:
        """<s> + prompt ids with the one <image> id expanded to num_image_tokens ids."""
        if "<image>" in question:
            raise InputError(f"question {question[:60]!r} must not contain <image>")
        text = self.prompt_template.format(question=question.strip())
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        at = ids.index(self.image_token_id)
        ids = ids[:at] + [self.image_token_id] * self.num_image_tokens + ids[at + 1 :]
        return [self.tokenizer.bos_token_id, *ids]

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
        images: list[np.ndarray] | None,
        questions: list[str],
        answers: list[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """`images=None` builds the text side only (for cached tower features)."""
        if (images is not None and len(images) != len(questions)) or (
            answers is not None and len(answers) != len(questions)
        ):
            raise InputError(
                f"batch sizes differ: {'no' if images is None else len(images)} images, "
                f"{len(questions)} questions, "
                f"{'no' if answers is None else len(answers)} answers"
            )
        prompts = [self.prompt_ids(q) for q in questions]
        if answers is None:
            batch = self._pad(prompts, None, left=True)
        else:
            ans = [self.answer_ids(a) for a in answers]
            rows = [p + a for p, a in zip(prompts, ans, strict=True)]
            labels = [[-100] * len(p) + a for p, a in zip(prompts, ans, strict=True)]
            batch = self._pad(rows, labels, left=False)
        if images is not None:
            batch["pixel_values"] = torch.from_numpy(
                np.stack([self.preprocess_image(im) for im in images])
            )
        if self.question_encoder is not None:
            emb = np.asarray(self.question_encoder(list(questions)), dtype=np.float32)  # (B, Dk)
            batch["question_embeds"] = torch.from_numpy(emb)
        return batch

    # ---- persistence -------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(directory))
        cfg = {
            "image_size": self.image_size,
            "num_image_tokens": self.num_image_tokens,
            "mean": self.mean.ravel().tolist(),
            "std": self.std.ravel().tolist(),
            "prompt_template": self.prompt_template,
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
            )
        except (KeyError, TypeError, ValueError, AttributeError, InputError) as exc:
            raise CheckpointError(f"{path}: not a valid processor config ({exc!r})") from exc


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _load_tokenizer(directory: Path) -> object:
    """The saved tokenizer; a damaged file is a CheckpointError naming it (JSON: with its line)."""
    from transformers import AutoTokenizer

    for name in TOKENIZER_FILES:
        if (directory / name).is_file():
            read_json(directory / name, CheckpointError)
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as exc:  # tokenizers' own errors have no common base class
        raise CheckpointError(f"{directory}: cannot load the tokenizer files ({exc})") from exc
