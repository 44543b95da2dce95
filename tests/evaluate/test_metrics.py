"""Metrics: normalisation, AA vs OA, levels, count bins, classification, question-only prior."""

import math

import numpy as np
import pytest

from geostrata.errors import InputError
from geostrata.evaluate import (
    classification_metrics,
    normalize_answer,
    question_prior_accuracy,
    question_prior_predictions,
    vqa_accuracy,
)
from geostrata.evaluate.metrics import count_bin_index, count_bin_labels


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Yes.", "yes"),
        ("  YES  ", "yes"),
        ("Three", "3"),
        ("twenty-one", "21"),
        ("sixty seven cars", "67 cars"),
        ("The  big   house!", "big house"),
        ("an airport", "airport"),
        ("1,000", "1000"),
        ("2.5", "2.5"),
        ("5.", "5"),
        ("don't", "dont"),
        ("No", "no"),
        ("ten", "10"),
        (3, "3"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def _rec(pred, answer, qtype, level=None, question="q"):
    return {"pred": pred, "answer": answer, "qtype": qtype, "level": level, "question": question}


def _hand_example():
    return [
        _rec("yes", "yes", "presence", "object"),
        _rec("Yes.", "yes", "presence", "object"),
        _rec("no", "no", "presence", "scene"),
        _rec("no", "yes", "presence", "scene"),  # wrong
        _rec("4", "3", "count", "object"),  # wrong
        _rec("two", "3", "count", "region"),  # wrong
        _rec("yes", "yes", "comp", "region"),
        _rec("no", "No", "comp", "region"),
    ]


def test_aa_differs_from_oa_on_hand_example():
    m = vqa_accuracy(_hand_example())
    # presence 3/4, count 0/2, comp 2/2 -> OA = 5/8, AA = mean(3/4, 0, 1)
    assert m.per_type["presence"].correct == 3 and m.per_type["presence"].total == 4
    assert m.per_type["count"].accuracy == 0.0 and m.per_type["comp"].accuracy == 1.0
    assert m.overall_accuracy == pytest.approx(5 / 8)
    assert m.average_accuracy == pytest.approx((3 / 4 + 0 + 1) / 3)
    assert m.n == 8 and m.prior is None


def test_per_level_grouping():
    m = vqa_accuracy(_hand_example())
    assert {k: (g.correct, g.total) for k, g in m.per_level.items()} == {
        "object": (2, 3), "region": (2, 3), "scene": (1, 2)}
    no_levels = vqa_accuracy([_rec("a", "a", "t")])
    assert no_levels.per_level == {}


def test_count_bins_exact_and_binned():
    records = [
        _rec("0", "0", "count"),
        _rec("7", "5", "count"),  # same bin 1-10, not exact
        _rec("twelve", "12", "count"),
        _rec("1500", "2000", "count"),
        _rec("50", "2000", "count"),  # different bin
        _rec("many", "40", "count"),  # not a number: wrong in both senses
        _rec("3", "3", "presence"),  # not a count question
    ]
    bins = {b.label: b for b in vqa_accuracy(records).count_bins}
    assert set(bins) == {"0", "1-10", "11-100", ">1000"}  # empty bins are left out
    small = bins["1-10"]
    assert (small.exact_correct, small.binned_correct, small.total) == (0, 1, 1)
    assert (bins["11-100"].exact_correct, bins["11-100"].total) == (1, 2)
    assert (bins[">1000"].binned_correct, bins[">1000"].total) == (1, 2)
    custom = vqa_accuracy(records, count_bins=(5, 50))
    assert [b.label for b in custom.count_bins] == ["<=5", "6-50", ">50"]


def test_count_bin_helpers():
    assert count_bin_labels((0, 10, 100, 1000)) == ["0", "1-10", "11-100", "101-1000", ">1000"]
    assert [count_bin_index(v, (0, 10, 100, 1000)) for v in (0, 1, 10, 11, 1000, 1001)] == [
        0, 1, 1, 2, 3, 4]
    with pytest.raises(InputError, match="increasing"):
        count_bin_labels((10, 5))


def test_missing_field_is_named():
    with pytest.raises(InputError, match="'qtype'"):
        vqa_accuracy([{"pred": "a", "answer": "a", "level": None}])


def test_classification_confusion_on_tiny_example():
    classes = ["forest", "river", "airport"]
    y_true = ["forest", "forest", "river", "river", "river", "airport"]
    y_pred = ["forest", "river", "river", "river", "beach", "airport"]
    m = classification_metrics(y_true, y_pred, classes)
    expected = np.array([[1, 1, 0], [0, 2, 0], [0, 0, 1]])
    np.testing.assert_array_equal(m.confusion, expected)
    assert m.overall_accuracy == pytest.approx(4 / 6)
    assert m.per_class_accuracy == pytest.approx({"forest": 1 / 2, "river": 2 / 3, "airport": 1.0})
    assert m.mean_per_class_accuracy == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m.n_unknown == 1 and m.unknown_predictions == {"beach": 1}
    assert m.support == {"forest": 2, "river": 3, "airport": 1}
    assert m.to_dict()["confusion"] == expected.tolist()


def test_classification_class_without_samples_and_bad_input():
    m = classification_metrics([0, 0, 1], [0, 1, 1], classes=[0, 1, 2])
    assert math.isnan(m.per_class_accuracy["2"])
    assert m.mean_per_class_accuracy == pytest.approx((1 / 2 + 1) / 2)
    with pytest.raises(InputError, match="'x'"):
        classification_metrics(["x"], [0], classes=[0, 1])
    with pytest.raises(InputError, match="2 labels"):
        classification_metrics([0, 1], [0], classes=[0, 1])


def test_question_prior_baseline():
    train = [
        _rec(None, "yes", "presence", question="Is there a road?"),
        _rec(None, "yes", "presence", question="is there a road"),
        _rec(None, "no", "presence", question="Is there a road?"),
        _rec(None, "no", "presence", question="Is there a lake?"),
        _rec(None, "no", "presence", question="Is there a farm?"),
        _rec(None, "3", "count", question="How many buildings?"),
        _rec(None, "three", "count", question="How many buildings?"),
        _rec(None, "5", "count", question="How many buildings?"),
    ]
    test = [
        _rec("no", "yes", "presence", "object", question="IS THERE A ROAD"),  # question prior: yes
        _rec("3", "3", "count", "object", question="How many buildings?"),  # question prior: 3
        _rec("yes", "no", "presence", "scene", question="Is there a river?"),  # type prior: no
        _rec("3", "5", "count", "object", question="How many cars?"),  # type prior: 3
        _rec("rural", "rural", "scene", "scene", question="What is it?"),  # overall: no
    ]
    assert question_prior_predictions(train, test) == ["yes", "3", "no", "3", "no"]
    prior = question_prior_accuracy(train, test)
    assert prior.overall_accuracy == pytest.approx(3 / 5)
    assert prior.per_type["scene"].accuracy == 0.0
    m = vqa_accuracy(test, train_records=train)
    assert m.prior is not None and m.prior.overall_accuracy == prior.overall_accuracy
    assert m.overall_accuracy == pytest.approx(2 / 5)  # the "model" here is worse than the prior
    assert m.to_dict()["prior"]["overall_accuracy"] == prior.overall_accuracy
