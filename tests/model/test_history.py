"""Multi-turn prompts: earlier turns before the question, the image kept, oldest turns dropped."""

import pytest

from geostrata.errors import InputError
from geostrata.model.processing import GeoStrataProcessor, followup_template


def _processor(tokenizer, **kw) -> GeoStrataProcessor:
    return GeoStrataProcessor(tokenizer, image_size=32, num_image_tokens=3, **kw)


def _text(processor: GeoStrataProcessor, ids: list[int]) -> str:
    return processor.tokenizer.decode(ids, skip_special_tokens=False)


def test_followup_template_of_the_plain_prompt():
    assert (
        followup_template("USER: <image> {question} ASSISTANT:") == " USER: {question} ASSISTANT:"
    )


def test_history_is_written_before_the_question_with_the_image_once(tokenizer):
    p = _processor(tokenizer)
    alone, _ = p.prompt("is there a forest")
    ids, _ = p.prompt("is there a forest", [("how many cars are there", "3")])
    image = p.image_token_id
    assert ids.count(image) == alone.count(image) == 3
    text = _text(p, ids)
    assert text.index("cars") < text.index("3") < text.index("forest")
    assert text.count("USER") == 2 and text.count("ASSISTANT") == 2
    assert ids[-len(p._turn_ids("is there a forest")) :] == p._turn_ids("is there a forest")
    # the image tokens open the oldest turn: everything of the first turn follows them
    assert ids.index(image) < ids.index(p.tokenizer.eos_token_id)


def test_oldest_turns_are_dropped_to_fit_and_the_image_stays(tokenizer):
    turn = ("what is the scene", "residential")
    cost = len(_processor(tokenizer)._turn_ids(turn[0])) + len(
        _processor(tokenizer).answer_ids(turn[1])
    )
    p = _processor(tokenizer, max_history_tokens=2 * cost)
    history = [("how many cars are there", "4"), turn, turn]
    ids, _ = p.prompt("is there a forest", history)
    text = _text(p, ids)
    assert "cars" not in text and text.count("residential") == 2
    assert ids.count(p.image_token_id) == 3
    tight = _processor(tokenizer, max_history_tokens=0)
    assert tight.prompt("is there a forest", history)[0] == tight.prompt("is there a forest")[0]


def test_batches_take_histories_and_labels_cover_only_the_answer(tokenizer):
    p = _processor(tokenizer)
    batch = p(
        None,
        ["is there a forest", "what is the scene"],
        ["yes", "farmland"],
        [[("how many cars are there", "2")], []],
    )
    labels = batch["labels"][0]
    answer = p.answer_ids("yes")
    assert labels[labels != -100].tolist() == answer  # earlier answers are context, not targets
    with pytest.raises(InputError, match="histories"):
        p(None, ["is there a forest"], None, [[], []])


def test_image_placeholders_in_earlier_turns_are_refused(tokenizer):
    with pytest.raises(InputError, match="<image>"):
        _processor(tokenizer).prompt("is there a forest", [("<image> what", "no")])


def test_turn_templates_are_saved(tokenizer, tmp_path):
    p = _processor(tokenizer, turn_template=" Q: {question} A:", max_history_tokens=64)
    p.save_pretrained(tmp_path)
    back = GeoStrataProcessor.from_pretrained(tmp_path)
    assert (back.turn_template, back.max_history_tokens) == (" Q: {question} A:", 64)
    history = [("how many cars are there", "1")]
    assert back.prompt("is there a forest", history) == p.prompt("is there a forest", history)
