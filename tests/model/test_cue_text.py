"""Cue text: the names of the retrieved entries are written into the prompt the LLM reads."""

import pytest
import torch

from geostrata.errors import KnowledgeBaseError
from geostrata.inference import prompt_text
from geostrata.model import GeoStrataForConditionalGeneration, GeoStrataProcessor
from geostrata.model.processing import CueSlots

from .conftest import ANSWERS, QUESTIONS

NAMES = ["forest", "harbor", "river", "beach", "airport", "meadow", "farmland", "industrial"]


@pytest.fixture
def cue_config(make_config):
    return make_config(cue_text=True, cue_text_k=2, cue_name_tokens=4)


@pytest.fixture
def cue_processor(tokenizer, retriever, cue_config):
    return GeoStrataProcessor(tokenizer, image_size=32, num_image_tokens=9,
                              question_encoder=retriever.encode_text,
                              cue_slots=CueSlots.from_config(cue_config))  # fmt: skip


def _names(retriever):
    """Entry names for the fake base's rows (cycling through NAMES)."""
    return {lv: [NAMES[i % len(NAMES)] for i in range(len(retriever.level_ids(lv)))]
            for lv in retriever.emb}  # fmt: skip


@pytest.fixture
def cue_model(cue_config, cue_processor, retriever):
    torch.manual_seed(0)
    model = GeoStrataForConditionalGeneration(cue_config)
    model.attach_knowledge(retriever, cue_processor.cue_vocabulary(_names(retriever)))
    return model.eval()


def test_slots_follow_the_image_tokens_one_group_per_level(cue_processor, tokenizer):
    ids, slots = cue_processor.prompt("is there a forest?")
    image = [i for i, t in enumerate(ids) if t == cue_processor.image_token_id]
    assert len(slots) == 3 * 2 * 4 and min(slots) > max(image)
    assert all(ids[j] == tokenizer.pad_token_id for j in slots)
    text = tokenizer.decode([t for t in ids if t != tokenizer.pad_token_id])
    assert text.index("scene:") < text.index("region:") < text.index("object:")


@pytest.mark.parametrize("answers", [None, ANSWERS])
def test_cue_mask_marks_the_slots_under_left_and_right_padding(cue_processor, images, answers):
    questions = ["how many cars?", "is there a forest in the top left part of the image?"]
    batch = cue_processor(images, questions, answers)
    mask = batch["cue_mask"]
    assert mask.sum(dim=1).tolist() == [24, 24]
    assert (batch["input_ids"][mask] == cue_processor.tokenizer.pad_token_id).all()
    assert batch["attention_mask"][mask].all()  # slots are read, never padding


def test_names_are_cut_to_the_slot_and_keep_their_comma(cue_processor):
    vocab = cue_processor.cue_vocabulary({lv: ["storage tank near the quay"] for lv in
                                          ("scene", "region", "object")})  # fmt: skip
    row = vocab.slot["scene"][0].tolist()
    comma = cue_processor.tokenizer(",", add_special_tokens=False)["input_ids"][-1]
    assert len(row) == 4 and row[-1] == comma


def test_the_llm_reads_the_names_of_the_entries_retrieved(cue_model, cue_processor, images,
                                                          retriever):  # fmt: skip
    batch = cue_processor(images, QUESTIONS)
    out = cue_model(**batch)
    names = _names(retriever)
    for row in range(2):
        text = prompt_text(cue_processor, out.input_ids[row].tolist())
        for level in ("scene", "region", "object"):
            top = out.retrieved[level].indices[row, :2].tolist()
            wanted = ", ".join(names[level][i] for i in top) + ","
            assert f"{level}: {wanted}" in " ".join(text.split()), (level, text)


def test_generation_and_scoring_read_the_same_cues(cue_model, cue_processor, images):
    batch = cue_processor(images, QUESTIONS)
    new = cue_model.generate(**batch, max_new_tokens=3)
    assert new.shape[0] == 2
    without = {k: v for k, v in batch.items() if k != "cue_mask"}
    cands = [cue_processor.answer_ids(a) for a in ("yes", "no")]
    assert not torch.allclose(cue_model.score_candidates(batch, cands),
                              cue_model.score_candidates(without, cands))  # fmt: skip
    out = cue_model(**cue_processor(images, QUESTIONS, ANSWERS))
    assert out.loss is not None and torch.isfinite(out.loss)


def test_cue_text_needs_the_names_and_retrieval(cue_config, make_config, retriever):
    with pytest.raises(KnowledgeBaseError, match="cue_vocabulary"):
        GeoStrataForConditionalGeneration(cue_config).attach_knowledge(retriever)
    from geostrata.errors import ConfigError

    with pytest.raises(ConfigError, match="cue_text"):
        make_config(cue_text=True, retrieval=False)
    assert CueSlots.from_config(make_config(cue_text=True, baseline="llava")).total == 0


def test_a_processor_saves_and_reloads_its_slots(cue_processor, tmp_path):
    cue_processor.save_pretrained(tmp_path)
    again = GeoStrataProcessor.from_pretrained(tmp_path)
    assert again.cue_slots == cue_processor.cue_slots
    assert again.prompt("is there a ship?") == cue_processor.prompt("is there a ship?")


@pytest.fixture
def pointer_setup(make_config, retriever):
    """A tokenizer with the pointer tokens, and a model whose scene cues name 'forest' first."""
    from geostrata.model import train_tokenizer

    cfg0 = make_config(cue_text=True, cue_text_k=2, cue_name_tokens=4)
    slots = CueSlots.from_config(cfg0)
    texts = ["how many cars are there", "is there a forest", "yes no 2 forest harbor river"] * 4
    tok = train_tokenizer(texts + NAMES, vocab_size=200, extra_tokens=slots.pointer_tokens)
    cfg = make_config(cue_text=True, cue_text_k=2, cue_name_tokens=4,
                      text_config={"vocab_size": len(tok)})  # fmt: skip
    proc = GeoStrataProcessor(tok, image_size=32, num_image_tokens=9,
                              question_encoder=retriever.encode_text, cue_slots=slots)  # fmt: skip
    torch.manual_seed(0)
    model = GeoStrataForConditionalGeneration(cfg)
    model.attach_knowledge(retriever, proc.cue_vocabulary(_names(retriever)))
    return proc, model.eval()


def test_pointer_tokens_follow_the_image_token(pointer_setup):
    proc, model = pointer_setup
    assert proc.pointer_ids() == list(range(5, 11)) == model.cue_pointers  # 3 levels x 2


def test_an_answer_naming_a_retrieved_entry_is_learned_as_its_pointer(pointer_setup, images):
    proc, model = pointer_setup
    batch = proc(images, QUESTIONS, ["2", "yes"])
    probe = model(**batch)
    names = _names_of(model, probe, "scene")  # what each row's scene cue slots hold
    answers = [names[0][1], "yes"]  # row 0 answers the second scene cue's name
    batch = proc(images, QUESTIONS, answers)
    keys = ("input_ids", "pixel_values", "features", "question_embeds", "align_targets",
            "cue_mask", "labels")  # fmt: skip
    emb = model._embed(*(batch.get(k) for k in keys))
    row = [t for t in emb.labels[0].tolist() if t != -100]
    assert row == [model.cue_pointers[1], proc.tokenizer.eos_token_id]
    assert [t for t in emb.labels[1].tolist() if t != -100] == proc.answer_ids("yes")


def _names_of(model, out, level):
    k = CueSlots.from_config(model.config).per_level
    rows = out.retrieved[level].indices[:, :k].tolist()
    names = [NAMES[i % len(NAMES)] for i in range(64)]
    return [[names[e] for e in row] for row in rows]


def test_pointers_are_shown_as_the_name_they_point_to(pointer_setup, images):
    proc, model = pointer_setup
    out = model(**proc(images, QUESTIONS))
    slots = model.slot_answers(out.retrieved)
    scene = _names_of(model, out, "scene")
    shown = model.expand_pointers([model.cue_pointers[0], proc.tokenizer.eos_token_id], slots[0])
    assert proc.tokenizer.decode(shown, skip_special_tokens=True).strip() == scene[0][0]


def test_a_candidate_in_a_cue_slot_also_scores_as_its_pointer(pointer_setup, images):
    proc, model = pointer_setup
    batch = proc(images, QUESTIONS)
    scene = _names_of(model, model(**batch), "scene")
    cands = [proc.answer_ids(scene[0][0]), proc.answer_ids("yes")]
    with_pointer = model.score_candidates(batch, cands)
    model.cue_pointers, pointers = [], model.cue_pointers
    literal = model.score_candidates(batch, cands)
    model.cue_pointers = pointers
    assert with_pointer[0, 0] > literal[0, 0]  # log(p_literal + p_pointer) > log p_literal
    torch.testing.assert_close(with_pointer[:, 1], literal[:, 1])  # "yes" names no slot
