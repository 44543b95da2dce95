import pytest
import torch

from geostrata.device import compute_device, resolve_device, resolve_dtype
from geostrata.errors import ConfigError


def test_auto_is_this_processes_gpu_or_the_cpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert compute_device() == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")


def test_named_devices_are_checked(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="only 2 CUDA"):
        resolve_device("cuda:2")
    for bad in ("gpu0", "tpu"):
        with pytest.raises(ConfigError, match=repr(bad)):
            resolve_device(bad)


def test_dtypes_by_name():
    assert resolve_dtype(None, "bfloat16") is torch.bfloat16
    assert resolve_dtype("float32", "bfloat16") is torch.float32
    with pytest.raises(ConfigError, match="int8"):
        resolve_dtype("int8", "float32")
