"""Caption metrics (pycocoevalcap, offline): direction of the scores on hand-made captions, the
same values as pycocoevalcap called directly, several references, and clear errors.

The process's shared CaptionScorer (one METEOR JVM, which takes seconds to load) serves them all,
and every evaluation of the test session after them."""

import pytest

from geostrata.errors import DependencyError, InputError
from geostrata.evaluate import captioning
from geostrata.evaluate.captioning import (
    CaptionScorer,
    require_java,
    row_references,
    shared_scorer,
)

REFS = [
    ["A dense urban residential scene with 12 buildings, 5 cars and 1 tree, mostly grass."],
    ["A sparse rural farmland scene with 3 trees, mostly bare soil with some water."],
    ["A medium urban industrial scene with 8 buildings and 2 cars, crossed by a road."],
    ["A sparse rural forest scene with 30 trees, mostly forest."],
]
UNRELATED = ["a cat sitting on a sofa", "blue sky", "the quick brown fox", "an old piano in a hall"]


@pytest.fixture(scope="module")
def scorer():
    if captioning.shutil.which("java") is None:
        pytest.fail("caption metrics need Java: apt-get install default-jre-headless")
    first = shared_scorer()
    assert shared_scorer() is first and first.alive
    return first


def test_identical_captions_score_top_and_unrelated_ones_near_zero(scorer):
    same = scorer.score([r[0] for r in REFS], REFS)
    assert same.bleu_4 == pytest.approx(1.0, abs=1e-6)
    assert same.bleu_1 == pytest.approx(1.0, abs=1e-6)
    assert same.meteor == pytest.approx(1.0) and same.rouge_l == pytest.approx(1.0)
    assert same.cider > 5.0  # CIDEr-D x10: identical captions of distinct images score high
    assert (same.n, same.n_references, same.n_empty) == (4, 4, 0)
    other = scorer.score(UNRELATED, REFS)
    assert other.bleu_4 < 1e-3 and other.cider < 0.1
    assert other.meteor < 0.1 and other.rouge_l < 0.2
    for name, value in other.scores().items():
        assert value < same.scores()[name], name


def test_values_equal_a_direct_pycocoevalcap_call_with_several_references(scorer):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = [REFS[0], [*REFS[1], "Two trees near a pond on bare soil."], REFS[2], REFS[3]]
    preds = ["A dense urban scene with buildings and cars.", "two trees near water", "a road",
             REFS[3][0].upper()]  # fmt: skip
    ours = scorer.score(preds, refs)
    gts = PTBTokenizer().tokenize(
        {i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)}
        | {10 + i: [{"caption": p}] for i, p in enumerate(preds)}
    )
    res = {i: gts.pop(10 + i) for i in range(len(preds))}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [ours.bleu_1, ours.bleu_2, ours.bleu_3, ours.bleu_4] == pytest.approx(bleu)
    assert ours.rouge_l == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert ours.cider == pytest.approx(Cider().compute_score(gts, res)[0])
    # pycocoevalcap's own Meteor object (the scorer's process: a second JVM would cost seconds)
    assert ours.meteor == pytest.approx(scorer._meteor.compute_score(gts, res)[0])
    assert ours.n_references == 5 and 0.0 < ours.bleu_4 < 1.0
    # the second reference of image 1 is what its prediction matches: without it, lower scores
    fewer = scorer.score(preds, [REFS[0], REFS[1], REFS[2], REFS[3]])
    assert fewer.bleu_1 < ours.bleu_1 and fewer.meteor < ours.meteor


def test_an_empty_prediction_is_scored_and_counted(scorer):
    m = scorer.score(["", REFS[1][0]], REFS[:2])
    assert m.n_empty == 1 and m.n == 2
    assert 0.0 < m.rouge_l < 1.0 and 0.0 < m.meteor < 1.0
    table = m.markdown()
    assert "| BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR | ROUGE-L | CIDEr |" in table
    assert f"| {100 * m.bleu_1:.1f} |" in table and "1 empty predictions" in table


def test_rows_take_their_references_or_their_answer():
    assert row_references({"answer": "a b", "references": ["x", " ", "y"]}) == ["x", "y"]
    assert row_references({"answer": "a b"}) == ["a b"]
    with pytest.raises(InputError, match="caption:7.*no reference"):
        row_references({"question_id": "caption:7", "answer": "", "references": [""]})
    with pytest.raises(InputError, match="list of texts"):
        row_references({"question_id": "q", "references": "one string"})


def test_bad_inputs_name_what_is_wrong(scorer):
    with pytest.raises(InputError, match="2 predictions but 1 reference"):
        scorer.score(["a", "b"], [["a"]])
    with pytest.raises(InputError, match="prediction 0: needs a list"):
        scorer.score(["a"], [[]])
    with pytest.raises(InputError, match="at least one"):
        scorer.score([], [])


def test_missing_java_names_the_package(monkeypatch):
    monkeypatch.setattr(captioning.shutil, "which", lambda name: None)
    with pytest.raises(DependencyError, match="default-jre-headless"):
        require_java()
    with pytest.raises(DependencyError, match="--task"):
        CaptionScorer()  # refused before any process starts


def test_meteor_runs_with_the_lean_collector_and_the_environment_is_restored(scorer):
    import os
    import sys
    from pathlib import Path

    assert captioning.METEOR_JAVA_OPTIONS not in os.environ.get("JAVA_TOOL_OPTIONS", "")
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    environ = Path(f"/proc/{scorer._meteor.meteor_p.pid}/environ").read_bytes()
    assert captioning.METEOR_JAVA_OPTIONS.encode() in environ
