import pytest
import torch

from geostrata.errors import ConfigError


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(make_model, train_batch):
    plain = make_model()
    ckpt = make_model(gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.llm.is_gradient_checkpointing and not plain.llm.is_gradient_checkpointing
    losses, grads = [], []
    for model in (plain, ckpt):
        model.train()
        out = model(**train_batch)
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append(
            torch.cat([p.grad.flatten() for p in model.llm.parameters() if p.grad is not None])
        )
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "override, needle",
    [
        ({"torch_dtype": "float8"}, "torch_dtype"),
        ({"load_in_4bit": True}, "use_lora"),
    ],
)
def test_scale_switches_are_validated(make_config, override, needle):
    with pytest.raises(ConfigError, match=needle):
        make_config(**override)
