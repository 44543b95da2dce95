import numpy as np
import pytest

from geostrata.data.targets import AlignTargetBuilder, Truth
from geostrata.errors import KnowledgeBaseError


class TinyKB:
    """Three levels with named entries; resolve maps a label to 'level:label'."""

    ids = {
        "scene": ["scene:forest", "scene:harbor"],
        "region": ["region:water", "region:grass"],
        "object": ["object:ship", "object:car", "object:tree"],
    }

    def level_ids(self, level):
        return self.ids[level]

    def resolve(self, label, dataset=None, level=None):
        for at, ids in self.ids.items():
            if f"{at}:{label}" in ids and level in (None, at):
                return f"{at}:{label}"
        raise KnowledgeBaseError(f"unknown label {label!r}")


LABELS = {
    "scene": ["forest", "harbor"],
    "region": ["water", "grass"],
    "object": ["ship", "car", "tree"],
}


def test_targets_are_distributions_over_level_entries():
    builder = AlignTargetBuilder(TinyKB(), "synthetic", LABELS)
    truth = Truth(
        scene="harbor", regions={"water": 0.75, "grass": 0.25}, objects=("ship", "ship", "car")
    )
    out = builder([truth, Truth()])
    assert out["scene"][0].tolist() == [0.0, 1.0]
    np.testing.assert_allclose(out["region"][0].numpy(), [0.75, 0.25])
    np.testing.assert_allclose(out["object"][0].numpy(), [0.5, 0.5, 0.0])
    for level in out:  # no truth -> an all-zero row the loss skips
        assert out[level][1].sum() == 0


def test_unknown_label_fails_at_construction():
    with pytest.raises(KnowledgeBaseError, match="volcano"):
        AlignTargetBuilder(TinyKB(), "synthetic", {"scene": ["volcano"]})


def test_labels_resolve_among_their_level_and_fail_together():
    # "water" is a region entry: as a scene label it was a KeyError ('region:water') deep in
    # the builder; now every label without an entry at its level is named in one error
    with pytest.raises(KnowledgeBaseError, match="2 label") as err:
        AlignTargetBuilder(TinyKB(), None, {"scene": ["water", "forest", "volcano"]})
    assert "'water'" in str(err.value) and "'volcano'" in str(err.value)
    builder = AlignTargetBuilder(TinyKB(), None, {"scene": ["forest"], "region": ["water"]})
    out = builder([Truth(scene="water", regions={"water": 1.0})])
    assert out["scene"][0].sum() == 0 and out["region"][0].tolist() == [1.0, 0.0]


def test_truth_from_synthetic_annotation():
    ann = {
        "scene": "harbor",
        "regions": {"fractions": {"water": 0.6, "pavement": 0.4}},
        "objects": [{"class": "ship", "box": [0, 0, 2, 2]}],
    }
    truth = Truth.from_annotation(ann)
    assert truth.scene == "harbor" and truth.objects == ("ship",) and truth.regions["water"] == 0.6
