"""One explicit training loop on HF Accelerate, with checkpoints and exact resume.

The same code runs on CPU, one GPU, or N processes under ``torchrun`` / ``accelerate launch``.
What makes resume exact (bit-identical on the same hardware):

* the data order is a pure function of (seed, epoch): an endless stream of seeded permutations,
  cut into per-process micro-batches, so a resumed run starts at the very next sample;
* the checkpoint stores weights, optimizer, scheduler, grad scaler, and every process's python /
  numpy / torch RNG states, taken at an optimizer-step boundary;
* nothing in the loop draws from the global RNGs except the model itself (no DataLoader seeding).

How each engine (one process / DDP, FSDP2, DeepSpeed ZeRO) saves and restores the model and
optimizer is `geostrata.train.engines`; the loop only calls its ``gather`` and ``restore``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, send_to_device, set_seed
from torch.utils.data import IterableDataset, default_collate

from geostrata.atomic import remove_dead_temp_dirs
from geostrata.errors import CheckpointError, ConfigError
from geostrata.session.train_config import TrainConfig
from geostrata.train.checkpoint import (
    capture_rng_state,
    checkpoint_dir_name,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from geostrata.train.engines import Engine, engine_for, norm_value
from geostrata.train.history import append_entry, rewind_history
from geostrata.train.progress import Progress, ProgressBar
from geostrata.train.recipe import (
    build_optimizer,
    build_scheduler,
    make_accelerator,
    named_trainable,
)
from geostrata.train.sampling import SeededSampleStream


@dataclass
class StepInfo:
    """Passed to ``on_step`` after each optimizer step (and after its checkpoint, if any)."""

    step: int
    epoch: int
    loss: float  # this process's mean micro-batch loss
    lr: float  # the learning rate this step used
    checkpoint: Path | None  # the checkpoint written at this step, if one was


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    final_step: int
    history: list[dict[str, float]]  # every logged step of the run, earlier calls included
    wall_time_s: float  # this call only
    samples_per_s: float  # global samples per second over this call
    checkpoint: Path | None  # the last checkpoint written or resumed from


@dataclass
class _Run:
    """The objects one training run threads through its helpers."""

    cfg: TrainConfig
    accelerator: Accelerator
    engine: Engine  # saves and restores the model and optimizer the engine's way
    model: torch.nn.Module  # as returned by the engine's prepare
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    named: list[tuple[str, torch.nn.Parameter]]  # the trainable parameters, in model order

    @property
    def samples_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.accelerator.num_processes


@dataclass
class _StepStats:
    """What one optimizer step measured, before any cross-process reduction."""

    losses: torch.Tensor  # (grad_accum,) detached micro-batch losses
    parts: dict[str, torch.Tensor]  # other ``*_loss`` outputs, averaged over micro-batches
    grad_norm: float | None  # before clipping; None when clipping is off
    lr: float  # the learning rate the step used


def train(
    model: torch.nn.Module,
    dataset: Sequence[Any],
    collate_fn: Callable[[list[Any]], dict[str, Any]] | None,
    cfg: TrainConfig,
    *,
    params: Sequence[torch.nn.Parameter] | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    accelerator: Accelerator | None = None,
    resume: bool | str | Path = False,
    show_progress: bool = True,
) -> TrainResult:
    """Train ``model`` for ``cfg.max_steps`` optimizer steps; see the module docstring.

    ``model(**batch)`` must return an object with ``.loss``; other scalar tensor attributes named
    ``*_loss`` are logged too. ``params`` defaults to the parameters with ``requires_grad``.
    ``resume=True`` continues from the newest checkpoint in ``cfg.output_dir`` (a fresh start if
    there is none); a path resumes from that checkpoint. ``dataset`` is indexed (``len`` +
    ``[]``); ``collate_fn=None`` uses torch's ``default_collate``.
    """
    run = _prepare(model, cfg, params, accelerator or make_accelerator(cfg))
    progress = Progress(dataset_len=_dataset_len(dataset))
    _start_or_resume(run, resume, progress)
    run.model.train()
    batches = _micro_batches(run, dataset, collate_fn or default_collate, progress.samples_seen)
    start_step, t0 = progress.step, time.perf_counter()
    show = show_progress and run.accelerator.is_main_process
    with ProgressBar(show, cfg.max_steps, start_step) as bar:
        window = (t0, start_step)  # (time, step) when the current logging window opened
        while progress.step < cfg.max_steps:
            stats = _optimizer_step(run, batches)
            progress.step += 1
            progress.samples_seen += run.samples_per_step
            if progress.step % cfg.log_every == 0 or progress.step == cfg.max_steps:
                bar.update(_log(run, progress, stats, window))
                window = (time.perf_counter(), progress.step)
            saved = _save(run, progress) if _should_save(progress.step, cfg) else None
            bar.advance()
            if on_step is not None:
                epoch = int(progress.epoch())
                on_step(StepInfo(progress.step, epoch, float(stats.losses.mean()), stats.lr, saved))
    wall = time.perf_counter() - t0
    samples = (progress.step - start_step) * run.samples_per_step
    run.accelerator.unwrap_model(run.model, keep_fp32_wrapper=False)  # drop the autocast wrapper
    if accelerator is None:  # this call's own engine ends with it (its wrappers, buffers, memory)
        run.accelerator.free_memory()
    return TrainResult(
        progress.step, progress.history, wall, samples / max(wall, 1e-9), progress.last_checkpoint
    )


def _prepare(
    model: torch.nn.Module,
    cfg: TrainConfig,
    params: Sequence[torch.nn.Parameter] | None,
    accelerator: Accelerator,
) -> _Run:
    steps = accelerator.gradient_accumulation_steps
    if steps != cfg.grad_accum:
        raise ConfigError(
            f"the Accelerator accumulates over {steps} micro-batches but cfg.grad_accum is "
            f"{cfg.grad_accum}; build it with "
            f"Accelerator(gradient_accumulation_steps={cfg.grad_accum})"
        )
    engine = engine_for(accelerator, cfg)
    named = named_trainable(model, params)
    optimizer = build_optimizer(named, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    # The scheduler is stepped here, once per optimizer step, not prepared: Accelerate's wrapper
    # would step it once per process, and DeepSpeed only runs schedulers of its own kind.
    model, optimizer = engine.prepare(accelerator, model, optimizer)
    accelerator.step = 0  # Accelerate's micro-batch counter decides when gradients sync
    named = engine.rebind(accelerator, model, named)
    return _Run(cfg, accelerator, engine, model, optimizer, scheduler, named)


def _should_save(step: int, cfg: TrainConfig) -> bool:
    return step == cfg.max_steps or (cfg.save_every > 0 and step % cfg.save_every == 0)


def _dataset_len(dataset: Any) -> int:
    indexed = hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")
    if not indexed or isinstance(dataset, IterableDataset):
        raise ConfigError(
            f"train() needs an indexed dataset (len and []), got {type(dataset).__name__}"
        )
    return len(dataset)


def _micro_batches(
    run: _Run, dataset: Sequence[Any], collate: Callable, start: int
) -> Iterator[dict[str, Any]]:
    """This process's collated micro-batches, on its device, from global sample ``start`` on."""
    acc, cfg = run.accelerator, run.cfg
    stream = SeededSampleStream(
        len(dataset), cfg.batch_size, cfg.seed, start, acc.num_processes, acc.process_index
    )  # built here, not in the generator: an empty dataset fails before training starts
    return (send_to_device(collate([dataset[i] for i in ids]), acc.device) for ids in stream)


def _optimizer_step(run: _Run, batches: Iterator[dict[str, Any]]) -> _StepStats:
    """``grad_accum`` forward/backward passes, then one clipped update and a scheduler step."""
    acc, cfg = run.accelerator, run.cfg
    lr = run.optimizer.param_groups[0]["lr"]
    losses, parts, grad_norm = [], {}, None
    for _ in range(cfg.grad_accum):
        with acc.accumulate(run.model):
            out = run.model(**next(batches))
            acc.backward(out.loss)  # Accelerate divides by grad_accum
            if acc.sync_gradients and cfg.max_grad_norm > 0:
                params = [p for _, p in run.named]
                grad_norm = norm_value(acc.clip_grad_norm_(params, cfg.max_grad_norm))
            run.optimizer.step()  # a no-op until the last micro-batch (always under DeepSpeed,
            # whose engine steps inside acc.backward at the last micro-batch)
            run.optimizer.zero_grad(set_to_none=True)
        losses.append(out.loss.detach().float())
        for name, value in _named_losses(out).items():
            parts[name] = parts.get(name, 0.0) + value / cfg.grad_accum
    if not acc.sync_gradients:
        raise RuntimeError("gradient accumulation fell out of step with the optimizer")
    if not acc.optimizer_step_was_skipped:  # fp16 overflow skips the update
        run.scheduler.step()
    return _StepStats(torch.stack(losses), parts, grad_norm, lr)


def _named_losses(out: Any) -> dict[str, torch.Tensor]:
    """The scalar tensor attributes of a model output named ``*_loss``."""
    if is_dataclass(out):
        items = {f.name: getattr(out, f.name) for f in fields(out)}
    elif isinstance(out, dict):
        items = dict(out)
    else:
        items = dict(vars(out))
    return {
        k: v.detach().float()
        for k, v in items.items()
        if k.endswith("_loss") and isinstance(v, torch.Tensor) and v.numel() == 1
    }


def _log(
    run: _Run, progress: Progress, stats: _StepStats, window: tuple[float, int]
) -> dict[str, float]:
    """Average over processes, append to the history (and history.jsonl on the main process)."""
    local = [stats.losses.mean(), *[v.reshape(()) for v in stats.parts.values()]]
    values = run.accelerator.reduce(torch.stack(local), reduction="mean").tolist()  # (1 + n,)
    elapsed = max(time.perf_counter() - window[0], 1e-9)
    entry: dict[str, float] = {
        "step": progress.step,
        "epoch": progress.epoch(),
        "loss": values[0],
        "lr": stats.lr,
        "samples_per_s": (progress.step - window[1]) * run.samples_per_step / elapsed,
        **dict(zip(stats.parts, values[1:], strict=True)),
    }
    if stats.grad_norm is not None:
        entry["grad_norm"] = stats.grad_norm
    progress.history.append(entry)
    if run.accelerator.is_main_process:
        append_entry(run.cfg.output_dir, entry)
    return entry


def _start_or_resume(run: _Run, resume: bool | str | Path, progress: Progress) -> None:
    """Seed a fresh run, or restore everything a checkpoint holds into ``run`` and ``progress``."""
    out_dir = run.cfg.output_dir
    if run.accelerator.is_main_process:
        for stale in remove_dead_temp_dirs(out_dir):
            run.accelerator.print(f"removed {stale}, left by a run killed while saving")
    if resume is True:
        path = latest_checkpoint(out_dir)
    elif resume is False:
        path = None
        if latest_checkpoint(out_dir) is not None:
            raise CheckpointError(
                f"{out_dir} already holds checkpoints of another run; pass resume=True to "
                "continue it or choose a new output_dir"
            )
    else:
        path = Path(resume)
    if path is None:
        set_seed(run.cfg.seed, device_specific=True)
    else:
        _restore(run, path, progress)
    progress.history = rewind_history(run.accelerator, out_dir, progress.step)


def _restore(run: _Run, path: Path, progress: Progress) -> None:
    """Load ``path`` into the run (collective under FSDP / DeepSpeed: every process calls it)."""
    acc = run.accelerator
    ckpt = load_checkpoint(path)
    run.engine.restore(run, ckpt)
    run.scheduler.load_state_dict(ckpt.load_state("scheduler"))
    if acc.scaler is not None and ckpt.has_state("scaler"):
        acc.scaler.load_state_dict(ckpt.load_state("scaler"))
    rng = ckpt.trainer_state.get("rng") or []
    if len(rng) != acc.num_processes:
        acc.print(
            f"warning: {path} was saved by {len(rng)} processes, now {acc.num_processes}; "
            "random streams cannot continue exactly"
        )
    if rng:
        restore_rng_state(rng[min(acc.process_index, len(rng) - 1)])
    progress.step = ckpt.step
    progress.samples_seen = int(ckpt.trainer_state["samples_seen"])
    progress.last_checkpoint = path


def _save(run: _Run, progress: Progress) -> Path:
    """Gather every process's RNG state and the engine's state (under FSDP / DeepSpeed every
    process takes part); the main process writes; all wait for it."""
    acc, cfg = run.accelerator, run.cfg
    rngs = gather_object([capture_rng_state()])  # one per process
    state = run.engine.gather(run, cfg.output_dir, progress.step)
    path = Path(cfg.output_dir) / checkpoint_dir_name(progress.step)
    if acc.is_main_process:
        torch_states = {} if state.optimizer is None else {"optimizer": state.optimizer}
        torch_states["scheduler"] = run.scheduler.state_dict()
        if acc.scaler is not None:
            torch_states["scaler"] = acc.scaler.state_dict()
        trainer_state = {
            "samples_seen": progress.samples_seen,
            "epoch": int(progress.epoch()),
            "num_processes": acc.num_processes,
            "rng": rngs,
            "config": cfg.to_dict(),
        }
        assert state.weights is not None, "the engine gave the main process no weights"
        path = save_checkpoint(
            cfg.output_dir,
            progress.step,
            state.weights,
            torch_states,
            trainer_state,
            cfg.keep_last,
            staged=state.staged,
        )
    acc.wait_for_everyone()
    progress.last_checkpoint = path
    return path
