"""Boxes in the local tokenizer: six tokens each, every coordinate one token, exact round trip."""

from geostrata.boxes import Box, parse_boxes
from geostrata.model.tokenizer import BOX_TOKENS, train_tokenizer
from geostrata.prompts import region_question

CORPUS = ["Is there a ship?", "yes", "How many cars are there?", "3", "A small red car."] * 4


def test_a_box_is_six_tokens_whatever_the_corpus(tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok = train_tokenizer(CORPUS, vocab_size=200)  # no box in the corpus at all
    saved = tmp_path / "tok"
    tok.save_pretrained(saved)
    for t in (tok, PreTrainedTokenizerFast.from_pretrained(saved)):
        for box in (Box(12, 40, 55, 90), Box(0, 0, 100, 100), Box(7, 7, 8, 9)):
            ids = t(box.text(), add_special_tokens=False)["input_ids"]
            assert t.convert_ids_to_tokens(ids) == ["{", *(f"<{v}>" for v in box.as_list()), "}"]
            assert t.decode(ids + [t.eos_token_id], skip_special_tokens=True) == box.text()


def test_every_coordinate_is_its_own_token_and_boxes_survive_in_sentences():
    tok = train_tokenizer(CORPUS, vocab_size=200)
    ids = {tok.convert_tokens_to_ids(t) for t in BOX_TOKENS}
    assert len(ids) == len(BOX_TOKENS) and tok.unk_token_id not in ids
    text = "two ships {<1><2><30><40>} and {<50><60><99><100>}"
    decoded = tok.decode(tok(text, add_special_tokens=False)["input_ids"])
    assert parse_boxes(decoded) == [Box(1, 2, 30, 40), Box(50, 60, 99, 100)]
    question = region_question(Box(3, 4, 50, 100))
    assert parse_boxes(tok.decode(tok(question)["input_ids"])) == [Box(3, 4, 50, 100)]
    assert tok("forest")["input_ids"] == tok(" forest")["input_ids"]  # words as before
