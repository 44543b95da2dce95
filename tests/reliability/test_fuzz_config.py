"""Fuzz the configuration files and flags: TrainConfig / ExperimentConfig YAML, dotted overrides.

tests/train/test_config.py and tests/pipeline/test_experiment.py check named bad values; here
hypothesis writes random mappings (non-string keys included), retypes one field of a valid file,
damages its bytes, and throws random `key.sub=value` flags. Each either builds a config that is
usable (stages resolve, it saves and reads back identically) or raises ConfigError naming the
file and the key, or the flag.
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from geostrata.errors import ConfigError, GeoStrataError
from geostrata.model.settings import SUBCONFIGS, setting_fields
from geostrata.session.experiment import DataConfig, ExperimentConfig, apply_overrides
from geostrata.session.train_config import TrainConfig
from tests.reliability._fuzz import (
    FUZZ,
    damage_bytes,
    mutate_tree,
    outcome,
    text_noise,
    yaml_keys,
    yaml_values,
)

pytestmark = pytest.mark.timeout(120)  # small inputs: a hang fails fast
TRAIN_FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
DATA_FIELDS = [f.name for f in dataclasses.fields(DataConfig)]
EXPERIMENT_FIELDS = [f.name for f in dataclasses.fields(ExperimentConfig)]
MODEL_FIELDS = [f.name for f in setting_fields()] + list(SUBCONFIGS)
BOOL_MODEL_FIELDS = {f.name for f in setting_fields() if f.type == "bool"}
VALID_TRAIN = {"max_steps": 10, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "save_every": 2}
VALID_EXPERIMENT = {
    "preset": "tiny-effnet", "model": {"retrieval": True}, "seed": 1, "output_dir": "runs/x",
    "data": {"kind": "synthetic", "root": "runs/data", "max_train": 8},
    "stage1": {"max_steps": 2, "batch_size": 4, "lr": 2e-3, "warmup_steps": 1},
    "stage2": {"max_steps": 6, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1},
}


def _write_yaml(path, value) -> None:
    path.write_text(yaml.safe_dump(value, allow_unicode=True), encoding="utf-8")


def _check_train(cfg: TrainConfig) -> None:
    for name in ("max_steps", "batch_size", "grad_accum", "save_every", "seed"):
        assert type(getattr(cfg, name)) is int
    assert all(type(getattr(cfg, n)) is float for n in ("lr", "weight_decay", "max_grad_norm"))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def _check_experiment(cfg: ExperimentConfig, tmp_path) -> None:
    """A loaded config must be usable, not merely constructed: its model config builds too."""
    from geostrata.model import GeoStrataConfig

    GeoStrataConfig.from_preset(cfg.preset, **cfg.model)
    assert cfg.stage("stage1").output_dir.endswith("stage1")
    _check_train(cfg.stage("stage2"))
    cfg.save(tmp_path / "saved.yaml")
    again = ExperimentConfig.from_yaml(tmp_path / "saved.yaml")
    assert yaml.safe_dump(again.to_dict()) == yaml.safe_dump(cfg.to_dict())


@FUZZ
@given(mapping=st.dictionaries(st.sampled_from(TRAIN_FIELDS) | yaml_keys, yaml_values, max_size=5))
def test_random_train_config_mappings(tmp_path, mapping):
    path = tmp_path / "train.yaml"
    _write_yaml(path, mapping)
    cfg = outcome(lambda: TrainConfig.from_yaml(path), path)
    if cfg is not None:
        _check_train(cfg)


@FUZZ
@given(name=st.sampled_from(TRAIN_FIELDS), value=yaml_values)
def test_one_retyped_train_field_is_named(tmp_path, name, value):
    path = tmp_path / "train.yaml"
    _write_yaml(path, {**VALID_TRAIN, name: value})
    cfg = outcome(lambda: TrainConfig.from_yaml(path), path, names=(name,))
    if cfg is not None:
        _check_train(cfg)
        assert getattr(cfg, name) == value  # what loaded is what the file said


@FUZZ
@given(data=st.data(), which=st.sampled_from(["train", "experiment"]))
def test_random_and_damaged_yaml_text(tmp_path, data, which):
    valid = VALID_TRAIN if which == "train" else VALID_EXPERIMENT
    if data.draw(st.booleans(), label="random text"):
        content = data.draw(st.text(max_size=60), label="text").encode("utf-8", "surrogatepass")
    else:
        content = damage_bytes(yaml.safe_dump(valid).encode("utf-8"), data)
    path = tmp_path / f"{which}.yaml"
    path.write_bytes(content)
    if which == "train":
        cfg = outcome(lambda: TrainConfig.from_yaml(path), path)
        if cfg is not None:
            _check_train(cfg)
    else:
        cfg = outcome(lambda: ExperimentConfig.from_yaml(path), path)
        if cfg is not None:
            _check_experiment(cfg, tmp_path)


@FUZZ
@given(data=st.data())
def test_mutated_experiment_yaml(tmp_path, data):
    document = mutate_tree(VALID_EXPERIMENT, data, yaml_values)
    path = tmp_path / "experiment.yaml"
    _write_yaml(path, document)
    cfg = outcome(lambda: ExperimentConfig.from_yaml(path), path)
    if cfg is not None:
        _check_experiment(cfg, tmp_path)


def test_valid_experiment_loads(tmp_path):
    _write_yaml(tmp_path / "experiment.yaml", VALID_EXPERIMENT)
    _check_experiment(ExperimentConfig.from_yaml(tmp_path / "experiment.yaml"), tmp_path)


sections = st.sampled_from([("", EXPERIMENT_FIELDS), ("data", DATA_FIELDS),
                            ("stage1", TRAIN_FIELDS), ("stage2", TRAIN_FIELDS),
                            ("model", MODEL_FIELDS)])


@FUZZ
@given(field=sections.flatmap(lambda sf: st.tuples(st.just(sf[0]), st.sampled_from(sf[1]))),
       value=yaml_values)
@example(field=("model", "retrieval"), value="false")  # quoted: was read as True
@example(field=("model", "top_k"), value="many")  # was a TypeError when the model was built
@example(field=("model", "image_std"), value=[0, 0, 0])  # was NaN logits in training
def test_one_retyped_experiment_field_is_named(tmp_path, field, value):
    section, name = field
    document = yaml.safe_load(yaml.safe_dump(VALID_EXPERIMENT))
    (document[section] if section else document)[name] = value
    path = tmp_path / "experiment.yaml"
    _write_yaml(path, document)
    cfg = outcome(lambda: ExperimentConfig.from_yaml(path), path, names=(name,))
    if cfg is not None:
        _check_experiment(cfg, tmp_path)
        if section == "model" and name in BOOL_MODEL_FIELDS:
            assert type(cfg.model[name]) is bool, cfg.model  # "false" must not mean True


segments = st.sampled_from(EXPERIMENT_FIELDS + TRAIN_FIELDS + DATA_FIELDS + ["", "zz"])
override_keys = st.lists(segments, min_size=1, max_size=3).map(".".join)
override_values = yaml_values.map(lambda v: yaml.safe_dump(v).removesuffix("\n...\n").strip())
overrides = st.lists(
    st.tuples(override_keys, override_values).map("=".join) | text_noise, max_size=4)


def _resolve(cfg: ExperimentConfig, key: str) -> object:
    node: object = cfg
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


@FUZZ
@given(flags=overrides)
@example(flags=["stage2.max_steps=9", "model.retrieval=false", "data.root=elsewhere", "seed=4"])
@example(flags=["stage2=3", "stage2.lr=0.1"])  # a scalar where a section is: named, not a crash
def test_dotted_overrides(flags):
    try:
        cfg = ExperimentConfig.from_dict(apply_overrides(VALID_EXPERIMENT, flags), "<flags>")
    except GeoStrataError as error:
        assert isinstance(error, ConfigError)
        message = str(error)
        assert "<flags>" in message or any(repr(flag) in message for flag in flags), message
        return
    keys = [flag.partition("=")[0].strip() for flag in flags]
    for i, flag in enumerate(flags):  # a flag no later flag overwrote holds its parsed value
        overwritten = any(k == keys[i] or keys[i].startswith(k + ".") for k in keys[i + 1 :])
        if not overwritten:
            got, want = _resolve(cfg, keys[i]), yaml.safe_load(flag.partition("=")[2])
            assert got == want or (got != got and want != want), flag  # NaN equals NaN here
