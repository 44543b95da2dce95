import pytest
import torch

from geostrata.train.stages import stage_parameters, trainable_names


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.vision = torch.nn.Linear(2, 2)
        self.augmentation = torch.nn.Linear(2, 2)
        self.experts = torch.nn.Linear(2, 2)
        self.fusion = torch.nn.Linear(2, 2)
        self.llm = torch.nn.Linear(2, 2)
        self.vision.requires_grad_(False)  # a frozen pretrained tower


def _names(model, params):
    ids = {id(p) for p in params}
    return {n.split(".")[0] for n, p in model.named_parameters() if id(p) in ids}


def test_stage1_trains_alignment_parts_only_and_never_a_frozen_tower():
    model = Toy()
    allowed = trainable_names(model)
    params = stage_parameters(model, "stage1", allowed)
    assert _names(model, params) == {"augmentation", "fusion"}
    assert not model.llm.weight.requires_grad and not model.vision.weight.requires_grad


def test_stage2_adds_experts_and_llm():
    model = Toy()
    allowed = trainable_names(model)
    stage_parameters(model, "stage1", allowed)
    params = stage_parameters(model, "stage2", allowed)
    assert _names(model, params) == {"augmentation", "experts", "fusion", "llm"}


def test_unknown_stage():
    with pytest.raises(ValueError, match="stage3"):
        stage_parameters(Toy(), "stage3")


def test_names_survive_activation_checkpoint_wrapping():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    model = Toy()
    allowed = trainable_names(model)
    stage_parameters(model, "stage1", allowed)
    model.llm = checkpoint_wrapper(model.llm)  # what FSDP's activation checkpointing does
    assert any("_checkpoint_wrapped_module" in n for n, _ in model.named_parameters())
    params = stage_parameters(model, "stage2", allowed)
    assert model.llm._checkpoint_wrapped_module.weight.requires_grad
    assert _names(model, params) == {"augmentation", "experts", "fusion", "llm"}
