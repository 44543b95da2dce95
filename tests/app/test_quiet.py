"""What chat, serve and eval print is ours: loading a saved model and answering a question add no
library output (transformers' weight-loading bars, its config-type warning) and no warnings."""

import logging
import warnings

import pytest

from geostrata.inference import load_model, predict

SEEN_BY_USERS = (UserWarning, RuntimeWarning, FutureWarning)  # Python shows these by default


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"[{record.name}] {record.getMessage()}")


@pytest.fixture
def library_logs():
    """WARNING+ records of every logger; transformers' does not propagate to the root, and its
    handler keeps the stderr of import time, which capfd does not see."""
    records = _Records()
    loggers = [logging.getLogger(), logging.getLogger("transformers")]
    for logger in loggers:
        logger.addHandler(records)
    yield records.lines
    for logger in loggers:
        logger.removeHandler(records)


def test_load_model_and_predict_print_nothing(trained_model_dir, sample_png, capfd, library_logs):
    capfd.readouterr()  # what the session fixtures printed is not this test's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(trained_model_dir)
        prediction = predict(loaded, sample_png, "Is there a ship?")
    out, err = capfd.readouterr()
    assert out == "", f"load_model / predict wrote to stdout:\n{out}"
    assert err == "", f"load_model / predict wrote to stderr:\n{err}"
    assert library_logs == []
    shown = [f"{w.category.__name__}: {w.message}" for w in caught
             if issubclass(w.category, SEEN_BY_USERS)]
    assert shown == []
    assert set(prediction.cues) == set(loaded.model.config.levels)  # it did answer


def test_progress_bars_are_off_only_while_loading(trained_model_dir):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # the default, unless HF_HUB_DISABLE_PROGRESS_BARS is set
    load_model(trained_model_dir)
    assert hf_logging.is_progress_bar_enabled()  # scoped to our loading, not switched off for good


def test_saving_a_model_prints_nothing(trained_model_dir, tmp_path, capfd):
    import dataclasses

    from geostrata.session import Session, save_session

    loaded = load_model(trained_model_dir)
    cfg = dataclasses.replace(loaded.cfg, output_dir=str(tmp_path))
    session = Session(cfg, None, loaded.knowledge, loaded.processor, loaded.model, None, None, None)
    capfd.readouterr()
    saved = save_session(session)
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), f"save_session printed:\n{out}{err}"
    assert (saved / "model.safetensors").is_file()
