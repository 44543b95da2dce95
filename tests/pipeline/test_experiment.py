import pytest

from geostrata.errors import ConfigError
from geostrata.session.experiment import ExperimentConfig, apply_overrides


def test_overrides_reach_nested_fields():
    data = apply_overrides(
        {}, ["model.retrieval=false", "stage2.max_steps=7", "stage2.warmup_steps=1", "data.root=/x"]
    )
    cfg = ExperimentConfig.from_dict(data)
    assert cfg.model == {"retrieval": False}
    assert (
        cfg.stage2.max_steps == 7 and cfg.stage2.batch_size == ExperimentConfig().stage2.batch_size
    )
    assert cfg.data.root == "/x"


def test_stage_writes_under_output_dir_with_run_seed():
    cfg = ExperimentConfig(output_dir="/tmp/run", seed=3)
    stage = cfg.stage("stage1")
    assert stage.output_dir == "/tmp/run/stage1" and stage.seed == 3


def test_yaml_round_trip(tmp_path):
    cfg = ExperimentConfig.from_dict(apply_overrides({}, ["model.top_k=2", "seed=5"]))
    cfg.save(tmp_path / "e.yaml")
    again = ExperimentConfig.from_yaml(tmp_path / "e.yaml")
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("unknown_key: 1\n", "unknown_key"),
        ("data: {kind: nope}\n", "nope"),
        ("stage1: {lr: -1}\n", "lr"),
        ("data: [1, 2\n", "line"),
    ],
)
def test_bad_yaml_names_the_problem(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        ExperimentConfig.from_yaml(path)


def test_malformed_override():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["no_equals_sign"])


def test_a_real_preset_without_local_weights_fails_clearly():
    from geostrata.model import GeoStrataConfig
    from geostrata.session.session import pretrained_tokenizer

    cfg = GeoStrataConfig.from_preset("base")
    with pytest.raises(ConfigError, match="not on this machine"):
        pretrained_tokenizer(cfg)


def test_a_local_llm_tokenizer_is_used_with_image_token(tmp_path):
    from geostrata.model import GeoStrataConfig, train_tokenizer
    from geostrata.session.session import pretrained_tokenizer

    train_tokenizer(["a harbor with ships", "a forest"], vocab_size=200).save_pretrained(tmp_path)
    cfg = GeoStrataConfig.from_preset("tiny", text_name_or_path=str(tmp_path))
    tok = pretrained_tokenizer(cfg)
    assert tok.convert_tokens_to_ids("<image>") == cfg.image_token_id and tok.pad_token is not None
    wrong = GeoStrataConfig.from_preset("tiny", text_name_or_path=str(tmp_path), image_token_id=7)
    with pytest.raises(ConfigError, match="image_token_id=7"):
        pretrained_tokenizer(wrong)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from geostrata.demo import DemoProfile, synthesize_once

    root = tmp_path_factory.mktemp("tiny")
    profile = DemoProfile(n_train=8, n_test=4, stage1_steps=1, stage2_steps=1, batch_size=4)
    data = synthesize_once(root / "data", profile, seed=0, show_progress=False, workers=1)
    return profile, data


def test_knowledge_dim_follows_the_knowledge_base_unless_set(tmp_path, tiny_data):
    from geostrata.errors import KnowledgeBaseError
    from geostrata.knowledge import HashingEncoder, KnowledgeBase
    from geostrata.session import prepare

    profile, data = tiny_data
    KnowledgeBase.load("default", encoder=HashingEncoder(96)).save(tmp_path / "kb")
    cfg = profile.experiment(data, tmp_path / "run", seed=0, extra=[f"knowledge={tmp_path}/kb"])
    session = prepare(cfg, show_progress=False)
    assert session.model.config.knowledge_dim == 96  # the preset says 384 (MiniLM)
    cfg.model["knowledge_dim"] = 384  # an explicit width that the base cannot feed
    with pytest.raises(KnowledgeBaseError, match="dim 96"):
        prepare(cfg, show_progress=False)


def test_features_over_the_budget_are_not_cached_and_training_still_runs(
    tmp_path, tiny_data, capsys
):
    from geostrata.session import prepare
    from geostrata.train.pipeline import run_experiment

    profile, data = tiny_data
    cfg = profile.experiment(data, tmp_path / "cached", seed=0)
    session = prepare(cfg, show_progress=False)
    n_images = len({r["image_path"] for r in session.task.train + session.task.eval})
    assert session.features is not None and len(session.features._rows) == n_images
    one_image = session.features.bytes_per_image / 2**30
    cfg = profile.experiment(
        data, tmp_path / "uncached", seed=0, extra=[f"feature_cache_gib={one_image * 2}"]
    )
    result = run_experiment(cfg, show_progress=False)
    assert result.session.features is None
    assert "not caching tower features" in capsys.readouterr().out
    assert result.stages["stage2"].final_step == 1


@pytest.mark.parametrize("value", [-1, True, "lots"])
def test_cache_budgets_must_be_non_negative_numbers(value):
    with pytest.raises(ConfigError, match="feature_cache_gib"):
        ExperimentConfig(feature_cache_gib=value)


def _yaml(tmp_path, text):
    path = tmp_path / "experiment.yaml"
    path.write_text("data: {root: /data/x}\n" + text)
    return path


@pytest.mark.parametrize(
    "text, needle",
    [
        ("model: {retreival: false}\n", "unknown key 'retreival' in model; did you mean 'retr"),
        ("stage2: {max_step: 3}\n", "unknown key 'max_step'.*did you mean 'max_steps'"),
        ("seeed: 1\n", "unknown key 'seeed'.*did you mean 'seed'"),
        ("model: {text_config: {hidden_size: abc}}\n", r"model.text_config.hidden_size='abc'"),
    ],
)
def test_typos_at_any_depth_name_key_file_and_closest_key(tmp_path, text, needle):
    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError, match=needle) as caught:
        ExperimentConfig.from_yaml(path)
    assert str(path) in str(caught.value)


def test_data_typo_is_named_too(tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text("data: {rooot: /data/x}\n")
    with pytest.raises(ConfigError, match="unknown key 'rooot'.*did you mean 'root'"):
        ExperimentConfig.from_yaml(path)


@pytest.mark.parametrize(
    "model, needle",
    [
        ('{retrieval: "false"}', r"model.retrieval='false': expected true or false \(without q"),
        ('{experts: "no"}', "model.experts='no': expected true or false"),
        ('{top_k: "many"}', "model.top_k='many': expected an integer"),
        ('{hidden_size: "abc"}', "model.hidden_size='abc': expected an integer"),
        ("{region_grid: 1.5}", "model.region_grid=1.5: expected an integer"),
        ("{num_heads: true}", "model.num_heads=True: expected an integer"),
        ("{image_mean: [0.5]}", r"model.image_mean=\[0.5\]: expected 3 numbers"),
        ("{image_std: [0, 0, 0]}", r"model.image_std=\[0.0, 0.0, 0.0\]: every channel must be > 0"),
        ("{image_std: [a, b, c]}", "model.image_std=.*expected a list of numbers"),
        ("{levels: scene}", "model.levels='scene': expected a list of strings"),
        ("{gate_init: .nan}", "model.gate_init=nan: expected a number"),
        ("{lambda_align: " + "9" * 400 + "}", "model.lambda_align=9999.*: expected a number"),
        ("{object_max_tokens: 0}", "model.object_max_tokens=0: must be >= 1 or null"),
    ],
)
def test_model_values_are_type_checked_when_the_file_is_read(tmp_path, model, needle):
    path = _yaml(tmp_path, f"model: {model}\n")
    with pytest.raises(ConfigError, match=needle):
        ExperimentConfig.from_yaml(path)


def test_valid_model_values_load_normalised(tmp_path):
    path = _yaml(tmp_path, "model: {retrieval: false, gate_init: 1, levels: [object, scene]}\n")
    cfg = ExperimentConfig.from_yaml(path)
    assert cfg.model == {"retrieval": False, "gate_init": 1, "levels": ["object", "scene"]}


def test_vocab_size_override_says_what_to_set_instead(tmp_path):
    path = _yaml(tmp_path, "")
    with pytest.raises(ConfigError, match="model.vocab_size: set by the tokenizer.*tokenizer_voc"):
        ExperimentConfig.from_yaml(path, ["model.vocab_size=500"])


def test_override_typo_names_the_flag():
    with pytest.raises(ConfigError, match="'model.top_kk=2'.*did you mean 'top_k'"):
        apply_overrides({}, ["model.top_kk=2"])


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "seed: 3\n", "data: {}\n"])
def test_a_file_without_data_root_is_refused_naming_the_file(tmp_path, text):
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"{path}: an experiment must say where its data is"):
        ExperimentConfig.from_yaml(path)
    cfg = ExperimentConfig.from_yaml(path, ["data.root=/data/x"])  # an override may give it
    assert cfg.data.root == "/data/x"


def test_checking_an_experiment_file_imports_neither_torch_nor_transformers(tmp_path):
    """What makes `geostrata train bad.yaml` fail in about a second instead of after the import
    of torch and transformers (seconds), data, the knowledge base and experiment.yaml."""
    import subprocess
    import sys

    path = _yaml(tmp_path, "model: {retreival: false}\n")
    code = (
        "import sys\n"
        "from geostrata.errors import ConfigError\n"
        "from geostrata.session.experiment import ExperimentConfig\n"
        f"try:\n    ExperimentConfig.from_yaml({str(path)!r})\n"
        "except ConfigError as e:\n    print('refused:', e)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "did you mean 'retrieval'" in out.stdout
    assert out.stdout.strip().endswith("[]"), out.stdout


def test_a_config_rejected_by_prepare_leaves_the_saved_experiment_yaml(tmp_path):
    from geostrata.errors import GeoStrataError
    from geostrata.session import CONFIG_FILE
    from geostrata.train.pipeline import run_experiment

    run = tmp_path / "run"
    good = ExperimentConfig.from_dict({"output_dir": str(run), "data": {"root": str(tmp_path)}})
    run.mkdir()
    good.save(run / CONFIG_FILE)
    before = (run / CONFIG_FILE).read_bytes()
    bad = ExperimentConfig.from_dict(
        {"output_dir": str(run), "data": {"root": str(tmp_path / "missing")}, "seed": 7}
    )
    with pytest.raises(GeoStrataError, match="missing"):
        run_experiment(bad, show_progress=False)
    assert (run / CONFIG_FILE).read_bytes() == before


def test_a_kill_while_saving_the_processor_leaves_no_half_folder(tmp_path, tiny_data, monkeypatch):
    """The tokenizer is written first and processor_config.json last: a kill between them used to
    leave a processor/ folder that neither a fresh start nor a resume could use."""
    import geostrata.model.processing as processing
    from geostrata.session import PROCESSOR_DIR, prepare

    class Killed(BaseException):
        pass

    def killed(*args, **kwargs):
        raise Killed

    profile, data = tiny_data
    cfg = profile.experiment(data, tmp_path / "run", seed=0)
    with monkeypatch.context() as patch:
        patch.setattr(processing, "write_text_atomic", killed)  # after the tokenizer files
        with pytest.raises(Killed):
            prepare(cfg, show_progress=False)
    assert not (tmp_path / "run" / PROCESSOR_DIR).exists()
    session = prepare(cfg, show_progress=False)  # starts fresh
    assert (tmp_path / "run" / PROCESSOR_DIR / processing.CONFIG_NAME).is_file()
    assert session.processor.num_image_tokens == session.model.config.num_image_tokens
