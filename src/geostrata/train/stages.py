"""Which parameters each training stage updates.

Stage 1 (alignment): the Semantic Augmentation Module, the projectors into the LLM and the
alignment heads learn while the LLM stays frozen. Stage 2 (instruction tuning): the semantic
experts, the fusion and the LLM (all of it, or its LoRA adapters) join. The vision tower trains
only where its config leaves it trainable (a random-init tower), never when frozen (pretrained).
The band adapter in front of it (in_bands != 3) trains in stage 1, and in stage 2 only with a
tower that trains: in front of a frozen tower it is settled by then, and the tower's features
can be cached for stage 2.
"""

from __future__ import annotations

import torch

TOWER, BAND_ADAPTER = "vision.tower.", "vision.band_adapter."
STAGES = ("stage1", "stage2")  # in training order
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "stage1": ("vision", "augmentation", "fusion", "projector", "default_question"),
    "stage2": (
        "vision",
        "augmentation",
        "experts",
        "fusion",
        "projector",
        "default_question",
        "llm",
    ),
}


def stage_parameters(
    model: torch.nn.Module, stage: str, allowed: set[str] | None = None
) -> list[torch.nn.Parameter]:
    """The parameters `stage` trains: its modules' parameters that the model's config allows.

    `allowed` is the set of names that required grad when the model was built (frozen towers,
    a frozen or LoRA-wrapped LLM are excluded there); default: those requiring grad now.
    """
    if stage not in STAGE_MODULES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_MODULES)}")
    allowed = allowed if allowed is not None else trainable_names(model)
    prefixes = STAGE_MODULES[stage]
    adapter_too = stage == "stage1" or any(n.startswith(TOWER) for n in allowed)

    def wanted(name: str) -> bool:
        name = plain_name(name)
        if name.startswith(BAND_ADAPTER) and not adapter_too:
            return False
        return name in allowed and name.split(".")[0] in prefixes

    chosen = [p for name, p in model.named_parameters() if wanted(name)]
    for name, p in model.named_parameters():
        p.requires_grad_(wanted(name))
    return chosen


def plain_name(name: str) -> str:
    """A parameter's name without the wrapper parts activation checkpointing inserts (FSDP's
    ``fsdp_activation_checkpointing`` wraps each decoder layer after stage 1 has named them)."""
    return name.replace(f"{CHECKPOINT_WRAPPER}.", "")


CHECKPOINT_WRAPPER = "_checkpoint_wrapped_module"


def trainable_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters that currently require grad (wrapper parts left out)."""
    return {plain_name(name) for name, p in model.named_parameters() if p.requires_grad}
