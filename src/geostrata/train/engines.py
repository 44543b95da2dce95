"""What a checkpoint holds of the model and optimizer, engine by engine, behind one interface.

`Engine` (one process, or DDP: every process holds every weight and the whole optimizer state),
`FSDPEngine` (FSDP version 2) and `DeepSpeedEngine` (ZeRO 1-3) each prepare the model, gather
its state for a checkpoint and put a checkpoint's state back; `engine_for` picks one from the
Accelerator. Under FSDP and ZeRO no process holds everything, so gathering and restoring are
collective: every process calls them; the main process alone receives the state and writes it.

* FSDP: ``model.safetensors`` holds the full trainable weights and ``optimizer.pt`` the full
  optimizer state keyed by parameter name, both gathered with ``torch.distributed.checkpoint``'s
  ``get_*_state_dict(full_state_dict=True)`` and scattered back on resume; such a checkpoint also
  resumes without FSDP (and a DDP one under FSDP): the optimizer file is re-keyed either way;
* DeepSpeed: ``model.safetensors`` holds the full trainable weights (ZeRO-3 gathers them); the
  optimizer state, fp32 master weights included, is DeepSpeed's own sharded checkpoint in
  ``deepspeed/`` (``engine.save_checkpoint`` by every rank into the same staging directory), which
  resume restores with ``engine.load_checkpoint``. The DeepSpeed config's batch geometry and
  clipping come from the training config (the loop prepares no DataLoader to read them from).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import safetensors
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list

from geostrata.device import is_main_process
from geostrata.errors import CheckpointError, ConfigError
from geostrata.session.train_config import TrainConfig
from geostrata.train.checkpoint import (
    Checkpoint,
    begin_staging,
    load_safetensors_weights,
    read_safetensors,
)

DEEPSPEED_DIR = "deepspeed"  # in a checkpoint: DeepSpeed's own (sharded) engine checkpoint
_DEEPSPEED_TAG = "state"

Named = list[tuple[str, torch.nn.Parameter]]


class Trainee(Protocol):
    """What an engine reads and restores (the training loop's run is one)."""

    accelerator: Accelerator
    model: torch.nn.Module  # as returned by the engine's prepare
    optimizer: torch.optim.Optimizer
    named: Named  # the trainable parameters, in model order


@dataclass
class EngineState:
    """A checkpoint's share from the engine, on the main process (None on the others)."""

    weights: dict[str, torch.Tensor] | None  # trainable parameters + persistent buffers
    optimizer: dict[str, Any] | None  # torch layout; None when the engine writes its own files
    staged: Path | None = None  # staging directory other processes have already written into


def engine_for(accelerator: Accelerator, cfg: TrainConfig) -> Engine:
    """The engine the Accelerator runs, with its config checked (and DeepSpeed's filled)."""
    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        if not accelerator.is_fsdp2:
            raise ConfigError(
                "the training loop checkpoints FSDP version 2 only (parameters keep their names); "
                "set fsdp_version: 2 in the Accelerate config (configs/accelerate/fsdp.yaml does)"
            )
        return FSDPEngine()
    if kind == DistributedType.DEEPSPEED:
        ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
        for note in fill_deepspeed_config(ds_config, cfg, accelerator.num_processes):
            accelerator.print(f"warning: DeepSpeed config {note} (set from the training config)")
        return DeepSpeedEngine()
    return Engine()


class Engine:
    """One process or DDP: every process holds all weights and the whole optimizer state."""

    def prepare(
        self, acc: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        return acc.prepare(model, optimizer)

    def canonical(self, named: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Parameter names as checkpoints store them."""
        return named

    def rebind(self, acc: Accelerator, model: torch.nn.Module, named: Named) -> Named:
        """The prepared model's parameters under the names of ``named`` (FSDP2 replaces every
        parameter by a sharded DTensor one; elsewhere they are the same objects)."""
        current = dict(self.model_parameters(acc, model))
        wanted = self.canonical(named)
        missing = [n for n, _ in wanted if n not in current]
        if missing:
            raise ConfigError(
                f"after accelerator.prepare the model lacks parameters {missing[:20]}"
            )
        return [(n, current[n]) for n, _ in wanted]

    def model_parameters(self, acc: Accelerator, model: torch.nn.Module) -> Named:
        """Every parameter of the prepared model, duplicates included, by canonical name."""
        unwrapped = acc.unwrap_model(model)
        return self.canonical(list(unwrapped.named_parameters(remove_duplicate=False)))

    def gather(self, run: Trainee, output_dir: str | Path, step: int) -> EngineState:
        if not run.accelerator.is_main_process:
            return EngineState(None, None)
        return EngineState(_whole_weights(run), run.optimizer.state_dict())

    def restore(self, run: Trainee, ckpt: Checkpoint) -> None:
        self._load_weights(run, ckpt)
        if not ckpt.has_state("optimizer") and (ckpt.path / DEEPSPEED_DIR).is_dir():
            raise CheckpointError(
                f"checkpoint {ckpt.path} was saved under DeepSpeed: its optimizer state is "
                f"DeepSpeed's own ({DEEPSPEED_DIR}/); resume it under DeepSpeed"
            )
        self._load_optimizer(run, ckpt.load_state("optimizer"))

    def _load_weights(self, run: Trainee, ckpt: Checkpoint) -> None:
        unwrapped = run.accelerator.unwrap_model(run.model)
        result = load_safetensors_weights(unwrapped, ckpt.weights_path, strict=False)
        _check_weights(run, ckpt, result.loaded, result.unexpected)

    def _load_optimizer(self, run: Trainee, state: dict[str, Any]) -> None:
        run.optimizer.load_state_dict(optimizer_state_by(state, _optimizer_names(run), False))


class FSDPEngine(Engine):
    """FSDP version 2: weights and optimizer state gathered whole onto the main process's CPU."""

    def prepare(
        self, acc: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        from torch.distributed.fsdp import FSDPModule

        if isinstance(model, FSDPModule):  # sharded by an earlier train() (a previous stage):
            # Accelerate would shard it again and fail to find its (now FSDP) layer classes.
            return model, acc.prepare_optimizer(optimizer)
        plugin = acc.state.fsdp_plugin
        if getattr(plugin, "cpu_ram_efficient_loading", False) and _has_persistent_buffers(model):
            # Accelerate's loading path for it broadcasts the state dict as if every entry were
            # a sharded parameter and fails on buffers (e.g. BatchNorm statistics). Every process
            # built the whole model already, so there is nothing for it to save here.
            plugin.cpu_ram_efficient_loading = False
            acc.print("note: fsdp_cpu_ram_efficient_loading off: the model has persistent buffers")
        return acc.prepare(model, optimizer)

    def canonical(self, named: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Names without the ``_checkpoint_wrapped_module`` parts activation checkpointing
        inserts, as ``torch.distributed.checkpoint`` names them."""
        from accelerate.utils.fsdp_utils import fsdp2_canonicalize_names

        return list(fsdp2_canonicalize_names(dict(named)).items())

    def gather(self, run: Trainee, output_dir: str | Path, step: int) -> EngineState:
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
            return EngineState(None, None)
        param_names = {n for n, _ in self.model_parameters(run.accelerator, run.model)}
        weights = {n: full[n] for n, _ in run.named}
        weights.update({n: v for n, v in full.items() if n not in param_names})  # buffers
        return EngineState(weights, optimizer)

    def _load_weights(self, run: Trainee, ckpt: Checkpoint) -> None:
        """Every process reads the whole file and keeps its own shard of each tensor."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        tensors = read_safetensors(ckpt.weights_path)
        own = run.accelerator.unwrap_model(run.model).state_dict()  # sharded: no communication
        loaded = sorted(k for k in tensors if k in own)
        _check_weights(run, ckpt, loaded, sorted(k for k in tensors if k not in own))
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(run.model, {k: tensors[k] for k in loaded}, options=options)

    def _load_optimizer(self, run: Trainee, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(
            run.model,
            inner_optimizer(run.optimizer),
            optimizer_state_by(state, _optimizer_names(run), True),
            # strict=False: a trainable parameter no step gave a gradient (e.g. the default
            # question vector when no batch lacked a question) has no Adam state, in the
            # checkpoint as in the uninterrupted run; it stays without one
            options=StateDictOptions(full_state_dict=True, strict=False),
        )


class DeepSpeedEngine(Engine):
    """DeepSpeed ZeRO: the optimizer state is DeepSpeed's own checkpoint, written by every rank."""

    def gather(self, run: Trainee, output_dir: str | Path, step: int) -> EngineState:
        acc = run.accelerator
        box = [str(begin_staging(output_dir, step)) if acc.is_main_process else None]
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
        main = acc.is_main_process
        if zero_stage(acc) >= 3:
            weights = _zero3_weights(run)
        else:  # ZeRO-1/2 partition only the optimizer state: every process holds the weights
            weights = _whole_weights(run) if main else None
        return EngineState(weights, None, staged if main else None)

    def restore(self, run: Trainee, ckpt: Checkpoint) -> None:
        """Weights, fp32 master weights and optimizer state from DeepSpeed's own checkpoint."""
        engine_dir = ckpt.path / DEEPSPEED_DIR
        if not engine_dir.is_dir():
            raise CheckpointError(
                f"checkpoint {ckpt.path} was not saved under DeepSpeed (no {DEEPSPEED_DIR}/ "
                "folder), so it has no DeepSpeed optimizer state to resume; resume it without "
                "DeepSpeed"
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


def _has_persistent_buffers(model: torch.nn.Module) -> bool:
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    return any(n not in params for n in model.state_dict())


def _zero3_weights(run: Trainee) -> dict[str, torch.Tensor] | None:
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


def _check_weights(
    run: Trainee, ckpt: Checkpoint, loaded: list[str], unexpected: list[str]
) -> None:
    """Refuse a checkpoint whose weights are not exactly the trainable parameters (+ buffers)."""
    absent = sorted({n for n, _ in run.named} - set(loaded))
    if absent or unexpected:
        raise CheckpointError(
            f"checkpoint {ckpt.path} does not match the trainable parameters: not in the file "
            f"{absent[:20]}, not in the model {unexpected[:20]}"
        )


def _whole_weights(run: Trainee) -> dict[str, torch.Tensor]:
    """The trainable parameters plus persistent buffers, by name, where a process holds them all
    (one process, DDP, DeepSpeed ZeRO-1/2)."""
    return {**{n: p.detach() for n, p in run.named}, **_buffers(run)}


def _buffers(run: Trainee) -> dict[str, torch.Tensor]:
    """Persistent buffers (e.g. norm statistics): the state-dict entries that are no parameter."""
    unwrapped = run.accelerator.unwrap_model(run.model)
    param_names = {n for n, _ in unwrapped.named_parameters(remove_duplicate=False)}
    return {n: v for n, v in unwrapped.state_dict().items() if n not in param_names}


def _optimizer_names(run: Trainee) -> list[str]:
    """The name of every parameter the optimizer holds, in its ``state_dict`` index order."""
    names = {id(p): n for n, p in run.named}
    return [names[id(p)] for group in run.optimizer.param_groups for p in group["params"]]


def fill_deepspeed_config(
    ds_config: dict[str, Any], cfg: TrainConfig, num_processes: int
) -> list[str]:
    """Set the batch geometry and clipping DeepSpeed must be told, from ``cfg``; in place.

    The loop feeds its own micro-batches, so Accelerate has no DataLoader to fill
    ``train_micro_batch_size_per_gpu: auto`` from; DeepSpeed also divides the loss by its own
    ``gradient_accumulation_steps`` and clips at its own ``gradient_clipping`` (Accelerate's
    ``clip_grad_norm_`` only reports the norm), so both must be the loop's. Returns a note for each
    explicit (not ``auto``) value that was different and is overridden.
    """
    wanted: dict[str, int | float] = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.batch_size * cfg.grad_accum * num_processes,
        "gradient_clipping": float(max(cfg.max_grad_norm, 0.0)),  # 0: DeepSpeed does not clip
    }
    notes = []
    for key, value in wanted.items():
        old = ds_config.get(key, "auto")
        if old not in ("auto", None) and old != value:
            notes.append(f"{key}={old!r} replaced by {value!r}")
        ds_config[key] = value
    return notes


def norm_value(norm: Any) -> float | None:
    """``clip_grad_norm_``'s result as a float: a tensor, a DTensor (FSDP2), or under DeepSpeed
    the engine's norm as a float, or None when it has none."""
    if norm is None:
        return None
    if hasattr(norm, "full_tensor"):  # a replicated DTensor: no communication
        norm = norm.full_tensor()
    return float(norm)


def inner_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside Accelerate's wrapper."""
    from accelerate.optimizer import AcceleratedOptimizer

    while isinstance(optimizer, AcceleratedOptimizer):
        optimizer = optimizer.optimizer
    return optimizer


def optimizer_state_by(state: dict[str, Any], order: list[str], by_name: bool) -> dict[str, Any]:
    """An optimizer state dict keyed by parameter name (``by_name``, the layout of a full FSDP
    state dict) or by index (``torch.optim``'s own); ``order`` maps index to name. Returned as is
    when already keyed that way, so a checkpoint resumes with or without FSDP."""
    groups = state.get("param_groups") or []
    keys = [k for g in groups for k in g.get("params", [])]
    if all(isinstance(k, str) for k in keys) == by_name:
        return state
    if by_name:
        rekey: dict[Any, Any] = {i: order[i] for i in range(len(order))}
    else:
        rekey = {name: i for i, name in enumerate(order)}
    unknown = [k for k in keys if k not in rekey]
    if unknown:
        raise CheckpointError(
            f"the saved optimizer state holds parameters the optimizer does not: {unknown[:20]}"
        )
    return {
        "state": {rekey[k]: v for k, v in state.get("state", {}).items()},
        "param_groups": [{**g, "params": [rekey[k] for k in g["params"]]} for g in groups],
    }


def zero_stage(acc: Accelerator) -> int:
    return int(acc.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def is_sharded(model: torch.nn.Module) -> bool:
    """True when FSDP2 or DeepSpeed ZeRO-3 holds only a shard of the model on each process."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        return True
    return any(hasattr(p, "ds_id") for p in model.parameters())  # DeepSpeed tags ZeRO-3 so


def gather_full_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """Every weight and buffer of a model that FSDP2 or DeepSpeed ZeRO-3 shards over processes,
    whole, on the main process's CPU (others get ``{}``); None when the model is not sharded
    (its own ``state_dict()`` is whole). Collective: every process must call it."""
    from torch.distributed.fsdp import FSDPModule

    main = is_main_process()
    if isinstance(model, FSDPModule):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(model, options=options)
        return full if main else {}
    if not is_sharded(model):
        return None
    params = list(model.parameters())
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        if not main:
            return {}
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
