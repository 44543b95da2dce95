import json
import re

import pytest
from typer.testing import CliRunner

from geostrata.ablate import PRIOR_ROW, VARIANTS, ZEROSHOT_VARIANTS, AblationResult, markdown_table
from geostrata.cli import app
from geostrata.demo import PROFILES, DemoProfile
from geostrata.model import GeoStrataConfig

CELL = re.compile(r"^(?:–|(\d+\.\d) ± (\d+\.\d))$")  # "–" where a variant lacks the column


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
    assert table.splitlines()[-1] == f"| {PRIOR_ROW} | 35.0 | – |"  # no prior for level_scene


def test_no_prior_no_prior_row():
    result = AblationResult({"full": [{"vqa_oa": 0.6}]}, prior={}, wall_s=0.0)
    assert PRIOR_ROW not in markdown_table(result)


@pytest.mark.parametrize("table", [VARIANTS, ZEROSHOT_VARIANTS])
def test_every_variant_changes_what_it_names(table):
    full = GeoStrataConfig.from_preset("tiny-effnet", **table["full"]).to_dict()
    for name, overrides in table.items():
        config = GeoStrataConfig.from_preset("tiny-effnet", **overrides).to_dict()
        for key, value in overrides.items():
            assert config[key] == value, (name, key)
        if name != "full":
            assert any(config[key] != full[key] for key in overrides), name


def _rows(table: str) -> dict[str, list[str]]:
    lines = table.strip().splitlines()
    assert lines[1].startswith("|---")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in [lines[0], *lines[2:]]]
    return {row[0]: row[1:] for row in cells}


def test_cli_ablation_prints_one_row_per_variant_and_the_prior(tmp_path, monkeypatch):
    """A real `geostrata ablate` (two variants, one seed) on a tiny profile, its table read back."""
    tiny = DemoProfile(n_train=24, n_test=8, stage1_steps=1, stage2_steps=2, batch_size=8)
    monkeypatch.setitem(PROFILES, "tiny", tiny)
    out, table_file = tmp_path / "ablate", tmp_path / "table.md"
    variants = ["full", "llava baseline"]
    args = ["ablate", "--out", str(out), "--seeds", "1", "--profile", "tiny",
            "--table", str(table_file)]
    result = CliRunner().invoke(app, args + [a for v in variants for a in ("--variant", v)])
    assert result.exit_code == 0, result.output
    table = table_file.read_text(encoding="utf-8")
    assert table.strip() in result.output
    rows = _rows(table)
    header = rows.pop("variant")
    assert list(rows) == [*variants, PRIOR_ROW] and header[:2] == ["vqa_oa", "vqa_aa"]
    saved = json.loads((out / "ablation.json").read_text())
    for variant in variants:
        (summary,) = saved["runs"][variant]  # one seed
        for column, cell in zip(header, rows[variant], strict=True):
            match = CELL.match(cell)
            assert match, (variant, column, cell)
            if column in summary:
                assert float(match[1]) == pytest.approx(100 * summary[column], abs=0.051)
                assert match[2] == "0.0"  # one seed: no spread
            else:
                assert cell == "–"
    llava = dict(zip(header, rows["llava baseline"], strict=True))
    assert llava["retrieval_scene"] == "–"  # the baseline retrieves nothing; full does
    prior = dict(zip(header, rows[PRIOR_ROW], strict=True))
    assert float(prior["vqa_oa"]) == pytest.approx(100 * saved["prior"]["prior_oa"], abs=0.051)
    assert float(prior["vqa_aa"]) == pytest.approx(100 * saved["prior"]["prior_aa"], abs=0.051)
    assert all(cell == "–" for column, cell in prior.items() if column not in ("vqa_oa", "vqa_aa"))


def test_the_zero_shot_tables_in_the_results_doc_are_rendered_from_the_saved_json():
    """docs/results.md shows `render_zeroshot` of docs/results/ablation_zeroshot.json verbatim,
    and every variant of the zero-shot table was measured on all three folds."""
    from pathlib import Path

    from geostrata.ablate import ZEROSHOT_TABLES, render_zeroshot

    root = Path(__file__).resolve().parents[2]
    result = AblationResult.load(root / "docs/results/ablation_zeroshot.json")
    assert list(result.runs) == list(ZEROSHOT_VARIANTS)
    assert all(len(runs) == 3 for runs in result.runs.values())
    rendered = render_zeroshot(result)
    assert rendered.count("| full |") == len(ZEROSHOT_TABLES)
    assert rendered in (root / "docs/results.md").read_text(encoding="utf-8")


def test_the_tasks_tables_in_the_results_doc_are_rendered_from_the_saved_json():
    """docs/results.md shows the captioning / grounding ablation (3 seeds of each table variant)
    and its 144-token diagnostic as `markdown_table` renders the saved JSON."""
    from pathlib import Path

    from geostrata.ablate import TASK_COLUMNS, TASK_TABLE_VARIANTS, markdown_table

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs/results.md").read_text(encoding="utf-8")
    result = AblationResult.load(root / "docs/results/ablation_tasks.json")
    assert list(result.runs) == list(TASK_TABLE_VARIANTS)
    assert all(len(runs) == 3 for runs in result.runs.values())
    assert markdown_table(result, TASK_COLUMNS) in doc
    fine = AblationResult.load(root / "docs/results/ablation_tasks_144_tokens.json")
    assert list(fine.runs) == ["full, 144 object tokens"]
    assert markdown_table(fine, TASK_COLUMNS) in doc
