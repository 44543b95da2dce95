import json

import pytest

from geostrata.ablate import VARIANTS, AblationResult, markdown_table


def test_table_reports_mean_and_std_per_variant(tmp_path):
    runs = {"full": [{"vqa_oa": 0.6, "level_scene": 0.9}, {"vqa_oa": 0.8, "level_scene": 0.9}],
            "llava baseline": [{"vqa_oa": 0.5}, {"vqa_oa": 0.5}]}
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps({"runs": runs, "prior": {"prior_oa": 0.35}}))
    result = AblationResult.load(path)
    assert result.mean_std("full", "vqa_oa") == pytest.approx((0.7, 0.1))
    table = markdown_table(result)
    assert "| full | 70.0 ± 10.0 | 90.0 ± 0.0 |" in table
    assert "| llava baseline | 50.0 ± 0.0 | – |" in table  # a column the variant lacks
    assert table.splitlines()[0] == "| variant | vqa_oa | level_scene |"


def test_every_variant_is_a_valid_model_override():
    from geostrata.model import GeoStrataConfig

    for overrides in VARIANTS.values():
        GeoStrataConfig.from_preset("tiny-effnet", **overrides)
