"""data.tasks: one validated switch for which tasks the train and eval records hold."""

import pytest

from geostrata.errors import ConfigError
from geostrata.session.experiment import DataConfig, ExperimentConfig
from geostrata.session.samples import select_tasks


@pytest.mark.parametrize(
    "tasks, needle",
    [
        (["vqa", "grounding"], "unknown task 'grounding'; did you mean 'ground'"),
        (["vqa", "dialog"], "unknown task 'dialog'; known tasks: vqa, cls, caption"),
        ([], "non-empty list"),
        ("vqa", "non-empty list"),
        (["vqa", "vqa"], "names a task twice"),
    ],
)
def test_bad_task_lists_are_refused_naming_the_problem(tasks, needle):
    with pytest.raises(ConfigError, match=needle):
        DataConfig(tasks=tasks)


def test_tasks_from_yaml_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("data:\n  root: d\n  tasks: [vqa, ground, chat]\n")
    assert ExperimentConfig.from_yaml(path).data.tasks == ["vqa", "ground", "chat"]
    cfg = ExperimentConfig.from_yaml(path, ["data.tasks=[region]"])
    assert cfg.data.tasks == ["region"]
    with pytest.raises(ConfigError, match=f"{path}.*unknown task 'regions'"):
        ExperimentConfig.from_yaml(path, ["data.tasks=[regions]"])
    assert DataConfig().tasks is None  # every task the data set has


def test_a_config_saved_with_captions_still_loads():
    old = ExperimentConfig.from_dict({"data": {"root": "d", "captions": False}})
    assert old.data.tasks == ["vqa"]  # a synthetic folder's questions, no captions
    assert ExperimentConfig.from_dict({"data": {"captions": True}}).data.tasks is None
    folder = {"kind": "folder", "captions": False}
    assert ExperimentConfig.from_dict({"data": folder}).data.tasks is None


def test_selecting_tasks_the_data_lacks_is_a_clear_error():
    records = [{"question": "q", "answer": "a"}, {"task": "caption"}]
    assert select_tasks(records, ["vqa"], "training") == records[:1]  # no task: vqa
    with pytest.raises(ConfigError, match=r"selects none of the 2 training records.*"
                       r"\['caption', 'vqa'\]"):  # fmt: skip
        select_tasks(records, ["ground"], "training")
    assert select_tasks([], ["ground"], "evaluation") == []
