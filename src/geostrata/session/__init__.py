"""What a run or a trained model holds: its experiment config, data records, image and feature
caches, processor, knowledge base and model; built once here for training, inference and
evaluation alike."""

from geostrata.session.experiment import DataConfig, ExperimentConfig, apply_overrides
from geostrata.session.samples import SCENE_QUESTION, TaskData, load_task, scene_answer
from geostrata.session.session import (
    CONFIG_FILE,
    MODEL_DIR,
    PROCESSOR_DIR,
    LoadedModel,
    Session,
    load_knowledge,
    load_model,
    open_session,
    prepare,
    save_session,
)
from geostrata.session.train_config import TrainConfig

__all__ = [
    "CONFIG_FILE",
    "MODEL_DIR",
    "PROCESSOR_DIR",
    "SCENE_QUESTION",
    "DataConfig",
    "ExperimentConfig",
    "LoadedModel",
    "Session",
    "TaskData",
    "TrainConfig",
    "apply_overrides",
    "load_knowledge",
    "load_model",
    "load_task",
    "open_session",
    "prepare",
    "save_session",
    "scene_answer",
]
