"""No untrusted code runs: weights come only from safetensors (or torch.load(weights_only=True)),
configs only through yaml.safe_load, and the source tree has no unsafe loader or eval on data.

tests/train/test_checkpoint.py::test_malicious_pickle_is_refused covers a tampered optimizer.pt;
here a whole saved model folder is tampered with, and the source is scanned with `ast` so a
future `torch.load(path)` or `pickle.load` fails the suite.
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from geostrata.errors import CheckpointError, ConfigError, GeoStrataError
from geostrata.train import checkpoint as ck

SRC = Path(__file__).resolve().parents[2] / "src" / "geostrata"


class _Evil:
    """Unpickling this creates `marker`: the proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_file(path: Path, marker: Path, fmt: str) -> None:
    if fmt == "torch_zip":
        torch.save({"weight": _Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"weight": _Evil(marker)}, protocol=2))


@pytest.fixture
def model_copy(trained_model_dir, tmp_path):
    return Path(shutil.copytree(trained_model_dir, tmp_path / "model"))


@pytest.mark.parametrize("fmt", ["torch_zip", "raw_pickle"])
def test_pickle_posing_as_safetensors_never_runs(model_copy, tmp_path, fmt):
    from geostrata.inference import load_model

    marker = tmp_path / "pwned"
    _evil_file(model_copy / "model.safetensors", marker, fmt)
    with pytest.raises(Exception):  # noqa: B017 - the type is checked in the test below
        load_model(model_copy)
    assert not marker.exists()


def test_pickle_posing_as_safetensors_gives_checkpoint_error(model_copy, tmp_path):
    from geostrata.inference import load_model

    _evil_file(model_copy / "model.safetensors", tmp_path / "pwned", "torch_zip")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(model_copy)


@pytest.mark.parametrize("fmt", ["torch_zip", "raw_pickle"])
def test_verify_safetensors_refuses_pickles_without_running_them(tmp_path, fmt):
    marker, path = tmp_path / "pwned", tmp_path / "model.safetensors"
    _evil_file(path, marker, fmt)
    with pytest.raises(CheckpointError, match=rf"{path}: not a safetensors file"):
        ck.verify_safetensors(path)
    assert not marker.exists()
    good = ck.save_checkpoint(tmp_path / "ok", 1, {"w": torch.zeros(2)}, {}, {})
    ck.verify_safetensors(good / ck.WEIGHTS_FILE)  # a real one passes


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.ckpt"])
def test_model_folder_with_pickle_weights_only_is_refused(model_copy, tmp_path, name):
    from geostrata.inference import load_model

    marker = tmp_path / "pwned"
    (model_copy / "model.safetensors").unlink()
    _evil_file(model_copy / name, marker, "torch_zip")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(model_copy)
    assert not marker.exists()


def test_pickle_beside_safetensors_is_ignored(model_copy, tmp_path):
    from geostrata.inference import load_model

    marker = tmp_path / "pwned"
    _evil_file(model_copy / "pytorch_model.bin", marker, "torch_zip")
    loaded = load_model(model_copy)
    assert loaded.model is not None and not marker.exists()


def test_yaml_object_tag_in_saved_config_is_refused(model_copy, tmp_path):
    from geostrata.inference import load_model

    marker = tmp_path / "pwned"
    (model_copy / "experiment.yaml").write_text(
        f"preset: !!python/object/apply:builtins.open ['{marker}', 'w']\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="experiment.yaml"):
        load_model(model_copy)
    assert not marker.exists()


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _llm_layers(n):
    return lambda cfg: cfg["text_config"].update(num_hidden_layers=n)


# Each tampered folder used to load (a random or dropped layer, exit 0) or raise a raw traceback.
FOLDER_TAMPERING = [
    ("config.json", _llm_layers(3), r"config.json describes: missing keys \[llm.model.layers.2"),
    ("config.json", _llm_layers(1), r"config.json describes: unexpected keys \[llm.model.layers.1"),
    ("config.json", lambda c: c.update(hidden_size=64),
     r"config.json describes: shape mismatch \[.*: file \(.*128.*\) vs module \(.*64"),
    ("config.json", lambda c: c.update(top_k="many"), r"config.json: top_k='many': expected an"),
    ("config.json", lambda c: c.update(top_kk=3), r"unknown key 'top_kk'.*did you mean 'top_k'"),
    ("processor_config.json", lambda c: c.update(num_image_tokens=20),
     "processor files do not match config.json: num_image_tokens: processor 20, model 21"),
    ("processor_config.json", lambda c: c.pop("mean"), "processor_config.json: not a valid"),
]


@pytest.mark.parametrize(("name", "change", "named"), FOLDER_TAMPERING)
def test_model_folder_is_verified_against_its_config_before_weights_are_used(
    model_copy, name, change, named
):
    from geostrata.inference import load_model

    _edit_json(model_copy / name, change)
    with pytest.raises(CheckpointError, match=named) as caught:
        load_model(model_copy)
    assert "\n" not in str(caught.value)  # one line, not HF's load report


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "processor_config.json"])
def test_bad_json_in_a_model_folder_names_the_file_and_line(model_copy, name):
    from geostrata.inference import load_model

    (model_copy / name).write_text('{"a": 1,\n\n  ]\n')  # the error is on line 3
    with pytest.raises(CheckpointError, match=rf"{model_copy / name}:3, column 3: invalid JSON"):
        load_model(model_copy)


def test_training_checkpoint_with_pt_weights_is_refused(tmp_path):
    """A step folder whose weights are model.pt (pickle) is incomplete: never picked, never read."""
    good = ck.save_checkpoint(tmp_path, 1, {"w": torch.zeros(2)}, {}, {})
    bad = ck.save_checkpoint(tmp_path, 2, {"w": torch.ones(2)}, {}, {})
    marker = tmp_path / "pwned"
    (bad / ck.WEIGHTS_FILE).unlink()
    _evil_file(bad / "model.pt", marker, "torch_zip")
    assert ck.latest_checkpoint(tmp_path) == good
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        ck.load_checkpoint(bad)
    assert not marker.exists()


# ---------------------------------------------------------------- source scan
def _call_name(node: ast.Call) -> str:
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _keyword_true(node: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in node.keywords)


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """`file:line: what` for every unsafe loader, code evaluation or remote-code default."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name == "torch.load" and not _keyword_true(node, "weights_only"):
                found.append(f"{where}: torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load",
                        "yaml.load", "yaml.unsafe_load", "yaml.full_load", "marshal.loads"):
                found.append(f"{where}: {name}")
            builtin = isinstance(node.func, ast.Name)
            if builtin and name in ("eval", "exec", "compile", "__import__"):
                found.append(f"{where}: builtin {name}()")
            if _keyword_true(node, "trust_remote_code") or _keyword_true(node, "allow_pickle"):
                found.append(f"{where}: {name}(trust_remote_code/allow_pickle=True)")
        if isinstance(node, ast.arguments):
            positional = node.posonlyargs + node.args
            names = [a.arg for a in positional + node.kwonlyargs]
            defaults = [None] * (len(positional) - len(node.defaults)) + list(node.defaults)
            defaults += list(node.kw_defaults)
            for arg, default in zip(names, defaults, strict=True):
                risky = arg in ("trust_remote_code", "weights_only")
                if risky and isinstance(default, ast.Constant):
                    if default.value is (arg == "trust_remote_code"):
                        found.append(f"{where}: unsafe default {arg}={default.value}")
    return found


def test_scanner_flags_each_unsafe_pattern():
    bad = ("import torch, pickle, yaml\n"
           "torch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\n"
           "yaml.load(t)\neval(text)\nexec(code)\n"
           "AutoModel.from_pretrained(x, trust_remote_code=True)\n"
           "def f(path, trust_remote_code=True): ...\n")
    assert len(unsafe_calls(bad)) == 8
    good = ("torch.load(p, map_location='cpu', weights_only=True)\nmodel.to(d).eval()\n"
            "yaml.safe_load(t)\ndef f(trust_remote_code=False): ...\n")
    assert unsafe_calls(good) == []


def test_source_tree_has_no_unsafe_loading():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20  # the scan really looked at the package
    found = [hit for f in files for hit in unsafe_calls(f.read_text(encoding="utf-8"), str(f))]
    assert found == [], "\n".join(found)


def test_errors_are_all_geostrata_errors():
    """Every type the reliability tests accept derives from GeoStrataError."""
    from geostrata import errors

    types = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(types) >= 8 and all(issubclass(t, GeoStrataError) for t in types)
