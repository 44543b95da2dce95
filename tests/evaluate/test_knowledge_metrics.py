"""Seen / unseen figures, router accuracy and multi-level consistency, on hand-made records."""

import numpy as np
import pytest
import torch

from geostrata.data.targets import Truth
from geostrata.evaluate.consistency import consistency_metrics, scene_rules
from geostrata.evaluate.routing import router_metrics
from geostrata.evaluate.runner import SceneEvaluation
from geostrata.evaluate.zeroshot import mentions, zero_shot_metrics


def _row(path, qtype, level, question, answer, pred):
    return {"image_path": path, "qtype": qtype, "level": level, "question": question,
            "answer": answer, "pred": pred}  # fmt: skip


def test_mentions_names_and_plurals_only():
    assert mentions("Are there any storage tanks in the image?", "storage_tank")
    assert mentions("Is there a ship?", "ship")
    assert not mentions("Is there a shipyard?", "ship")
    assert not mentions("Is there a street?", "tree")


def test_zero_shot_splits_every_figure_by_seen_and_unseen():
    truths = {"a": Truth(scene="harbor"), "b": Truth(scene="forest"), "c": Truth(scene="forest")}
    rows = [
        _row("a", "scene", "scene", "What type of scene is this?", "harbor", "harbor"),
        _row("b", "scene", "scene", "What type of scene is this?", "forest", "meadow"),
        _row("c", "scene", "scene", "What type of scene is this?", "forest", "forest"),
        _row("a", "presence", "object", "Is there a ship?", "yes", "no"),
        _row("b", "presence", "object", "Is there a car?", "no", "no"),
    ]
    scenes = SceneEvaluation(None, None, ["harbor", "forest"], ["a", "b", "c"],
                             ["harbor", "forest", "forest"], ["forest", "forest", "forest"],
                             ["harbor", "forest", "meadow"])  # fmt: skip
    hits = {"scene": {"a": False, "b": True, "c": True}, "object": {"a": True, "b": False}}
    z = zero_shot_metrics({"scene": ["harbor"], "object": ["ship"]}, rows, truths, scenes, hits)
    assert (z.scene_open.seen, z.scene_open.unseen) == (0.5, 1.0)
    assert (z.scene_open.n_seen, z.scene_open.n_unseen) == (2, 1)
    assert (z.scene_closed.seen, z.scene_closed.unseen) == (1.0, 0.0)
    assert (z.scene_generated.seen, z.scene_generated.unseen) == (0.5, 1.0)
    assert (z.presence.seen, z.presence.unseen) == (1.0, 0.0)
    assert (z.scene_retrieval.seen, z.scene_retrieval.unseen) == (1.0, 0.0)
    assert "| scene classification, closed set | 100.0 | 0.0 | 2 / 1 |" in z.markdown()
    # every level's retrieval is split by the scene class of the image
    assert (z.retrieval["object"].seen, z.retrieval["object"].unseen) == (0.0, 1.0)
    summary = z.summary()
    assert summary["retrieval_object_unseen"] == 1.0 and summary["retrieval_scene_seen"] == 1.0
    assert summary["scene_open_unseen"] == 1.0 and "retrieval_region_seen" not in summary


def test_nothing_held_out_gives_no_zero_shot_section():
    assert zero_shot_metrics({"scene": [], "object": []}, [], {}) is None


def test_rules_come_from_the_truth_of_every_image():
    truths = {f"p{i}": Truth(scene="parking_lot", objects=("car", "tree")[: 1 + i % 2])
              for i in range(10)}  # fmt: skip
    truths |= {f"f{i}": Truth(scene="forest", objects=("tree",)) for i in range(9)}
    rules = scene_rules(truths, ["car", "tree", "ship"])
    assert rules.requires["parking_lot"] == {"car"}
    assert rules.excludes["parking_lot"] == {"ship"}
    assert "forest" not in rules.requires  # fewer than MIN_IMAGES images: no rule


def test_consistency_counts_all_correct_images_and_contradictions():
    truths = {f"p{i}": Truth(scene="parking_lot", objects=("car",)) for i in range(10)}
    q_scene, q_car = "What type of scene is this?", "Are there any cars in the image?"
    rows = []
    for i, (scene_pred, car_pred) in enumerate(
        [("parking lot", "yes"), ("parking lot", "no"), ("forest", "yes")]
    ):
        p = f"p{i}"
        rows += [_row(p, "scene", "scene", q_scene, "parking lot", scene_pred),
                 _row(p, "presence", "object", q_car, "yes", car_pred),
                 _row(p, "area", "region", "How much pavement?", "31-60%", "31-60%")]  # fmt: skip
    scene_of = {"parking lot": "parking_lot", "forest": "forest"}.get
    m = consistency_metrics(rows, truths, ["car", "ship"], scene_of)
    assert (m.all_levels_correct, m.n_images_all_levels) == (pytest.approx(1 / 3), 3)
    # p1 says parking lot (every parking lot has cars) and "no cars": the one contradiction
    assert (m.contradiction_rate, m.n_images_checked) == (pytest.approx(1 / 3), 3)
    truth_rows = [{**r, "pred": r["answer"]} for r in rows]
    truth_m = consistency_metrics(truth_rows, truths, ["car", "ship"], scene_of)
    assert truth_m.contradiction_rate == 0


class _Router:
    class config:  # noqa: N801
        baseline, experts, levels = "geostrata", True, ["scene", "region", "object"]

    def route_questions(self, emb):
        # question embedding = one-hot of the level the fake router picks
        return torch.as_tensor(emb) * 0.8 + 0.1 * (1 - torch.as_tensor(emb))


def test_router_metrics_score_argmax_against_the_question_level():
    picks = {"scene?": 0, "how many?": 2, "is there?": 1}
    encode = lambda qs: np.eye(3, dtype=np.float32)[[picks[q] for q in qs]]  # noqa: E731
    records = [
        {"question": "scene?", "qtype": "scene", "level": "scene"},
        {"question": "how many?", "qtype": "count", "level": "object"},
        {"question": "is there?", "qtype": "presence", "level": "object"},
    ]
    m = router_metrics(_Router(), encode, records)
    assert m.accuracy == pytest.approx(2 / 3) and m.n == 3
    assert m.per_type_accuracy == {"scene": 1.0, "count": 1.0, "presence": 0.0}
    assert m.per_type["presence"]["region"] == pytest.approx(0.8)
    assert "| presence | object |" in m.markdown()


def test_the_relation_weight_rule_keeps_seen_retrieval_and_then_maximises_unseen():
    from geostrata.evaluate.zeroshot import SeenUnseen, SweepRow, choose_relation_weight

    def row(weight, seen, unseen):
        rate = SeenUnseen(seen, unseen, 100, 50)
        return SweepRow(weight, rate, rate)

    rows = [row(0.0, 0.95, 0.05), row(1.0, 0.945, 0.40), row(2.0, 0.945, 0.40),
            row(4.0, 0.90, 0.70)]  # fmt: skip
    assert choose_relation_weight(rows) == 1.0  # 4.0 loses 5 seen points; 1.0 ties 2.0, smaller
    assert choose_relation_weight(rows, seen_tolerance=0.1) == 4.0
