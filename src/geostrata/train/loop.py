"""One explicit training loop on HF Accelerate, with checkpoints and exact resume.

The same code runs on CPU, one GPU, or N processes under ``torchrun`` / ``accelerate launch``.
What makes resume exact (bit-identical on the same hardware):

* the data order is a pure function of (seed, epoch): an endless stream of seeded permutations,
  cut into per-process micro-batches, so a resumed run starts at the very next sample;
* the checkpoint stores weights, optimizer, scheduler, grad scaler, and every process's python /
  numpy / torch RNG states, taken at an optimizer-step boundary;
* nothing in the loop draws from the global RNGs except the model itself (no DataLoader seeding).

An ``IterableDataset`` (e.g. :class:`geostrata.data.shards.ShardStream`) is streamed instead of
indexed, so the corpus never has to fit in memory: each process iterates its own stream
(the loop calls ``set_rank(process_index, num_processes)`` when the stream has it), starts the
next epoch with ``set_epoch(epoch + 1)`` when a pass is exhausted, and checkpoints every process's
(epoch, samples consumed in it). Resume re-opens that epoch and skips exactly those samples
(``iter_from(start)`` when the stream offers it, so skipped images are not decoded), which is exact
because the stream's order is a pure function of (seed, epoch, rank).

Under FSDP (version 2) and DeepSpeed ZeRO no process holds all the weights or optimizer state, so
saving and restoring are collective (every process calls them; the main process writes):

* FSDP: ``model.safetensors`` holds the full trainable weights and ``optimizer.pt`` the full
  optimizer state keyed by parameter name, both gathered with ``torch.distributed.checkpoint``'s
  ``get_*_state_dict(full_state_dict=True)`` and scattered back on resume; such a checkpoint also
  resumes without FSDP (and a DDP one under FSDP): the optimizer file is re-keyed either way;
* DeepSpeed: ``model.safetensors`` holds the full trainable weights (ZeRO-3 gathers them); the
  optimizer state, fp32 master weights included, is DeepSpeed's own sharded checkpoint in
  ``deepspeed/`` (``engine.save_checkpoint`` by every rank into the same temp directory), which
  resume restores with ``engine.load_checkpoint``. The loop fills the DeepSpeed config's batch
  geometry and clipping from ``cfg`` (it prepares no DataLoader Accelerate could read them from).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import safetensors
import torch
from accelerate import Accelerator
from accelerate.utils import (
    DistributedType,
    broadcast_object_list,
    gather_object,
    send_to_device,
    set_seed,
)
from torch.utils.data import default_collate

from geostrata.atomic import remove_dead_temp_dirs
from geostrata.errors import CheckpointError, ConfigError
from geostrata.session.train_config import TrainConfig
from geostrata.train.checkpoint import (
    Checkpoint,
    begin_staging,
    capture_rng_state,
    checkpoint_dir_name,
    latest_checkpoint,
    load_checkpoint,
    load_safetensors_weights,
    read_safetensors,
    restore_rng_state,
    save_checkpoint,
)
from geostrata.train.sampling import SeededSampleStream, StreamBatches, StreamPosition, is_stream
from geostrata.train.sharded import (
    fill_deepspeed_config,
    fsdp_sharded,
    inner_optimizer,
    norm_value,
    optimizer_state_by,
    zero_stage,
)

HISTORY_FILE = "history.jsonl"
DEEPSPEED_DIR = "deepspeed"  # in a checkpoint: DeepSpeed's own (sharded) engine checkpoint
_DEEPSPEED_TAG = "state"


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
class _Progress:
    """Mutable position of the run; everything :func:`train` must restore on resume."""

    dataset_len: int | None  # None: a stream without len(); epochs are then counted
    step: int = 0
    samples_seen: int = 0  # global position in the sample stream (all processes)
    last_checkpoint: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    feed: StreamBatches | None = None  # the position in a streamed dataset, when there is one
    saved_streams: list[dict[str, int]] | None = None  # every process's, from the checkpoint

    def epoch(self) -> float:
        """Epochs so far: ``samples_seen / len`` when the length is known, else as counted by
        this process's stream (whole passes completed)."""
        if self.dataset_len:
            return self.samples_seen / self.dataset_len
        return float(self.feed.position.epoch if self.feed is not None else 0)


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """An Accelerator for ``cfg``; mixed precision only where there is a GPU to use it.

    Without a GPU, ``cpu=True`` lets ``torchrun`` / ``accelerate launch`` give N CPU processes
    (gloo); Accelerate would otherwise run each of them as an independent single process.
    """
    from accelerate.utils import DistributedDataParallelKwargs

    gpu = torch.cuda.is_available()
    # Ablation switches and optional inputs (e.g. the default question vector) leave some
    # trainable parameters unused in a step; DDP must be told, or it waits for their gradients.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=cfg.mixed_precision if gpu else "no",
        cpu=not gpu,
        kwargs_handlers=[ddp],
    )


def build_optimizer(
    named_params: Sequence[tuple[str, torch.nn.Parameter]], cfg: TrainConfig
) -> torch.optim.AdamW:
    """AdamW; matrices decay, biases and norm gains (ndim < 2) do not (the usual GPT recipe)."""
    decay = [p for _, p in named_params if p.ndim >= 2]
    no_decay = [p for _, p in named_params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to ``lr``, then cosine down to ``min_lr_ratio * lr`` at ``max_steps``."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=cfg.warmup_steps,
        num_training_steps=cfg.max_steps,
        min_lr_rate=cfg.min_lr_ratio,
    )


@dataclass
class _Run:
    """The objects one training run threads through its helpers."""

    cfg: TrainConfig
    accelerator: Accelerator
    model: torch.nn.Module  # as returned by ``accelerator.prepare``
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    named: list[tuple[str, torch.nn.Parameter]]  # the trainable parameters, in model order

    @property
    def samples_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.accelerator.num_processes

    @property
    def fsdp(self) -> bool:
        return self.accelerator.distributed_type == DistributedType.FSDP

    @property
    def deepspeed(self) -> bool:
        return self.accelerator.distributed_type == DistributedType.DEEPSPEED


@dataclass
class _StepStats:
    """What one optimizer step measured, before any cross-process reduction."""

    losses: torch.Tensor  # (grad_accum,) detached micro-batch losses
    parts: dict[str, torch.Tensor]  # other ``*_loss`` outputs, averaged over micro-batches
    grad_norm: float | None  # before clipping; None when clipping is off
    lr: float  # the learning rate the step used


def train(
    model: torch.nn.Module,
    dataset: Any,
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
    there is none); a path resumes from that checkpoint. ``collate_fn=None`` uses torch's
    ``default_collate``. ``dataset`` is indexed (``len`` + ``[]``) or, when it is an
    ``IterableDataset``, streamed (module docstring).
    """
    run = _prepare(model, cfg, params, accelerator or make_accelerator(cfg))
    progress = _Progress(dataset_len=_dataset_len(dataset))
    _start_or_resume(run, resume, progress)
    run.model.train()
    batches = _micro_batches(run, dataset, collate_fn or default_collate, progress)
    start_step, t0 = progress.step, time.perf_counter()
    show = show_progress and run.accelerator.is_main_process
    with _ProgressBar(show, cfg.max_steps, start_step) as bar:
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
    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise ConfigError(
            "the training loop checkpoints FSDP version 2 only (parameters keep their names); "
            "set fsdp_version: 2 in the Accelerate config (configs/accelerate/fsdp.yaml does)"
        )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        plugin = accelerator.state.deepspeed_plugin
        for note in fill_deepspeed_config(plugin.deepspeed_config, cfg, accelerator.num_processes):
            accelerator.print(f"warning: DeepSpeed config {note} (set from the training config)")
    named = _named_trainable(model, params)
    optimizer = build_optimizer(named, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    # The scheduler is stepped here, once per optimizer step, not prepared: Accelerate's wrapper
    # would step it once per process, and DeepSpeed only runs schedulers of its own kind.
    if fsdp_sharded(accelerator, model):  # by an earlier train() (a previous stage)
        # Accelerate would shard it again and fail to find its (now FSDP) layer classes.
        optimizer = accelerator.prepare_optimizer(optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.step = 0  # Accelerate's micro-batch counter decides when gradients sync
    run = _Run(cfg, accelerator, model, optimizer, scheduler, named)
    run.named = _rebind(run, named)
    return run


def _rebind(
    run: _Run, named: list[tuple[str, torch.nn.Parameter]]
) -> list[tuple[str, torch.nn.Parameter]]:
    """The prepared model's parameters under the same names: FSDP2 replaces every parameter by
    a sharded DTensor one (Accelerate switches the optimizer over); elsewhere they are the same
    objects."""
    current = dict(_named_parameters(run))
    wanted = _canonical_names(run, named)
    missing = [n for n, _ in wanted if n not in current]
    if missing:
        raise ConfigError(f"after accelerator.prepare the model lacks parameters {missing[:20]}")
    return [(n, current[n]) for n, _ in wanted]


def _named_parameters(run: _Run) -> list[tuple[str, torch.nn.Parameter]]:
    """The prepared model's parameters, duplicates included, by :func:`_canonical_names`."""
    unwrapped = run.accelerator.unwrap_model(run.model)
    return _canonical_names(run, unwrapped.named_parameters(remove_duplicate=False))


def _canonical_names(
    run: _Run, named: Iterable[tuple[str, torch.nn.Parameter]]
) -> list[tuple[str, torch.nn.Parameter]]:
    """Under FSDP, parameter names without the ``_checkpoint_wrapped_module`` parts that
    activation checkpointing inserts, as ``torch.distributed.checkpoint`` names them (a model
    wrapped by an earlier stage's ``prepare`` has them already); elsewhere as they are."""
    named = list(named)
    if not run.fsdp:
        return named
    from accelerate.utils.fsdp_utils import fsdp2_canonicalize_names

    return list(fsdp2_canonicalize_names(dict(named)).items())


def _named_trainable(
    model: torch.nn.Module, params: Sequence[torch.nn.Parameter] | None
) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) pairs in model order; names key the saved weights."""
    all_named = list(model.named_parameters())
    if params is None:
        named = [(n, p) for n, p in all_named if p.requires_grad]
    else:
        wanted = {id(p) for p in params}
        named = [(n, p) for n, p in all_named if id(p) in wanted]
        if len(named) != len(wanted):
            missing = len(wanted) - len(named)
            raise ConfigError(f"{missing} of the given params are not parameters of the model")
    if not named:
        raise ConfigError("nothing to train: no parameter requires grad and none were given")
    return named


def _should_save(step: int, cfg: TrainConfig) -> bool:
    return step == cfg.max_steps or (cfg.save_every > 0 and step % cfg.save_every == 0)


def _batches(
    dataset: Any, stream: SeededSampleStream, collate: Callable, device: torch.device
) -> Iterator[dict[str, Any]]:
    for indices in stream:
        yield send_to_device(collate([dataset[i] for i in indices]), device)


def _dataset_len(dataset: Any) -> int | None:
    """``len(dataset)``; None for a stream that has no length (its epochs are counted)."""
    if not is_stream(dataset):
        return len(dataset)
    try:
        length = len(dataset)
    except TypeError:
        return None
    if length == 0:
        raise ConfigError("cannot train on an empty dataset (length 0)")
    return length


def _micro_batches(
    run: _Run, dataset: Any, collate: Callable, progress: _Progress
) -> Iterator[dict[str, Any]]:
    """This process's collated micro-batches, on its device, from the run's data position."""
    acc, cfg = run.accelerator, run.cfg
    if not is_stream(dataset):
        stream = SeededSampleStream(
            len(dataset),
            cfg.batch_size,
            cfg.seed,
            progress.samples_seen,
            acc.num_processes,
            acc.process_index,
        )
        return _batches(dataset, stream, collate, acc.device)
    if hasattr(dataset, "set_rank"):
        dataset.set_rank(acc.process_index, acc.num_processes)
    progress.feed = StreamBatches(dataset, cfg.batch_size, _stream_start(run, progress))
    return (send_to_device(collate(batch), acc.device) for batch in progress.feed)


def _stream_start(run: _Run, progress: _Progress) -> StreamPosition:
    """This process's saved stream position; a fresh pass when the process count changed."""
    acc, saved = run.accelerator, progress.saved_streams
    if saved is None:
        if progress.step > 0:
            raise CheckpointError(
                f"checkpoint {progress.last_checkpoint} holds no stream position (it was saved "
                "by a run on an indexed dataset); resume it with an indexed dataset"
            )
        return StreamPosition()
    if len(saved) != acc.num_processes:
        epoch = max(int(s["epoch"]) for s in saved) + 1
        acc.print(
            f"warning: {progress.last_checkpoint} was saved by {len(saved)} processes, now "
            f"{acc.num_processes}; the shards are split differently, so every process starts "
            f"epoch {epoch} from its beginning"
        )
        return StreamPosition(epoch, 0)
    mine = saved[acc.process_index]
    return StreamPosition(int(mine["epoch"]), int(mine["consumed"]))


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
    run: _Run, progress: _Progress, stats: _StepStats, window: tuple[float, int]
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
        out_dir = Path(run.cfg.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            with open(out_dir / HISTORY_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        except OSError as exc:  # e.g. disk full: name the file instead of a bare OSError
            raise CheckpointError(f"could not append to {out_dir / HISTORY_FILE}: {exc}") from exc
    return entry


def _start_or_resume(run: _Run, resume: bool | str | Path, progress: _Progress) -> None:
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
    progress.history = _rewind_history(run.accelerator, Path(out_dir), progress.step)


def _restore(run: _Run, path: Path, progress: _Progress) -> None:
    """Load ``path`` into the run (collective under FSDP / DeepSpeed: every process calls it)."""
    acc = run.accelerator
    ckpt = load_checkpoint(path)
    if run.deepspeed:
        _restore_deepspeed(run, ckpt)
    else:
        _restore_weights(run, ckpt)
        _restore_optimizer(run, ckpt)
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
    progress.saved_streams = ckpt.trainer_state.get("stream")
    progress.last_checkpoint = path


def _restore_weights(run: _Run, ckpt: Checkpoint) -> None:
    """The saved (full) weights into the model; under FSDP every process reads the whole file and
    keeps its own shard of each tensor."""
    if run.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        tensors = read_safetensors(ckpt.weights_path)
        own = run.accelerator.unwrap_model(run.model).state_dict()  # sharded: no communication
        loaded = sorted(k for k in tensors if k in own)
        unexpected = sorted(k for k in tensors if k not in own)
    else:
        unwrapped = run.accelerator.unwrap_model(run.model)
        result = load_safetensors_weights(unwrapped, ckpt.weights_path, strict=False)
        loaded, unexpected = result.loaded, result.unexpected
    absent = sorted({n for n, _ in run.named} - set(loaded))
    if absent or unexpected:
        raise CheckpointError(
            f"checkpoint {ckpt.path} does not match the trainable parameters: not in the file "
            f"{absent[:20]}, not in the model {unexpected[:20]}"
        )
    if run.fsdp:
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(run.model, {k: tensors[k] for k in loaded}, options=options)


def _restore_optimizer(run: _Run, ckpt: Checkpoint) -> None:
    """``optimizer.pt`` into the optimizer, whichever of the two layouts it was saved in."""
    if not ckpt.has_state("optimizer") and (ckpt.path / DEEPSPEED_DIR).is_dir():
        raise CheckpointError(
            f"checkpoint {ckpt.path} was saved under DeepSpeed: its optimizer state is DeepSpeed's "
            f"own ({DEEPSPEED_DIR}/); resume it under DeepSpeed"
        )
    state = ckpt.load_state("optimizer")
    order = _optimizer_param_names(run)
    if run.fsdp:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(
            run.model,
            inner_optimizer(run.optimizer),
            optimizer_state_by(state, order, True),
            options=StateDictOptions(full_state_dict=True),
        )
    else:
        run.optimizer.load_state_dict(optimizer_state_by(state, order, False))


def _restore_deepspeed(run: _Run, ckpt: Checkpoint) -> None:
    """Weights, fp32 master weights and optimizer state from DeepSpeed's own checkpoint."""
    engine_dir = ckpt.path / DEEPSPEED_DIR
    if not engine_dir.is_dir():
        raise CheckpointError(
            f"checkpoint {ckpt.path} was not saved under DeepSpeed (no {DEEPSPEED_DIR}/ folder), "
            "so it has no DeepSpeed optimizer state to resume; resume it without DeepSpeed"
        )
    with safetensors.safe_open(str(ckpt.weights_path), framework="pt") as handle:
        absent = sorted({n for n, _ in run.named} - set(handle.keys()))
    if absent:
        raise CheckpointError(
            f"checkpoint {ckpt.path} does not hold trainable parameters {absent[:20]}"
        )
    loaded, _ = run.model.load_checkpoint(
        str(engine_dir),
        tag=_DEEPSPEED_TAG,
        load_module_strict=False,
        load_optimizer_states=True,
        load_lr_scheduler_states=False,
    )
    if loaded is None:
        raise CheckpointError(f"DeepSpeed could not load its checkpoint in {engine_dir}")


def _optimizer_param_names(run: _Run) -> list[str]:
    """The name of every parameter the optimizer holds, in its ``state_dict`` index order."""
    names = {id(p): n for n, p in run.named}
    return [names[id(p)] for group in run.optimizer.param_groups for p in group["params"]]


def _save(run: _Run, progress: _Progress) -> Path:
    """Gather every process's RNG state (and stream position), and under FSDP / DeepSpeed the
    sharded weights and optimizer state (every process takes part); the main process writes;
    all wait for it."""
    acc = run.accelerator
    feed = progress.feed
    local = {"rng": capture_rng_state(), "stream": feed.position.to_dict() if feed else None}
    gathered = gather_object([local])  # one entry per process
    path = Path(run.cfg.output_dir) / checkpoint_dir_name(progress.step)
    weights, optimizer, staged = _sharded_state(run, progress.step)
    if acc.is_main_process:
        torch_states = {}
        if not run.deepspeed:  # DeepSpeed's optimizer state is in its own files, in staged
            full = optimizer is not None  # FSDP: gathered by _sharded_state
            torch_states["optimizer"] = optimizer if full else run.optimizer.state_dict()
        torch_states["scheduler"] = run.scheduler.state_dict()
        if acc.scaler is not None:
            torch_states["scaler"] = acc.scaler.state_dict()
        trainer_state = {
            "samples_seen": progress.samples_seen,
            "epoch": int(progress.epoch()),
            "num_processes": acc.num_processes,
            "rng": [g["rng"] for g in gathered],
            "config": run.cfg.to_dict(),
        }
        if feed is not None:
            trainer_state["stream"] = [g["stream"] for g in gathered]
        path = save_checkpoint(
            run.cfg.output_dir,
            progress.step,
            _weights(run) if weights is None else weights,
            torch_states,
            trainer_state,
            run.cfg.keep_last,
            staged=staged,
        )
    acc.wait_for_everyone()
    progress.last_checkpoint = path
    return path


def _sharded_state(
    run: _Run, step: int
) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None, Path | None]:
    """What only all processes together can produce: (full weights, full optimizer state) on the
    main process under FSDP, (weights gathered by ZeRO-3, None, the staging directory holding
    DeepSpeed's engine checkpoint) under DeepSpeed; all None elsewhere and on other processes."""
    if run.fsdp:
        return _fsdp_full_state(run) + (None,)
    if not run.deepspeed:
        return None, None, None
    acc = run.accelerator
    box = [str(begin_staging(run.cfg.output_dir, step)) if acc.is_main_process else None]
    staged = Path(broadcast_object_list(box, from_process=0)[0])
    acc.wait_for_everyone()
    # Every rank writes its own partition of the optimizer state (and fp32 master weights).
    run.model.save_checkpoint(
        str(staged / DEEPSPEED_DIR),
        tag=_DEEPSPEED_TAG,
        client_state={},
        save_latest=False,
        exclude_frozen_parameters=True,
    )
    acc.wait_for_everyone()
    weights = _zero3_weights(run) if zero_stage(acc) >= 3 else None
    return weights, None, staged if acc.is_main_process else None


def _fsdp_full_state(run: _Run) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """Full trainable weights (plus persistent buffers) and the full optimizer state keyed by
    parameter name, gathered onto the main process's CPU (others get None)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    frozen_skipped = all(p.requires_grad for _, p in run.named)  # else keep the given ones
    options = StateDictOptions(
        full_state_dict=True, cpu_offload=True, ignore_frozen_params=frozen_skipped
    )
    full = get_model_state_dict(run.model, options=options)
    optimizer = get_optimizer_state_dict(
        run.model,
        inner_optimizer(run.optimizer),
        options=StateDictOptions(full_state_dict=True, cpu_offload=True),
    )
    if not run.accelerator.is_main_process:
        return None, None
    param_names = {n for n, _ in _named_parameters(run)}
    weights = {n: full[n] for n, _ in run.named}
    weights.update({n: v for n, v in full.items() if n not in param_names})  # buffers
    return weights, optimizer


def _zero3_weights(run: _Run) -> dict[str, torch.Tensor] | None:
    """The trainable parameters gathered one at a time (ZeRO-3 partitions every parameter) plus
    persistent buffers, on the main process; None on the others."""
    import deepspeed

    main = run.accelerator.is_main_process
    weights: dict[str, torch.Tensor] = {}
    for name, param in run.named:
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            if main:
                weights[name] = param.detach().to("cpu", copy=True)
    return {**weights, **_buffers(run)} if main else None


def _weights(run: _Run) -> dict[str, torch.Tensor]:
    """The trainable parameters plus persistent buffers, by name; every process holds them all
    (one process, DDP, DeepSpeed ZeRO-1/2)."""
    return {**{n: p.detach() for n, p in run.named}, **_buffers(run)}


def _buffers(run: _Run) -> dict[str, torch.Tensor]:
    """Persistent buffers (e.g. norm statistics): the state-dict entries that are no parameter."""
    unwrapped = run.accelerator.unwrap_model(run.model)
    param_names = {n for n, _ in unwrapped.named_parameters(remove_duplicate=False)}
    return {n: v for n, v in unwrapped.state_dict().items() if n not in param_names}


def _rewind_history(accelerator: Accelerator, out_dir: Path, step: int) -> list[dict[str, float]]:
    """Keep the logged entries up to ``step`` (later ones will be recomputed) and rewrite the
    file atomically, so history.jsonl reads as one uninterrupted run."""
    path = out_dir / HISTORY_FILE
    entries = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if isinstance(entry, dict) and entry.get("step", math.inf) <= step:
                entries.append(entry)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and path.is_file():
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
        os.replace(tmp, path)
    accelerator.wait_for_everyone()
    return entries


class _ProgressBar:
    """A rich bar with step, loss and samples/s; a silent stand-in when disabled."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.enabled, self.total, self.start = enabled, total, start
        self._bar: Any = None

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("step"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[sps]} samples/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                "train", total=self.total, completed=self.start, loss="-", sps="-"
            )
        return self

    def update(self, entry: dict[str, float]) -> None:
        if self._bar is not None:
            loss, sps = f"{entry['loss']:.4f}", f"{entry['samples_per_s']:.1f}"
            self._bar.update(self._task, loss=loss, sps=sps)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
