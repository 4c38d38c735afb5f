"""Which device a model runs on: `auto` picks the best one available (CUDA, then Apple MPS, then the CPU)."""

from __future__ import annotations

import torch

__all__ = ["AUTO", "resolve_device"]

AUTO = "auto"


def resolve_device(device: torch.device | str | None = AUTO) -> torch.device:
    """The torch device to use for `device`.

    Args:
        device: `auto` (CUDA when available, then Apple MPS, then the CPU), None (the CPU), or any torch device
            name (`cpu`, `cuda`, `cuda:1`, `mps`).

    Raises:
        ValueError: a device name torch does not know, or a CUDA / MPS device this machine does not have.
    """
    if device is None:
        return torch.device("cpu")
    if str(device) == AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r} ({err}); use auto, cpu, cuda, cuda:N or mps") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available here (torch {torch.__version__}); "
                             "use --device auto or cpu, or install a CUDA build of torch")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: Apple MPS is not available here; use --device auto or cpu")
    return chosen
