"""Processor and tokenizer: prompt expansion, padding sides, label mask, persistence."""

import numpy as np
import pytest
import torch

from geostrata.errors import ImageError, InputError
from geostrata.model import GeoStrataProcessor

from .conftest import ANSWERS, QUESTIONS


def test_tokenizer_special_token_ids(tokenizer):
    ids = tokenizer.convert_tokens_to_ids(["<pad>", "<s>", "</s>", "<unk>", "<image>"])
    assert ids == [0, 1, 2, 3, 4]
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 2
    text = "is there a forest"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_prompt_expands_one_placeholder(processor, prompt_batch):
    ids, mask = prompt_batch["input_ids"], prompt_batch["attention_mask"]
    assert ((ids == 4) & (mask == 1)).sum(1).tolist() == [9, 9]
    assert prompt_batch["pixel_values"].shape == (2, 3, 32, 32)
    assert prompt_batch["question_embeds"].shape == (2, 16)
    assert "labels" not in prompt_batch


def test_prompts_are_left_padded(prompt_batch):
    mask = prompt_batch["attention_mask"]
    assert (mask[:, -1] == 1).all()  # every row ends at the same column
    assert (mask == 0).any()  # the two questions differ in length
    shorter = int(mask.sum(1).argmin())
    assert mask[shorter, 0] == 0


def test_training_batch_right_padded_labels_only_on_answers(tokenizer, train_batch):
    ids, mask, labels = (
        train_batch["input_ids"],
        train_batch["attention_mask"],
        train_batch["labels"],
    )
    assert (mask[:, 0] == 1).all()
    for row, answer in enumerate(ANSWERS):
        kept = labels[row][labels[row] != -100].tolist()
        assert kept[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(kept[:-1]) == answer
        n = int(mask[row].sum())
        assert ids[row, n - len(kept) : n].tolist() == kept  # labels align with the answer ids
    assert (labels[mask == 0] == -100).all()


def test_image_normalisation(processor):
    img = np.full((10, 10, 3), 255, dtype=np.uint8)
    x = processor.image_processor([img])
    assert x.shape == (1, 3, 32, 32) and torch.allclose(x, torch.ones_like(x))  # (1 - 0.5) / 0.5


def test_bad_inputs(processor, images):
    with pytest.raises(ImageError, match="5 bands"):
        processor([images[0][:, :, [0, 1, 2, 0, 1]]], ["q"])
    with pytest.raises(InputError, match="<image>"):
        processor([images[0]], ["<image> twice"])
    with pytest.raises(InputError, match="batch sizes"):
        processor(images, QUESTIONS[:1])


def test_save_and_load(tmp_path, processor, images, retriever):
    processor.save_pretrained(tmp_path)
    back = GeoStrataProcessor.from_pretrained(tmp_path, question_encoder=retriever.encode_text)
    a, b = processor(images, QUESTIONS, ANSWERS), back(images, QUESTIONS, ANSWERS)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_text_only_batch_for_cached_features(processor, images):
    full = processor(images, QUESTIONS, ANSWERS)
    text = processor(None, QUESTIONS, ANSWERS)
    assert "pixel_values" not in text and "pixel_values" in full
    for key in ("input_ids", "attention_mask", "labels", "question_embeds"):
        torch.testing.assert_close(text[key], full[key])
