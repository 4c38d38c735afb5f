"""The three things that must match: a RuDOLPH model, its text tokenizer and its VQGAN image tokenizer.

A model directory (what training writes, what every inference command accepts) holds:

    config.json + model.safetensors     the model (`save_model`)
    bpe.model                           its tokenizer, when it is not the official one
    vqgan/                              its VQGAN (`save_vqgan`), when it is not the official one
    components.json                     names of the official tokenizer / VQGAN it uses otherwise

A training run directory holds such a directory per checkpoint; `hub.resolve_model_dir` picks the final model,
else (an unfinished run) the newest complete checkpoint.
Official presets use the official ruDALL-E tokenizer (`rudalle`) and VQGAN (`sber-gumbel-f8`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import MODEL_PRESETS
from .device import resolve_device
from .hub import resolve_model_dir

__all__ = ["Components", "load_components", "save_components"]

COMPONENTS_NAME, TOKENIZER_NAME, VQGAN_DIR = "components.json", "bpe.model", "vqgan"
OFFICIAL = {"tokenizer": "rudalle", "vqgan": "sber-gumbel-f8"}


@dataclass
class Components:
    """A model with the tokenizers its ids come from."""

    model: object  # RuDolph
    tokenizer: object  # Tokenizer
    vqgan: object  # VQGAN

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_components(
    model: str | os.PathLike = "350M",
    *,
    tokenizer: str | os.PathLike | None = None,
    vqgan: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    pretrained: bool = True,
    echo: Callable[[str], None] | None = None,
) -> Components:
    """Load a model and the tokenizers that belong to it.

    Args:
        model: a preset name, an official checkpoint, a model directory or a training run directory.
        tokenizer, vqgan: override what the model directory (or preset) names.
        device: where to put the model and the VQGAN: `auto` (CUDA, then Apple MPS, then the CPU), None (the
            CPU) or a torch device name (see `rudolph_ft.device.resolve_device`).
        cache_dir, offline: for hub downloads (see `load_model`). pretrained: False for random preset weights.
        echo: told which checkpoint an unfinished training run (no `final/` yet) resolves to.
    """
    from .model import load_model
    from .model.vqgan import load_vqgan
    from .tokenizer import load_tokenizer

    device = resolve_device(device)
    names = dict(OFFICIAL)
    name = str(model)
    if name in MODEL_PRESETS and not Path(name).exists():
        loaded = load_model(name, pretrained=pretrained, cache_dir=cache_dir, offline=offline, device=device)
    else:
        directory = Path(name).expanduser()
        if directory.is_dir() and not (directory / "pytorch_model.bin").is_file():
            directory = resolve_model_dir(directory, echo=echo)
            names.update(_named_components(directory))
        loaded = load_model(directory, cache_dir=cache_dir, offline=offline, device=device)
    hub = {"cache_dir": cache_dir, "offline": offline}
    return Components(
        model=loaded,
        tokenizer=load_tokenizer(tokenizer if tokenizer is not None else names["tokenizer"], **hub),
        vqgan=load_vqgan(vqgan if vqgan is not None else names["vqgan"], device=device, **hub),
    )


def _named_components(directory: Path) -> dict[str, str]:
    names = {}
    if (directory / COMPONENTS_NAME).is_file():
        names.update(json.loads((directory / COMPONENTS_NAME).read_text(encoding="utf-8")))
    if (directory / TOKENIZER_NAME).is_file():
        names["tokenizer"] = str(directory / TOKENIZER_NAME)
    if (directory / VQGAN_DIR / "config.json").is_file():
        names["vqgan"] = str(directory / VQGAN_DIR)
    return names


def save_components(components: Components, directory: str | os.PathLike, *, tokenizer_name: str | None = None,
                    vqgan_name: str | None = None, adapter_base: dict | None = None) -> Path:
    """Write a model directory: the model, plus the tokenizer / VQGAN (copied, or named when official).

    A model carrying LoRA adapters is written as its adapter alone (`rudolph_ft.lora.save_adapter`), naming
    `adapter_base` (`rudolph_ft.lora.base_reference` of the model the adapters were applied to).
    """
    from .io import atomic_write
    from .model import save_model
    from .model.vqgan import save_vqgan

    if getattr(components.model, "peft_config", None):
        from .lora import save_adapter

        if adapter_base is None:
            raise ValueError("the model carries LoRA adapters: give adapter_base (rudolph_ft.lora.base_reference)")
        directory = save_adapter(components.model, directory, adapter_base)
    else:
        directory = save_model(components.model, directory)
    names = {}
    if tokenizer_name:
        names["tokenizer"] = tokenizer_name
    else:
        components.tokenizer.save(directory / TOKENIZER_NAME)
    if vqgan_name:
        names["vqgan"] = vqgan_name
    else:
        save_vqgan(components.vqgan, directory / VQGAN_DIR)
    text = json.dumps(names, indent=2) + "\n"
    atomic_write(directory / COMPONENTS_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return directory
