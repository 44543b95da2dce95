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
