"""Multi-turn dialogues whose follow-up can only be answered with the earlier turn.

Each dialogue is two turns about one image. The follow-up refers back ("How many are there?"
after "Is there a ship?", "What colour is it?" after a grounding turn, "And cars?" after a count),
so its answer is determined by the annotation only together with the first turn: without it the
question has no subject. Every answer is a function of the annotation, as for the VQA questions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geostrata.boxes import size_bucket
from geostrata.data.synthetic.describe import article, object_counts
from geostrata.data.synthetic.referring import Referring
from geostrata.data.synthetic.vocab import COUNTABLE, count_answer, plural, spaced
from geostrata.prompts import ground_question

# what a follow-up about a grounded object asks, and which attribute answers it
OBJECT_FOLLOWUPS: dict[str, tuple[str, str]] = {
    "colour": ("What colour is it?", "object"),
    "cover": ("What land cover is it on?", "region"),
    "size": ("How big is it?", "object"),
}
KINDS = ("presence_count", "count_ellipsis", "ground_colour", "ground_cover", "ground_size")


@dataclass(frozen=True)
class Turn:
    """One question and its answer; `kind` is what is asked (presence, count, ground, colour,
    cover, size) and `level` its semantic level."""

    question: str
    answer: str
    kind: str
    level: str = "object"


@dataclass(frozen=True)
class Dialogue:
    kind: str  # one of KINDS
    turns: tuple[Turn, ...]


def _presence_count(rng: np.random.Generator, counts: dict[str, int], names: list[str]) -> Dialogue:
    """Presence then count: "Is there a ship?" -> yes / no, "How many are there?" -> n."""
    present = [k for k in names if counts[k]]
    absent = [k for k in names if not counts[k]]
    pool = present if present and (not absent or rng.random() < 0.5) else absent
    name = pool[int(rng.integers(len(pool)))]
    ask = Turn(f"Is there {article(name)} {spaced(name)}?", "yes" if counts[name] else "no",
               "presence")  # fmt: skip
    return Dialogue("presence_count", (ask, Turn("How many are there?", count_answer(counts[name]),
                                                 "count")))  # fmt: skip


def _count_ellipsis(rng: np.random.Generator, counts: dict[str, int], names: list[str]) -> Dialogue:
    """Count then ellipsis: "How many cars are there?" -> n, "And buildings?" -> m."""
    present = [k for k in names if counts[k]]
    first = present[int(rng.integers(len(present)))]
    others = [k for k in names if k != first]
    second = others[int(rng.integers(len(others)))]
    return Dialogue("count_ellipsis", (
        Turn(f"How many {plural(first)} are there?", count_answer(counts[first]), "count"),
        Turn(f"And {plural(second)}?", count_answer(counts[second]), "count"),
    ))  # fmt: skip


def _about_object(kind: str, ref: Referring, obj: dict) -> Dialogue:
    """A grounding turn, then a question about the object it found."""
    question, level = OBJECT_FOLLOWUPS[kind]
    if kind == "colour":
        answer = obj["colour"]
    elif kind == "cover":
        answer = spaced(obj["cover"])
    else:
        answer = size_bucket(ref.box)
    ground = Turn(ground_question(ref.text), ref.box.text(), "ground")
    return Dialogue(f"ground_{kind}", (ground, Turn(question, answer, kind, level)))


def _fits(attribute: str, ref: Referring, obj: dict) -> bool:
    """Whether a follow-up may ask `attribute` of a grounded object: it has one, and the
    expression of the grounding turn does not already say it."""
    if attribute == "colour":
        return bool(obj.get("colour")) and not ref.expression.colour
    if attribute == "cover":
        return bool(obj.get("cover")) and not ref.expression.cover
    return True


def make_dialogues(
    rng: np.random.Generator,
    annotation: dict,
    refs: list[Referring],
    limit: int,
    hidden: frozenset[str] = frozenset(),
) -> list[Dialogue]:
    """Up to `limit` dialogues of distinct kinds (drawn at random among those the image allows)
    about one image, each grounded one about a different object; `refs`: its objects with unique
    expressions (referring.refer); `hidden`: classes no turn may name."""
    counts = object_counts(annotation["objects"])
    names = [k for k in COUNTABLE if k not in hidden]
    objects = annotation["objects"]
    allowed = {
        "presence_count": len(names) >= 2,
        "count_ellipsis": len(names) >= 2 and any(counts[k] for k in names),
    }
    for attribute in OBJECT_FOLLOWUPS:
        allowed[f"ground_{attribute}"] = any(_fits(attribute, r, objects[r.index]) for r in refs)
    kinds = [k for k in KINDS if allowed[k]]
    out, used = [], set()
    for i in rng.permutation(len(kinds)):
        kind = kinds[int(i)]
        if len(out) == limit:
            break
        if kind == "presence_count":
            out.append(_presence_count(rng, counts, names))
        elif kind == "count_ellipsis":
            out.append(_count_ellipsis(rng, counts, names))
        else:
            attribute = kind.removeprefix("ground_")
            free = [r for r in refs
                    if r.index not in used and _fits(attribute, r, objects[r.index])]  # fmt: skip
            if free:
                ref = free[int(rng.integers(len(free)))]
                used.add(ref.index)
                out.append(_about_object(attribute, ref, objects[ref.index]))
    return out
