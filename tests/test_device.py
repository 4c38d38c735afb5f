"""`rudolph_ft.device.resolve_device`: `auto` picks CUDA, then Apple MPS, then the CPU; names are checked."""

from __future__ import annotations

import pytest
import torch

from rudolph_ft.device import resolve_device


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has the given accelerators: machine(cuda=True, mps=False)."""

    def pretend(cuda: bool = False, mps: bool = False, cuda_count: int = 1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_count if cuda else 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return pretend


@pytest.mark.parametrize(("cuda", "mps", "expected"), [
    (True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device() == torch.device(expected)  # auto is the default


def test_none_and_explicit_names(machine):
    machine(cuda=True, mps=True, cuda_count=2)
    assert resolve_device(None) == torch.device("cpu")  # the library's historical default
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device(torch.device("mps")) == torch.device("mps")


def test_unavailable_or_unknown_devices_are_user_errors(machine):
    machine(cuda=False, mps=False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    machine(cuda=True, cuda_count=1)
    with pytest.raises(ValueError, match="1 CUDA device"):
        resolve_device("cuda:3")


def test_inference_commands_default_to_auto(machine, monkeypatch):
    """`rudolph-ft caption` without --device loads the components with `auto`, which resolves to this machine."""
    from typer.testing import CliRunner

    import rudolph_ft.components as components_module
    from rudolph_ft.cli import app

    seen = []

    def fake_load(model, **kwargs):
        seen.append((kwargs["device"], resolve_device(kwargs["device"])))
        raise OSError("stop here")

    machine(cuda=False, mps=True)
    monkeypatch.setattr(components_module, "load_components", fake_load)
    result = CliRunner().invoke(app, ["caption", "photo.jpg", "--model", "tiny"])
    assert result.exit_code == 2 and "stop here" in result.output
    assert seen == [("auto", torch.device("mps"))]
