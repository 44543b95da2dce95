"""Follow-up accuracy with the true earlier turns, without them, and with the model's own."""

from geostrata.evaluate.dialogue import answer_correct, own_history_answers, score_followups


def _dialogue(name: str, first: tuple[str, str], follow: tuple[str, str], kind: str) -> list:
    base = {"task": "chat", "dialogue": name, "image_path": "x.png"}
    return [
        {**base, "turn": 0, "question_id": f"{name}:0", "question": first[0], "answer": first[1],
         "history": [], "kind": "presence"},
        {**base, "turn": 1, "question_id": f"{name}:1", "question": follow[0],
         "answer": follow[1], "history": [list(first)], "kind": kind},
    ]  # fmt: skip


RECORDS = [
    *_dialogue("a", ("Is there a ship?", "yes"), ("How many are there?", "3"), "count"),
    *_dialogue("b", ("Is there a car?", "yes"), ("How many are there?", "5"), "count"),
    *_dialogue(
        "c",
        ("[refer] Where is the red car?", "{<10><10><20><20>}"),
        ("How big is it?", "small"),
        "size",
    ),  # fmt: skip
    {"task": "vqa", "question": "Is there a tree?", "answer": "no", "question_id": "v"},
]
TRUTH = {"Is there a ship?": "3", "Is there a car?": "5", "[refer] Where is the red car?": "small"}


def _reader(records):
    """A model that answers a follow-up only when its history names the subject (alone it says
    "0"), and gets turn 0 right (so its own history is the true one) except in dialogue b."""
    out = []
    for r in records:
        if r["turn"] == 0:
            out.append("no" if r["dialogue"] == "b" else r["answer"])
        elif not r["history"]:
            out.append("0")
        else:
            asked, said = r["history"][0]
            right = TRUTH[asked] if said in ("yes", "{<10><10><20><20>}") else "0"
            out.append(right)
    return out


def test_follow_ups_are_scored_with_without_and_with_own_history():
    m = score_followups(RECORDS, _reader)
    assert m.overall.n == 3
    assert m.overall.with_history == 1.0  # the true first turns name the subject
    assert m.overall.without_history == 0.0  # the follow-up alone does not
    assert m.overall.own_history == 2 / 3  # in dialogue b the model's own "no" misleads it
    assert m.per_kind["count"].n == 2 and m.per_kind["size"].with_history == 1.0
    assert m.summary()["followup_without_history"] == 0.0
    assert score_followups(RECORDS[-1:], _reader) is None  # no dialogues: nothing to score


def test_own_history_uses_the_models_earlier_answers():
    chats = [r for r in RECORDS if r["task"] == "chat"]
    seen = []

    def model(records):
        seen.extend(r["history"] for r in records)
        return [f"a{r['turn']}" for r in records]

    assert own_history_answers(chats, model) == ["a0", "a1"] * 3
    assert seen[3:] == [[["Is there a ship?", "a0"]], [["Is there a car?", "a0"]],
                        [["[refer] Where is the red car?", "a0"]]]  # fmt: skip


def test_box_answers_count_at_iou_half_others_by_exact_match():
    assert answer_correct("{<10><10><20><21>}", "{<10><10><20><20>}")
    assert not answer_correct("{<15><15><25><25>}", "{<10><10><20><20>}")  # IoU 0.14
    assert not answer_correct("somewhere", "{<10><10><20><20>}")
    assert answer_correct("Three.", "3") and not answer_correct("4", "3")
