"""One experiment end to end: data -> knowledge base -> model -> stage 1 -> stage 2 -> saved model.

`run_experiment` builds the session (`geostrata.session.prepare`), trains both stages (resumable)
and saves the model, processor and config into `output_dir/model`, the folder that `geostrata
eval`, `chat` and `serve` load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from geostrata.device import is_main_process
from geostrata.session import (
    CONFIG_FILE,
    MODEL_DIR,
    ExperimentConfig,
    Session,
    cache_features,
    open_session,
    prepare,
    rebuild_model,
    save_session,
)
from geostrata.train.checkpoint import load_checkpoint
from geostrata.train.engines import gather_full_state
from geostrata.train.loop import TrainResult, train
from geostrata.train.stages import STAGES, stage_parameters, trainable_names


@dataclass
class ExperimentResult:
    session: Session
    stages: dict[str, TrainResult]
    model_dir: Path


def run_experiment(
    cfg: ExperimentConfig, resume: bool = False, show_progress: bool = True
) -> ExperimentResult:
    """Train stage 1 then stage 2 (each resumable), save the model, return the session.

    Each stage has its own engine lifetime: its own Accelerator, and a model no earlier engine
    touched. Stage 2 runs on a model rebuilt from the run's seed (and `init_from`) with stage 1's
    final checkpoint loaded over it, so no DDP wrapper, FSDP sharding or DeepSpeed ZeRO hook of
    stage 1 is on the module stage 2 prepares, and a resumed stage 2 starts from exactly what an
    uninterrupted one did.
    """
    session = prepare(cfg, show_progress)  # rejects a bad config before it replaces the saved one
    if is_main_process():
        cfg.save(Path(cfg.output_dir) / CONFIG_FILE)  # atomic
    allowed = trainable_names(session.model)
    stages: dict[str, TrainResult] = {}
    for stage in STAGES:
        if stages:  # a later stage: start from the previous one's saved state, on a fresh module
            previous = stages[STAGES[STAGES.index(stage) - 1]].checkpoint
            assert previous is not None, "a finished stage always leaves its last checkpoint"
            rebuild_model(session, load_checkpoint(previous).weights_path)
        params = stage_parameters(session.model, stage, allowed)
        if stage != STAGES[0] and _vision_trained(allowed):
            cache_features(session, show_progress)  # e.g. a band adapter settled in stage 1
        stages[stage] = train(
            session.model,
            session.task.train,
            session.collator(True),
            cfg.stage(stage),
            params=params,
            resume=resume,
            show_progress=show_progress,
        )
    session.model.requires_grad_(False)
    path = Path(cfg.output_dir) / MODEL_DIR
    full = gather_full_state(session.model)  # FSDP / ZeRO-3: every process takes part
    if is_main_process():
        save_session(session, full)
    if full is not None:
        # A sharded model needs every process in every forward, but evaluation gives processes
        # shards of unequal length: evaluate the saved model, whole on each process, instead.
        torch.distributed.barrier()
        session = open_session(path, show_progress=show_progress)
    return ExperimentResult(session, stages, path)


def _vision_trained(allowed: set[str]) -> bool:
    """Some vision parameter could train when the model was built (its features were not
    cached then; they may be now that stage 2 leaves them frozen)."""
    return any(name.startswith("vision.") for name in allowed)
