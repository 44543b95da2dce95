"""Questions derived from an image's annotation (never from pixels), RSVQA-style.

Like RSVQA, which derives its questions from OpenStreetMap, every answer is a function of the
annotation, so it can be recomputed and checked. A split's questions are made image by image in
id order by one `AnswerBalancer`, which keeps running tallies and asks, for each yes/no type,
for the answer that is behind overall and about the object (or ordered pair) whose question is
most lopsided so far. So "yes" and "no" are balanced per type and the question text alone
(which object, which pair) does not predict the answer. Count, area and land_cover questions
ask about the subject (class, cover, image part) whose current answer it has given least
often, which flattens each question's answer distribution; rural_urban is asked when its
answer is behind, and otherwise half the time.
"""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from geostrata.data.synthetic.describe import article, object_counts
from geostrata.data.synthetic.vocab import (
    COUNTABLE,
    LAND_COVERS,
    OBJECT_CLASSES,
    PARTS,
    QUESTION_LEVELS,
    area_answer,
    count_answer,
    plural,
    spaced,
)


@dataclass(frozen=True)
class Question:
    """One question about one image, with its answer and RSVQA-style type."""

    qtype: str
    question: str
    answer: str

    @property
    def level(self) -> str:
        return QUESTION_LEVELS[self.qtype]


@dataclass
class AnswerBalancer:
    """Running tallies over one split: answers per type, and yes-minus-no per asked subject."""

    answers: Counter = field(default_factory=Counter)  # (qtype, answer) -> n
    lean: Counter = field(default_factory=Counter)  # (qtype, subject) -> n_yes - n_no
    told: Counter = field(default_factory=Counter)  # (qtype, subject, answer) -> n

    def want_yes(self, qtype: str) -> bool:
        return self.answers[(qtype, "yes")] <= self.answers[(qtype, "no")]

    def pick(self, rng: np.random.Generator, qtype: str, subjects: list, yes: bool) -> object:
        """The subject whose questions lean most towards the other answer (ties at random)."""
        leans = np.array([self.lean[(qtype, s)] for s in subjects])
        best = np.flatnonzero(leans == (leans.min() if yes else leans.max()))
        return subjects[int(rng.choice(best))]

    def fewest(self, rng: np.random.Generator, qtype: str, options: list[tuple]) -> tuple:
        """The (subject, answer) option given least often so far (ties at random)."""
        told = np.array([self.told[(qtype, s, a)] for s, a in options])
        return options[int(rng.choice(np.flatnonzero(told == told.min())))]

    def record(self, qtype: str, subject: object, answer: str) -> None:
        self.answers[(qtype, answer)] += 1
        self.told[(qtype, subject, answer)] += 1
        if answer in ("yes", "no"):
            self.lean[(qtype, subject)] += 1 if answer == "yes" else -1


def part_cover(grid: list[list[str]], part: str) -> str | None:
    """Majority cover over the grid cells of an image quadrant; None when tied."""
    g = len(grid)
    rows = range(0, g // 2) if part.startswith("top") else range(g // 2, g)
    cols = range(0, g // 2) if part.endswith("left") else range(g // 2, g)
    votes = Counter(grid[r][c] for r in rows for c in cols).most_common()
    if len(votes) > 1 and votes[0][1] == votes[1][1]:
        return None
    return votes[0][0]


def _presence(
    rng: np.random.Generator, counts: dict[str, int], bal: AnswerBalancer, hidden: frozenset[str]
) -> Question:
    names = [k for k in OBJECT_CLASSES if k not in hidden]
    present = [k for k in names if counts[k] > 0]
    absent = [k for k in names if counts[k] == 0]
    yes = bool(present) and (bal.want_yes("presence") or not absent)
    name = str(bal.pick(rng, "presence", present if yes else absent, yes))
    if rng.random() < 0.5:
        text = f"Is there {article(name)} {spaced(name)}?"
    else:
        text = f"Are there any {plural(name)} in the image?"
    answer = "yes" if counts[name] else "no"
    bal.record("presence", name, answer)
    return Question("presence", text, answer)


def _comp(
    rng: np.random.Generator, counts: dict[str, int], bal: AnswerBalancer, hidden: frozenset[str]
) -> Question:
    """An ordered pair "more A than B?" with A != B; yes iff count A > count B."""
    names = [k for k in COUNTABLE if k not in hidden]
    pairs = [(a, b) for a in names for b in names if a != b]
    yes_pairs = [(a, b) for a, b in pairs if counts[a] > counts[b]]
    # "No" pairs with something present, so the question is not about two absent things.
    no_pairs = [(a, b) for a, b in pairs if counts[a] <= counts[b] and counts[b] > 0]
    no_pairs = no_pairs or [(a, b) for a, b in pairs if counts[a] <= counts[b]]
    yes = bool(yes_pairs) and bal.want_yes("comp")
    a, b = bal.pick(rng, "comp", yes_pairs if yes else no_pairs, yes)  # type: ignore[misc]
    answer = "yes" if counts[a] > counts[b] else "no"
    bal.record("comp", (a, b), answer)
    return Question("comp", f"Are there more {plural(a)} than {plural(b)}?", answer)


def _count(
    rng: np.random.Generator, counts: dict[str, int], bal: AnswerBalancer, hidden: frozenset[str]
) -> Question:
    options = [(k, count_answer(counts[k])) for k in COUNTABLE if k not in hidden]
    name, answer = bal.fewest(rng, "count", options)
    if rng.random() < 0.5:
        text = f"How many {plural(name)} are there?"
    else:
        text = f"What is the number of {plural(name)} in the image?"
    bal.record("count", name, answer)
    return Question("count", text, answer)


def _area(rng: np.random.Generator, fractions: dict[str, float], bal: AnswerBalancer) -> Question:
    cover, answer = bal.fewest(rng, "area", [(c, area_answer(fractions[c])) for c in LAND_COVERS])
    bal.record("area", cover, answer)
    return Question("area", f"What is the area covered by {spaced(cover)}?", answer)


def _land_cover(rng: np.random.Generator, regions: dict, bal: AnswerBalancer) -> Question:
    """A quadrant with a clear majority cover, or the whole image when every quadrant ties."""
    options = [(p, part_cover(regions["grid"], p)) for p in PARTS]
    options = [(p, spaced(c)) for p, c in options if c is not None]
    if not options:
        fractions = regions["fractions"]
        options = [("whole", spaced(max(LAND_COVERS, key=lambda c: fractions[c])))]
    part, answer = bal.fewest(rng, "land_cover", options)
    bal.record("land_cover", part, answer)
    if part == "whole":
        return Question("land_cover", "What is the main land cover in this image?", answer)
    text = f"What is the main land cover in the {part} part of the image?"
    return Question("land_cover", text, answer)


def _rural_urban(
    rng: np.random.Generator, annotation: dict, bal: AnswerBalancer
) -> Question | None:
    answer = "urban" if annotation["attributes"]["urban"] else "rural"
    other = "rural" if answer == "urban" else "urban"
    behind = bal.answers[("rural_urban", answer)] < bal.answers[("rural_urban", other)]
    if not behind and rng.random() < 0.5:
        return None
    bal.record("rural_urban", None, answer)
    return Question("rural_urban", "Is this a rural or an urban area?", answer)


def make_questions(
    rng: np.random.Generator,
    annotation: dict,
    balancer: AnswerBalancer,
    hidden: frozenset[str] = frozenset(),
) -> list[Question]:
    """Six or seven questions for one image: one of each type, rural_urban when it balances.

    ``hidden``: object classes no question may name (held out of the training split)."""
    counts = object_counts(annotation["objects"])
    if rng.random() < 0.5:
        scene_text = "What type of scene is this?"
    else:
        scene_text = "What kind of area does this image show?"
    out = [
        Question("scene", scene_text, spaced(annotation["scene"])),
        _presence(rng, counts, balancer, hidden),
        _count(rng, counts, balancer, hidden),
        _comp(rng, counts, balancer, hidden),
        _area(rng, annotation["regions"]["fractions"], balancer),
        _land_cover(rng, annotation["regions"], balancer),
    ]
    rural_urban = _rural_urban(rng, annotation, balancer)
    return out + ([rural_urban] if rural_urban else [])
