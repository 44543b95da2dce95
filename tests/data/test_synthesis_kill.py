"""A synthesis killed part-way does not block the next run; a damaged meta.json is named.

Before: a SIGKILL mid-synthesis left a folder "not empty and holds no meta.json ... refusing",
which `geostrata demo --resume` could not get past without deleting it by hand; a corrupt
meta.json raised JSONDecodeError or AttributeError.
"""

import filecmp
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geostrata.cli import app
from geostrata.data.synthetic import synthesize
from geostrata.data.synthetic.writer import IN_PROGRESS
from geostrata.demo import DemoProfile, synthesize_once
from geostrata.errors import AnnotationError, InputError

ROOT = Path(__file__).resolve().parents[2]
N_TRAIN, N_TEST, SIZE, SEED = 80, 20, 64, 7
PROFILE = DemoProfile(N_TRAIN, N_TEST, stage1_steps=1, stage2_steps=1, size=SIZE)
SYNTH = "import sys; from geostrata.data.synthetic import synthesize; " + (
    f"synthesize(sys.argv[1], {N_TRAIN}, {N_TEST}, {SIZE}, {SEED})"
)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_sigkilled_synthesis_is_written_again_on_resume(tmp_path):
    data = tmp_path / "demo" / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen([sys.executable, "-c", SYNTH, str(data)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if len(list((data / "images").glob("*.png"))) >= 3:  # mid-way through the images
            break
        time.sleep(0.02)
    child.kill()
    assert child.wait(timeout=30) == -9, "the synthesis finished before it could be killed"
    assert (data / IN_PROGRESS).is_file() and not (data / "meta.json").exists()

    assert synthesize_once(data, PROFILE, SEED, show_progress=False, workers=1) == data
    fresh = synthesize(tmp_path / "fresh", N_TRAIN, N_TEST, SIZE, SEED)
    names = _files(fresh)
    assert _files(data) == names  # no leftover marker or half-written file
    assert filecmp.cmpfiles(fresh, data, names, shallow=False)[1:] == ([], [])


def test_replacing_a_synthesis_removes_meta_json_first(tmp_path, monkeypatch):
    """A kill while the old outputs are cleared must not leave the old meta.json beside them."""
    from geostrata.data.synthetic import writer

    data = synthesize(tmp_path / "data", 4, 2, SIZE, SEED)
    seen = []

    def rmtree(path, ignore_errors=False):
        seen.append(((data / "meta.json").exists(), (data / IN_PROGRESS).exists()))
        raise KeyboardInterrupt  # the kill, at the first output folder removed

    monkeypatch.setattr(writer.shutil, "rmtree", rmtree)
    with pytest.raises(KeyboardInterrupt):
        synthesize(data, 6, 2, SIZE, SEED)
    assert seen == [(False, True)]
    monkeypatch.undo()
    synthesize(data, 6, 2, SIZE, SEED)
    assert len(list((data / "images").glob("*.png"))) == 8 and not (data / IN_PROGRESS).exists()


def test_a_folder_that_is_not_ours_is_still_refused(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "mine.png").write_bytes(b"user data")
    with pytest.raises(InputError, match=rf"neither meta\.json nor {re.escape(IN_PROGRESS)}"):
        synthesize(tmp_path, 2, 0, SIZE, SEED)
    assert (tmp_path / "images" / "mine.png").read_bytes() == b"user data"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"generator": "geostrata.synthetic"}'])
def test_corrupt_meta_json_is_a_clear_error(tmp_path, text):
    data = tmp_path / "data"
    data.mkdir()
    (data / "meta.json").write_text(text)
    with pytest.raises(AnnotationError, match=r"meta\.json: .*delete that folder and run again"):
        synthesize_once(data, PROFILE, SEED, show_progress=False, workers=1)
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--quick"])
    assert result.exit_code == 1
    assert str(data / "meta.json") in result.output and "delete that folder" in result.output
    assert "Traceback" not in result.output
