"""What a run or a trained model holds: its experiment config, data records, image and feature
caches, processor, knowledge base and model; built once here for training, inference and
evaluation alike.

Names are imported on first use, so `geostrata.session.experiment` (read and validated before
anything heavy runs) imports without torch.
"""

from geostrata.lazy import lazy_exports

_SESSION = "geostrata.session.session"
_EXPORTS = {
    "DataConfig": "geostrata.session.experiment",
    "ExperimentConfig": "geostrata.session.experiment",
    "apply_overrides": "geostrata.session.experiment",
    "SCENE_QUESTION": "geostrata.session.samples",
    "TaskData": "geostrata.session.samples",
    "load_task": "geostrata.session.samples",
    "scene_answer": "geostrata.session.samples",
    "TrainConfig": "geostrata.session.train_config",
    **{name: _SESSION for name in (
        "CONFIG_FILE", "MODEL_DIR", "PROCESSOR_DIR", "LoadedModel", "Session", "cache_features",
        "load_knowledge",
        "load_model", "open_session", "prepare", "rebuild_model", "save_session",
    )},
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
