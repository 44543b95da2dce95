"""Grounding, region and dialogue truth of the synthetic benchmark: uniqueness, descriptions,
dialogues that need their first turn, determinism, and the records the loader makes of them."""

import json
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from geostrata.boxes import Box, from_pixels, parse_box, size_bucket
from geostrata.data import InstructionDataset
from geostrata.data.synthetic import load_annotations, synthesize
from geostrata.data.synthetic.dialogues import make_dialogues
from geostrata.data.synthetic.files import load_task_entries, task_path
from geostrata.data.synthetic.referring import (
    Expression,
    refer,
    referent,
    things,
    unique_expressions,
)
from geostrata.data.synthetic.regiontext import area_region, object_region
from geostrata.data.synthetic.scene import generate_image, plan_split
from geostrata.data.synthetic.tasks import make_tasks
from geostrata.data.synthetic.vocab import count_answer
from geostrata.errors import AnnotationError, DatasetNotFoundError
from geostrata.prompts import ground_question, region_question
from geostrata.session.experiment import DataConfig
from geostrata.session.samples import load_task

S = 100  # image side of the hand-made scenes: pixel = percent


def obj(name, box, colour="", cover="pavement"):
    return {"class": name, "box": list(box), "cover": cover} | (
        {"colour": colour} if colour else {}
    )


def _refers(objects, expr):
    every = things(objects, S)
    found = referent(expr, every)
    return None if found is None else found.index


# ---- referring expressions -----------------------------------------------------------------
def test_a_class_alone_is_unique_only_when_the_image_has_one_of_it():
    scene = [obj("car", (10, 10, 14, 12), "red"), obj("car", (60, 60, 64, 62), "blue"),
             obj("ship", (40, 40, 50, 44), "white", "water")]  # fmt: skip
    assert _refers(scene, Expression("ship")) == 2
    assert _refers(scene, Expression("car")) is None  # two cars
    assert _refers(scene, Expression("car", colour="blue")) == 1
    assert _refers(scene, Expression("car", colour="green")) is None
    assert [e.text() for e in unique_expressions(things(scene, S)[2], things(scene, S))] == [
        "the ship"
    ]


def _drops(expr: Expression) -> list[Expression]:
    """`expr` with one of its terms dropped, each way."""
    fields = [("colour",), ("cover",), ("part",), ("selector", "anchor")]
    return [replace(expr, **dict.fromkeys(f, "")) for f in fields if getattr(expr, f[0])]


def test_every_expression_kept_is_unique_and_minimal():
    scene = [obj("car", (10, 10, 14, 12), "red"), obj("car", (80, 12, 84, 14), "red"),
             obj("car", (45, 80, 49, 82), "blue"),
             obj("building", (40, 40, 50, 50), "grey", "grass")]  # fmt: skip
    every = things(scene, S)
    found = {t.index: [e.text() for e in unique_expressions(t, every)] for t in every}
    assert found == {
        0: ["the car in the top left of the image", "the leftmost car"],
        1: ["the car in the top right of the image", "the rightmost car"],
        2: ["the blue car", "the bottommost car", "the car at the bottom of the image"],
        3: ["the building"],
    }  # "the red car" fits two cars; "the leftmost red car" is not minimal
    for target in every:
        for expr in unique_expressions(target, every):
            assert referent(expr, every) == target
            assert all(referent(shorter, every) != target for shorter in _drops(expr))


def test_twins_have_no_expression_and_are_never_asked_about():
    twins = [obj("tree", (10, 40, 14, 44), cover="grass"), obj("tree", (86, 40, 90, 44),
                                                                cover="grass")]  # fmt: skip
    # mirror images: same size, same row, same cover; only left / right tells them apart
    texts = {e.text() for e in unique_expressions(things(twins, S)[0], things(twins, S))}
    assert texts == {"the leftmost tree", "the tree on the left of the image"}
    same = [obj("tree", (40, 40, 44, 44), cover="grass"), obj("tree", (40, 40, 44, 44),
                                                               cover="grass")]  # fmt: skip
    assert unique_expressions(things(same, S)[0], things(same, S)) == []
    assert refer(np.random.default_rng(0), same, S, limit=5) == []


def test_selectors_need_a_clear_margin():
    close = [obj("building", (10, 10, 20, 20)), obj("building", (60, 60, 70, 71))]  # 100 vs 110
    assert _refers(close, Expression("building", selector="largest")) is None
    clear = [obj("building", (10, 10, 20, 20)), obj("building", (60, 60, 75, 75))]  # 100 vs 225
    assert _refers(clear, Expression("building", selector="largest")) == 1
    assert _refers(clear, Expression("building", selector="smallest")) == 0
    level = [obj("car", (50, 10, 54, 12)), obj("car", (52, 80, 56, 82))]  # centres 2% apart in x
    assert _refers(level, Expression("car", selector="leftmost")) is None
    assert _refers(level, Expression("car", selector="topmost")) == 0


def test_a_centre_near_the_edge_of_a_ninth_is_not_placed_in_it():
    # centre x = 34: inside the middle column, but within the margin of its edge
    edge = [obj("car", (32, 48, 36, 50)), obj("car", (80, 80, 84, 82))]
    assert _refers(edge, Expression("car", part="centre")) is None
    inside = [obj("car", (48, 48, 52, 50)), obj("car", (80, 80, 84, 82))]
    assert _refers(inside, Expression("car", part="centre")) == 0
    # another car just across the edge could be seen as in the centre too: ambiguous
    crowd = [obj("car", (48, 48, 52, 50)), obj("car", (29, 48, 33, 50))]  # centre x = 31
    assert _refers(crowd, Expression("car", part="centre")) is None


def test_closest_needs_an_anchor_alone_of_its_class():
    scene = [obj("car", (20, 20, 24, 22)), obj("car", (70, 70, 74, 72)),
             obj("airplane", (60, 60, 80, 80))]  # fmt: skip
    assert _refers(scene, Expression("car", selector="closest", anchor="airplane")) == 1
    two = [*scene, obj("airplane", (5, 80, 25, 98))]
    assert _refers(two, Expression("car", selector="closest", anchor="airplane")) is None
    text = Expression("car", selector="closest", anchor="airplane").text()
    assert text == "the car closest to the airplane"


def _matches(expr: Expression, objects: list[dict]) -> list[int]:
    """An independent recount for filter-only expressions: objects of the class, colour, cover."""
    return [i for i, o in enumerate(objects) if o["class"] == expr.name
            and (not expr.colour or o.get("colour") == expr.colour)
            and (not expr.cover or o.get("cover") == expr.cover)]  # fmt: skip


@pytest.fixture(scope="module")
def generated() -> list:
    return [generate_image(s) for s in plan_split(5, "train", 0, 36, 96, 4)]


@pytest.fixture(scope="module")
def annotations(generated) -> list[dict]:
    return [g.annotation for g in generated]


def test_expressions_of_generated_images_pick_their_object_alone(annotations):
    checked = Counter()
    for ann in annotations:
        for ref in refer(np.random.default_rng(ann["id"]), ann["objects"], 96, limit=6):
            expr, target = ref.expression, ann["objects"][ref.index]
            assert ref.box == from_pixels(*target["box"], 96, 96)
            if not expr.selector and not expr.part:
                assert _matches(expr, ann["objects"]) == [ref.index], expr
            elif expr.selector in ("largest", "smallest") and not expr.part:
                group = [ann["objects"][i] for i in _matches(expr, ann["objects"])]
                areas = sorted((b[2] - b[0]) * (b[3] - b[1]) for b in (o["box"] for o in group))
                b = target["box"]
                mine = (b[2] - b[0]) * (b[3] - b[1])
                assert mine == (areas[-1] if expr.selector == "largest" else areas[0])
                assert len(areas) >= 2
            checked[expr.selector or ("part" if expr.part else "filters")] += 1
    assert checked["filters"] and checked["part"] and checked["largest"] + checked["smallest"]


# ---- region descriptions -------------------------------------------------------------------
def test_object_region_says_size_colour_class_and_cover():
    car = obj("car", (10, 10, 14, 13), "red")
    region = object_region(car, S)
    assert region.box == Box(10, 10, 14, 13) and region.level == "object"
    assert size_bucket(region.box) == "small"
    assert region.references == ("A small red car on pavement.", "A red car.")
    building = object_region(obj("building", (0, 0, 20, 20), cover="grass"), S)
    assert building.references == ("A large building on grass.", "A building.")


def test_area_region_lists_covers_and_the_objects_inside_it():
    area = {"cover": "grass", "box": [0, 0, 50, 50], "cells": 64,
            "inside": {"grass": 0.7, "pavement": 0.25, "sand": 0.05}}  # fmt: skip
    objects = [obj("building", (10, 10, 20, 20)), obj("building", (30, 30, 40, 40)),
               obj("tree", (44, 44, 48, 48)), obj("car", (60, 60, 64, 62)),  # outside
               obj("road", (0, 20, 100, 24))]  # fmt: skip
    region = area_region(area, objects, S)
    assert region.level == "region" and region.box == Box(0, 0, 50, 50)
    assert region.references == (
        "An area of mostly grass with some pavement, with 2 buildings and 1 tree.",
        "An area of mostly grass with some pavement.",
    )
    pure = {**area, "inside": {"grass": 0.9}}
    assert area_region(pure, [], S).references[0] == "An area of grass, with no distinct objects."


# ---- dialogues -----------------------------------------------------------------------------
def _dialogues(annotations, seed):
    out = []
    for ann in annotations:
        rng = np.random.default_rng([seed, ann["id"]])
        refs = refer(rng, ann["objects"], 96, 6)
        out.append(make_dialogues(rng, ann, refs, 2))
    return out


def test_dialogues_are_deterministic_by_seed(annotations):
    some = annotations[:12]
    first = _dialogues(some, 1)
    assert first == _dialogues(some, 1) and first != _dialogues(some, 2)


def test_follow_ups_follow_from_the_first_turn_and_the_annotation(annotations):
    answers = defaultdict(set)  # follow-up question -> the answers it has across images
    kinds = Counter()
    for ann, dialogues in zip(annotations, _dialogues(annotations, 1), strict=True):
        counts = Counter(o["class"] for o in ann["objects"])
        boxes = {tuple(from_pixels(*o["box"], 96, 96).as_list()): o for o in ann["objects"]}
        assert len({d.kind for d in dialogues}) == len(dialogues) <= 2
        for d in dialogues:
            first, follow = d.turns
            kinds[d.kind] += 1
            answers[follow.question].add(follow.answer)
            if d.kind == "presence_count":
                name = first.question.removeprefix("Is there a ").removeprefix("n ")[:-1]
                n = counts[name.replace(" ", "_")]
                assert (first.answer, follow.answer) == ("yes" if n else "no", count_answer(n))
            elif d.kind == "count_ellipsis":
                name = follow.question.removeprefix("And ").removesuffix("s?").replace(" ", "_")
                assert follow.answer == str(counts[name])
            else:
                assert first.kind == "ground"
                expression = first.question.removeprefix("[refer] Where is ")
                assert first.question == ground_question(expression.split("? Answer")[0])
                target = boxes[tuple(parse_box(first.answer).as_list())]
                if d.kind == "ground_colour":
                    assert follow.answer == target["colour"]
                    assert target["colour"] not in expression  # the first turn does not say it
                elif d.kind == "ground_cover":
                    assert follow.answer == target["cover"].replace("_", " ")
                else:
                    assert follow.answer == size_bucket(from_pixels(*target["box"], 96, 96))
    assert set(kinds) == {"presence_count", "count_ellipsis", "ground_colour", "ground_cover",
                          "ground_size"}  # fmt: skip
    # the follow-up alone does not tell its answer: one question, several answers
    assert len(answers["How many are there?"]) >= 3
    assert len(answers["What colour is it?"]) >= 2


# ---- files and the loader ------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("tasks") / "b", 24, 12, 96, 4)


ALL = ["vqa", "caption", "ground", "region", "chat"]


def test_task_files_are_instruct_conversations(bench):
    for task in ("ground", "region", "chat"):
        entries = load_task_entries(bench, "test", task)
        samples = InstructionDataset(task_path(bench, "test", task), bench).records
        assert entries and {s["id"] for s in samples} == set(entries)
        assert all(json.loads(json.dumps(e))["task"] == task for e in entries.values())
    test_ids = set(load_annotations(bench, "test"))
    ids = {int(i.partition(":")[0]) for i in load_task_entries(bench, "test", "ground")}
    assert ids <= test_ids


def test_the_loader_makes_records_of_the_convention(bench):
    data = load_task(DataConfig(root=str(bench), tasks=ALL))
    by_task = defaultdict(list)
    for r in data.train + data.eval:
        by_task[r.get("task", "vqa")].append(r)
        assert r["image_path"] in data.truths
    assert set(by_task) == set(ALL)
    for r in by_task["ground"]:
        assert r["qtype"] == "ground" and r["level"] == "object"
        assert r["answer"] == Box.of(r["box"]).text()
        assert r["question"] == ground_question(r["expression"])
    for r in by_task["region"]:
        assert r["question"] == region_question(Box.of(r["box"]))
        assert r["answer"] == r["references"][0] and r["level"] in ("object", "region")
    for r in by_task["caption"]:
        assert r["references"] == [r["answer"]]
    dialogues = defaultdict(list)
    for r in by_task["chat"]:
        dialogues[r["dialogue"]].append(r)
    for turns in dialogues.values():
        assert [t["turn"] for t in turns] == [0, 1] and turns[0]["history"] == []
        assert turns[1]["history"] == [[turns[0]["question"], turns[0]["answer"]]]
    assert {r.get("task", "vqa") for r in data.eval} == set(ALL)  # eval: the same tasks
    default = load_task(DataConfig(root=str(bench)))  # data.tasks unset: vqa and caption
    assert {r.get("task", "vqa") for r in default.train + default.eval} == {"vqa", "caption"}


def test_an_older_benchmark_without_task_files_is_named(bench, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(bench, old)
    task_path(old, "train", "chat").unlink()
    with pytest.raises(DatasetNotFoundError, match="train_chat.json not found.*synthesize it"):
        load_task(DataConfig(root=str(old), tasks=["vqa", "chat"]))
    load_task(DataConfig(root=str(old)))  # the default tasks do not need it
    entries = json.loads(task_path(old, "train", "ground").read_text())
    entries[1]["box"] = [10, 10, 5, 20]
    task_path(old, "train", "ground").write_text(json.dumps(entries))
    with pytest.raises(AnnotationError, match="entry 1: key 'box'"):
        load_task(DataConfig(root=str(old), tasks=["ground"]))


def test_task_items_come_from_their_own_stream(bench):
    ann = load_annotations(bench, "train")[3]
    one = make_tasks(np.random.default_rng([4, 3, 2]), ann, 96)
    assert one == make_tasks(np.random.default_rng([4, 3, 2]), ann, 96)
    entries = load_task_entries(bench, "train", "ground")
    written = [e["expression"] for k, e in entries.items() if k.startswith("3:")]
    assert written == [r.text for r in one.ground]


def test_colour_names_agree_with_the_pixels(generated):
    means = defaultdict(list)
    for gen in generated:
        for o in gen.annotation["objects"]:
            if o["class"] == "car" and o.get("colour") in ("red", "blue"):
                x0, y0, x1, y1 = o["box"]
                means[o["colour"]].append(gen.image[y0:y1, x0:x1].reshape(-1, 3).mean(0))
    red, blue = np.mean(means["red"], axis=0), np.mean(means["blue"], axis=0)
    assert red[0] > red[2] and blue[2] > blue[0]
