"""TrainConfig: validation, YAML loading with overrides, clear errors."""

import pytest

from geostrata.errors import ConfigError
from geostrata.train import TrainConfig


def test_defaults_are_valid_and_roundtrip():
    cfg = TrainConfig()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.mixed_precision == "no"


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("max_steps", 0, "max_steps"),
        ("batch_size", 2.5, "batch_size"),
        ("grad_accum", True, "grad_accum"),
        ("lr", 0, "lr"),
        ("min_lr_ratio", 1.5, "min_lr_ratio"),
        ("mixed_precision", "fp8", "fp8"),
        ("warmup_steps", 5000, "warmup_steps"),
        ("max_grad_norm", -1, "max_grad_norm"),
        ("output_dir", "", "output_dir"),
    ],
)
def test_invalid_values_name_the_field(field, value, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainConfig(**{field: value})


def test_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("max_steps: 50\nlr: 1.0e-3\nmixed_precision: bf16\n")
    cfg = TrainConfig.from_yaml(path, max_steps=7)
    assert (cfg.max_steps, cfg.lr, cfg.mixed_precision) == (7, 1e-3, "bf16")
    assert isinstance(TrainConfig(lr=1).lr, float)


def test_yaml_bare_no_means_no_mixed_precision(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("mixed_precision: no\n")  # YAML 1.1 reads this as false
    assert TrainConfig.from_yaml(path).mixed_precision == "no"
    with pytest.raises(ConfigError, match="mixed_precision"):
        TrainConfig(mixed_precision=True)


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("max_steps: 5\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"learning_rate.*train\.yaml"):
        TrainConfig.from_yaml(path)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("max_steps: 5\nlr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml line \d+"):
        TrainConfig.from_yaml(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.from_yaml(path)


def test_bad_value_in_file_names_file(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("batch_size: -2\n")
    with pytest.raises(ConfigError, match=r"train\.yaml.*batch_size"):
        TrainConfig.from_yaml(path)
