"""`geostrata` through Typer's CliRunner: each command group's --help lists that group's own
commands and options, and one real, cheap invocation per group does what it says (files written,
numbers printed, or an error naming the bad value and exit code 1 or 2, never a traceback)."""

import json
import re
import subprocess
import sys

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from geostrata.cli import app
from geostrata.demo import PROFILES, DemoProfile

# Group (as typed after `geostrata`) -> what its --help must list: subcommands, options, arguments.
HELP = {
    "": ["data", "kb", "demo", "train", "eval", "ablate", "chat", "serve", "api", "predict", "map"],
    "data": ["synth", "show", "check", "chips"],
    "data check": ["root", "--kind", "--split", "--prefix", "--image-dir"],
    "data chips": ["raster", "labels", "--out", "--size", "--field", "--min-purity", "--stride",
                   "--split"],
    "map": ["scene", "--model", "--out", "--tile", "--overlap", "--batch-size", "--bands",
            "--cloud-mask", "--to-wgs84"],
    "data synth": ["--out", "--n-train", "--n-test", "--size", "--seed", "--workers", "--holdout"],
    "data show": ["--out", "--n", "--split"],
    "kb": ["build", "query", "stats", "validate"],
    "kb query": ["--level", "-k", "--kb", "--encoder"],
    "demo": ["--out", "--quick", "--profile", "--seed", "--resume", "--set"],
    "train": ["config", "--set", "--resume", "--eval", "--kb-extra"],
    "eval": ["model_dir", "--data", "--kind", "--split", "--prefix", "--out", "--device",
             "--kb-extra", "--task"],
    "ablate": ["--out", "--seeds", "--profile", "--variant", "--table"],
    "chat": ["image", "--question", "--checkpoint", "--max-new-tokens", "--device", "--kb-extra"],
    "serve": ["--checkpoint", "--host", "--port", "--device", "--kb-extra"],
    "api": ["model_dir", "--host", "--port", "--api-key", "--image-root", "--kb-extra"],
    "predict": ["model_dir", "inputs", "--out", "--question", "--kb-extra"],
}
HEAVY = ("torch", "transformers", "faiss", "gradio", "matplotlib")


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def _one_error_line(result, *words: str, after: tuple[str, ...] = ()) -> None:
    """A refusal: exit code 1, one `error:` line naming each of `words`, no traceback; `after`:
    the starts of the progress lines allowed before it."""
    assert result.exit_code == 1, result.output
    *before, last = result.output.strip().splitlines()
    assert last.startswith("error:") and "Traceback" not in result.output, result.output
    assert all(line.startswith(after) for line in before) if after else not before, before
    for word in words:
        assert word in last, (word, last)


@pytest.mark.parametrize("group", list(HELP))
def test_help_lists_the_groups_own_commands_and_options(group):
    result = _run(*group.split(), "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: geostrata {group}".rstrip() in result.output
    for name in HELP[group]:  # the first cell of a row: "│ name ", "│ *  --out ", "│    -k "
        assert re.search(rf"│\s+(?:\*\s+)?{re.escape(name)}\s", result.output), name


def test_help_of_every_group_imports_no_heavy_library():
    """The CLI module says heavy imports stay inside commands: --help must stay instant."""
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom geostrata.cli import app\n"
        f"for group in {list(HELP)!r}:\n"
        "    assert CliRunner().invoke(app, [*group.split(), '--help']).exit_code == 0\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_data_synth_then_show(tmp_path):
    out = tmp_path / "syn"
    result = _run("data", "synth", "--out", str(out), "--n-train", "4", "--n-test", "2",
                  "--size", "32")
    assert result.exit_code == 0, result.output
    assert f"wrote 6 images to {out}" in result.output
    assert len(list((out / "images").glob("*.png"))) == 6
    assert json.loads((out / "meta.json").read_text())["n_train"] == 4
    grid = tmp_path / "grid.png"
    result = _run("data", "show", str(out), "--out", str(grid), "--n", "4")
    assert result.exit_code == 0 and f"wrote {grid}" in result.output, result.output
    assert Image.open(grid).width > 2 * 32  # a grid of enlarged tiles, not one image


def test_data_show_of_a_folder_without_a_synthesis_exits_2(tmp_path):
    result = _run("data", "show", str(tmp_path), "--out", str(tmp_path / "g.png"))
    assert result.exit_code == 2
    assert result.output.startswith("error:") and str(tmp_path) in result.output


def test_kb_query_the_shipped_base(tmp_path):
    result = _run("kb", "query", "ships moored along the piers of a port", "--level", "scene",
                  "-k", "3", "--encoder", "hashing", "--cache-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    ranks = re.findall(r"│\s*(\d)\s*│\s*(scene\.\S+)\s*│", result.output)
    assert [rank for rank, _ in ranks] == ["1", "2", "3"], result.output
    assert "scene.harbor" in {entry for _, entry in ranks}


def test_kb_validate_a_broken_line_names_file_and_line(tmp_path):
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"id": "scene.a", "level": "scene", "name": "a", "description": "x"}\n'
                   '{"id": "scene.b", "level": \n', encoding="utf-8")
    result = _run("kb", "validate", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:2" in " ".join(result.output.split())  # rich may wrap a long path


def test_demo_refuses_an_unknown_override_key(tmp_path, monkeypatch):
    monkeypatch.setitem(PROFILES, "quick", DemoProfile(n_train=4, n_test=2, stage1_steps=1,
                                                       stage2_steps=1, size=32))
    result = _run("demo", "--quick", "--out", str(tmp_path), "--set", "stage2.max_stepz=5")
    # The benchmark is synthesized before the profile's config is built (demo.run_demo).
    _one_error_line(result, "'max_stepz'", "stage2", after=("synthesizing",))
    assert not (tmp_path / "run" / "model").exists()


def test_train_refuses_a_misspelt_key_naming_it_and_the_file(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("preset: tiny-effnet\noutptu_dir: runs/x\n", encoding="utf-8")
    _one_error_line(_run("train", str(config)), "'outptu_dir'", str(config))


def test_eval_prints_the_measured_summary(trained_model_dir, tmp_path):
    out = tmp_path / "report"
    result = _run("eval", str(trained_model_dir), "--out", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    printed = re.search(r"vqa_oa\s*│\s*([\d.]+)%", result.output)
    assert printed, result.output
    assert float(printed[1]) == pytest.approx(100 * metrics["vqa"]["overall_accuracy"], abs=0.051)
    assert f"report: {out / 'report.md'}" in result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [(["--profile", "huge"], "'huge'"), (["--variant", "no-brain"], "'no-brain'")],
)
def test_ablate_refuses_unknown_names(tmp_path, args, named):
    result = _run("ablate", "--out", str(tmp_path), "--seeds", "1", *args)
    _one_error_line(result, named, "known:")
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_chat_names_a_missing_image(trained_model_dir, tmp_path):
    missing = tmp_path / "nope.png"
    result = _run("chat", str(missing), "-q", "Is there a ship?", "--checkpoint",
                  str(trained_model_dir))
    _one_error_line(result, str(missing))


def test_serve_builds_the_app_and_launches_it_where_asked(trained_model_dir, monkeypatch):
    import geostrata.app

    launched = {}

    def fake_launch(blocks, limits, samples, host, port):
        launched.update(blocks=blocks, host=host, port=port)

    monkeypatch.setattr(geostrata.app, "launch_app", fake_launch)
    result = _run("serve", "--checkpoint", str(trained_model_dir), "--port", "7999",
                  "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "serving on http://127.0.0.1:7999" in result.output
    assert launched["host"] == "127.0.0.1" and launched["port"] == 7999
    assert type(launched["blocks"]).__name__ == "Blocks"


def test_serve_refuses_a_folder_without_a_model(tmp_path):
    _one_error_line(_run("serve", "--checkpoint", str(tmp_path)), str(tmp_path), "safetensors")


def test_a_wrong_option_value_is_refused_by_the_parser():
    result = _run("serve", "--port", "0")
    assert result.exit_code == 2 and "--port" in result.output


def test_every_registered_group_is_checked_here():
    registered = set(typer.main.get_command(app).commands)
    assert registered == set(HELP[""]) == {g.split()[0] for g in HELP if g}
