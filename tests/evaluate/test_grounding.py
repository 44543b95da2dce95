"""Grounding metrics on hand-made boxes: exact IoU values, Acc@0.5 / Acc@0.25, size buckets of the
true box, unparseable answers counted as misses; the task selection of `geostrata eval`."""

import pytest

from geostrata.boxes import Box
from geostrata.errors import ConfigError, InputError
from geostrata.evaluate.grounding import grounding_metrics, record_box, score_rows
from geostrata.evaluate.tasks import (
    MAX_BUDGET,
    MAX_NEW_TOKENS,
    parse_tasks,
    record_task,
    records_of,
    select_tasks,
    token_budget,
)

LARGE = Box(0, 0, 40, 40)  # 16% of the image
MEDIUM = Box(10, 10, 20, 20)  # 1%
SMALL = Box(50, 50, 54, 54)  # 0.16%


def test_iou_values_thresholds_and_sizes():
    preds = [
        "{<0><0><40><40>}",  # exact: IoU 1
        "the box is {<0><0><40><20>} there",  # half of LARGE: IoU 0.5
        "{<10><10><20><15>} and {<0><0><1><1>}",  # first box counts: half of MEDIUM, IoU 0.5
        "{<50><50><52><54>}",  # half of SMALL: 0.5
        "{<52><50><56><54>}",  # shifted by half: 8 / 24 = 1/3
        "somewhere near the pond",  # no box: a miss
    ]
    truths = [LARGE, LARGE, MEDIUM, SMALL, SMALL, MEDIUM]
    m = grounding_metrics(preds, truths)
    assert m.ious == pytest.approx([1.0, 0.5, 0.5, 0.5, 1 / 3, 0.0])
    assert m.overall.n == 6 and m.n_unparseable == 1
    assert m.unparseable_rate == pytest.approx(1 / 6)
    assert m.overall.acc_50 == pytest.approx(4 / 6)  # IoU >= 0.5 counts
    assert m.overall.acc_25 == pytest.approx(5 / 6)
    assert m.overall.mean_iou == pytest.approx((1 + 0.5 + 0.5 + 0.5 + 1 / 3) / 6)
    assert list(m.per_size) == ["small", "medium", "large"]
    small, medium, large = m.per_size.values()
    assert (small.n, small.acc_50, small.acc_25) == (2, 0.5, 1.0)
    assert small.mean_iou == pytest.approx((0.5 + 1 / 3) / 2)
    assert (medium.n, medium.acc_50, medium.mean_iou) == (2, 0.5, 0.25)  # the miss is medium
    assert (large.n, large.acc_50, large.mean_iou) == (2, 1.0, 0.75)
    d = m.to_dict()
    assert d["unparseable_rate"] == pytest.approx(1 / 6) and d["per_size"]["large"]["n"] == 2
    table = m.markdown()
    assert "| all | 6 | 66.7 | 83.3 |" in table and "1 answers (16.7%) held no box" in table


def test_sizes_absent_from_the_data_are_left_out_and_all_misses_score_zero():
    m = grounding_metrics(["no", "{<90><90><99><99>}"], [LARGE, LARGE])  # disjoint: IoU 0
    assert list(m.per_size) == ["large"]
    assert (m.overall.acc_50, m.overall.acc_25, m.overall.mean_iou) == (0.0, 0.0, 0.0)
    assert m.n_unparseable == 1


def test_rows_gain_their_parsed_box_and_iou():
    rows = [
        {"question_id": "g1", "box": [0, 0, 40, 40], "pred": "{<0><0><40><20>}"},
        {"question_id": "g2", "box": [10, 10, 20, 20], "pred": "I cannot see it"},
    ]
    m = score_rows(rows)
    assert m.overall.mean_iou == pytest.approx(0.25)
    assert rows[0]["pred_box"] == [0, 0, 40, 20] and rows[0]["iou"] == pytest.approx(0.5)
    assert rows[1]["pred_box"] is None and rows[1]["iou"] == 0.0


def test_bad_true_boxes_and_inputs_name_the_record():
    with pytest.raises(InputError, match="record g7: a grounding record needs a 'box'"):
        record_box({"question_id": "g7"})
    with pytest.raises(InputError, match=r"record g8: bad 'box' \[0, 0, 200, 10\]"):
        record_box({"question_id": "g8", "box": [0, 0, 200, 10]})
    with pytest.raises(InputError, match="2 predictions but 1 true boxes"):
        grounding_metrics(["a", "b"], [LARGE])
    with pytest.raises(InputError, match="at least one"):
        grounding_metrics([], [])


def test_tasks_of_records_and_their_selection():
    records = [
        {"qtype": "count", "question": "q"},
        {"qtype": "caption", "question": "c"},  # an older loader's caption: task by qtype
        {"qtype": "instruct", "question": "i"},  # free text: not scored as VQA
        {"qtype": "ground", "task": "ground", "question": "g"},
    ]
    assert [record_task(r) for r in records] == ["vqa", "caption", "vqa", "ground"]
    assert records_of(records, "vqa") == records[:1]
    assert records_of(records, "ground") == records[3:]
    assert parse_tasks(" ground, caption ,ground") == ["ground", "caption"]
    with pytest.raises(ConfigError, match="'grond'.*did you mean 'ground'"):
        parse_tasks("grond")
    assert select_tasks(None, ["vqa", "ground"]) == ["vqa", "ground"]
    assert select_tasks(["ground", "vqa"], ["vqa", "cls", "ground"]) == ["vqa", "ground"]
    with pytest.raises(InputError, match="holds no region data .it holds: vqa, cls"):
        select_tasks(["region"], ["vqa", "cls"])


def test_token_budgets_fit_the_longest_reference_of_open_ended_tasks():
    def words(text, add_special_tokens):  # a tokenizer with one token per word
        return {"input_ids": text.split()}

    short = [{"answer": "a b", "references": ["a b", "c d e"]}]
    assert token_budget("caption", short, words) == MAX_NEW_TOKENS["caption"]  # the floor
    long_ = [{"answer": "x", "references": ["w " * 100, "v " * 150]}]
    assert token_budget("caption", long_, words) == 154
    assert token_budget("region", [{"answer": "w " * 900}], words) == MAX_BUDGET
    assert token_budget("vqa", long_, words) == MAX_NEW_TOKENS["vqa"]  # short answers: fixed
    assert token_budget("ground", [], words) == MAX_NEW_TOKENS["ground"]


def test_grid_ceiling_is_what_whole_token_cells_can_reach():
    from geostrata.evaluate.grounding import grid_ceiling

    cell = Box(25, 50, 50, 75)  # exactly one cell of a 4 x 4 grid
    small = Box(30, 30, 35, 35)  # 0.25 % of the image
    assert grid_ceiling([cell], 4) == 1.0
    assert grid_ceiling([small], 4) == 0.0  # a 25 x 25 cell has IoU 0.04 with it
    assert grid_ceiling([small], 20) == 1.0  # a 5 x 5 grid cell is the box
    assert grid_ceiling([cell, small], 4) == 0.5
    assert grid_ceiling([small], 4, threshold=0.04) == 1.0
    with pytest.raises(InputError, match="grid"):
        grid_ceiling([cell], 0)


def test_centre_errors_compare_with_the_shifted_truths():
    from geostrata.evaluate.grounding import centre_errors

    rows = [{"box": [0, 0, 10, 10], "pred": "{<0><0><10><10>}"},
            {"box": [90, 90, 100, 100], "pred": "{<90><90><100><100>}"},
            {"box": [0, 90, 10, 100], "pred": "no box"}]  # fmt: skip
    own, shifted = centre_errors(rows)
    assert own == 0.0  # the two parsed boxes are exact; the unparsed one is left out
    assert shifted == pytest.approx(90.0)  # pairs: 127.3, 90, 90 -> median 90
