"""A user's own class-folder labels train (issue #17, item 5).

Before: the folder's name was taken as a label-map table ("unknown dataset 'png'"), labels the
knowledge base lacked stopped the run, and land-cover labels crashed with KeyError:
'region.built_up' after the feature cache was built. Now labels resolve by name and synonym at the
level their entry lives, unknown ones get an entry, and every problem is one error up front.
"""

import json

import numpy as np
import pytest
import tifffile
import yaml
from typer.testing import CliRunner

from geostrata.cli import app
from geostrata.data.targets import AlignTargetBuilder
from geostrata.errors import AnnotationError, KnowledgeBaseError
from geostrata.knowledge import KnowledgeBase
from geostrata.knowledge.encoder import HashingEncoder
from geostrata.knowledge.labels import ground_labels
from geostrata.session.experiment import DataConfig
from geostrata.session.labels import ground_task
from geostrata.session.samples import load_task
from tests.data.fixtures import write_scene_folder

LABELS = ["developed", "forest", "herbaceous", "water", "made_up_class"]


def _chips(root, labels=LABELS, per_class=2, ext=".png"):
    """`root/png/<label>/*.png` (a folder named like its file type, as users name them) and
    split files listing the first image of each label for training, the second for testing;
    ext=".tif": 4-band uint16 chips (R, G, B, NIR), a brightness per label."""
    folder = root / "png"
    if ext == ".png":
        write_scene_folder(folder, labels, per_class)
    for index, label in enumerate(labels if ext == ".tif" else []):
        for item in range(per_class):
            noise = np.random.default_rng(item).normal(0, 20, (16, 16, 4))
            chip = (400 + 600 * index + noise).astype(np.uint16).transpose(2, 0, 1)
            (folder / label).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(
                folder / label / f"{label}{item:02d}.tif",
                chip,
                photometric="minisblack",
                planarconfig="separate",
            )
    for split, item in (("train", 0), ("test", 1)):
        lines = [f"{label}/{label}{item:02d}{ext}" for label in labels]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    return KnowledgeBase.load(encoder=HashingEncoder(64), cache_dir=tmp_path_factory.mktemp("c"))


def _task(root, folder):
    return load_task(
        DataConfig(
            kind="folder",
            root=str(folder),
            train_split=str(root / "train.txt"),
            eval_split=str(root / "test.txt"),
        )
    )


def test_labels_resolve_at_their_level_and_unknown_ones_get_an_entry(tmp_path, kb):
    folder = _chips(tmp_path)
    task = _task(tmp_path, folder)
    assert task.dataset is None  # the folder's name ("png") is no label-map table
    grounded, added = ground_task(task, kb)
    assert grounded.labels == {
        "scene": ["forest", "made_up_class"],
        "region": ["developed", "herbaceous", "water"],
    }
    assert [(e.id, e.name) for e in added] == [("scene.made_up_class", "made up class")]
    assert kb.resolve("made_up_class", level="scene") == "scene.made_up_class"
    water = str(folder / "water" / "water00.png")
    assert grounded.truths[water].scene == "water"  # still the scene question's answer
    assert grounded.truths[water].regions == {"water": 1.0}  # and the chip's whole region truth
    assert {r["answer"] for r in grounded.train} == {
        "developed",
        "forest",
        "herbaceous",
        "water",
        "made up class",
    }
    targets = AlignTargetBuilder(kb, grounded.dataset, grounded.labels)  # was KeyError: region.*
    rows = targets([grounded.truths[water]])
    assert rows["scene"].sum() == 0
    assert rows["region"][0, kb.level_ids("region").index("region.water")] == 1.0
    forest = targets([grounded.truths[str(folder / "forest" / "forest00.png")]])
    assert forest["scene"][0, kb.level_ids("scene").index("scene.forest")] == 1.0


def test_a_kb_extra_entry_gives_a_label_its_description(tmp_path):
    extra = tmp_path / "mine.jsonl"
    entry = {
        "id": "scene.made_up",
        "level": "scene",
        "name": "made up class",
        "description": "violet squares the survey invented for testing",
    }
    extra.write_text(json.dumps(entry) + "\n", encoding="utf-8")
    kb = KnowledgeBase.load(encoder=HashingEncoder(64), cache_dir=tmp_path / "c", extra=[extra])
    grounding = ground_labels(kb, {"scene": ["made_up_class"]})
    assert grounding.ids == {"scene": {"made_up_class": "scene.made_up"}} and not grounding.added


def test_every_label_problem_is_reported_in_one_error(kb):
    with pytest.raises(KnowledgeBaseError) as err:
        ground_labels(kb, {"scene": ["___", "forest", "x" * 201]}, dataset="png")
    message = str(err.value)
    assert message.startswith("3 label problem(s)")
    assert "'png' names no label-map table" in message and "'___'" in message
    assert "201 characters" in message


def test_a_named_table_is_an_optional_refinement(kb):
    by_name = ground_labels(kb, {"scene": ["Forest"]})
    by_table = ground_labels(kb, {"scene": ["Forest"]}, dataset="nlcd")
    assert by_name.ids["scene"]["Forest"] == "scene.forest"
    assert by_table.ids["scene"]["Forest"] == "region.tree_cover"


def test_a_split_file_lists_every_bad_line_at_once(tmp_path):
    folder = _chips(tmp_path)
    (tmp_path / "bad.txt").write_text("forest/forest00.png\nswamp/a.png\nwater/nope.png\n")
    with pytest.raises(AnnotationError, match="2 bad lines") as err:
        load_task(
            DataConfig(
                kind="folder",
                root=str(folder),
                train_split=str(tmp_path / "bad.txt"),
                eval_split=str(tmp_path / "test.txt"),
            )
        )
    assert "line 2: unknown class 'swamp'" in str(err.value)
    assert "line 3: listed file 'water/nope.png'" in str(err.value)


def test_own_labels_train_evaluate_and_predict_through_the_cli(tmp_path):
    # 4-band uint16 chips: the band adapter and the band statistics on the same run (item 6)
    folder = _chips(tmp_path, ext=".tif")
    extra = tmp_path / "extra.jsonl"
    extra.write_text(
        json.dumps(
            {
                "id": "object.beacon",
                "level": "object",
                "name": "beacon",
                "description": "a small bright mast light seen from above",
            }
        )
        + "\n",
        encoding="utf-8",
    )
    stage = {"max_steps": 2, "batch_size": 5, "warmup_steps": 0, "log_every": 1}
    config = {
        "preset": "tiny",
        "model": {"in_bands": 4},
        "output_dir": str(tmp_path / "run"),
        "eval_batch_size": 5,
        "data": {
            "kind": "folder",
            "root": str(folder),
            "train_split": str(tmp_path / "train.txt"),
            "eval_split": str(tmp_path / "test.txt"),
        },
        "stage1": stage,
        "stage2": stage,
        "tokenizer_vocab": 300,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(path), "--no-eval", "--kb-extra", str(extra)])
    assert result.exit_code == 0, result.output
    model = tmp_path / "run" / "model"
    added = (model / "knowledge_added" / "entries.jsonl").read_text(encoding="utf-8")
    assert "scene.made_up_class" in added and "object.beacon" in added  # kept with the model
    result = CliRunner().invoke(app, ["eval", str(model), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["scene_closed_set"]["n"] == len(LABELS)  # every label, land covers too
    bands = json.loads((model / "processor_config.json").read_text(encoding="utf-8"))["bands"]
    assert bands["in_bands"] == 4 and bands["stats"]["dtype"] == "uint16"
    out = tmp_path / "pred.jsonl"
    chip = str(folder / "water" / "water01.tif")
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(model),
            chip,
            "--out",
            str(out),
            "--question",
            "What type of scene is this?",
        ],
    )
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text(encoding="utf-8"))
    assert "error" not in row and set(row["cues"]) == {"scene", "region", "object"}
