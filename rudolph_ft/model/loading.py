"""Build a RuDOLPH from a preset, an official checkpoint or one of our own saved models; save ours atomically.

Official `pytorch_model.bin` files hold, next to the weights, the reference's four attention-mask buffers.
Those decide how the original code attends (rc4-era masks keep the right text from seeing the left text,
rc10 ones do not), so they are checked against the masks we build and select `r_text_sees_l_text`; they are
then dropped, by an explicit key filter, before a strict load of the weights.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from ..config import MODEL_PRESETS, RuDolphConfig
from ..hub import WeightsNotFoundError, resolve_file, resolve_model_dir
from ..io import atomic_write
from .masks import MASK_KINDS, build_masks
from .rudolph import RuDolph

__all__ = [
    "REFERENCE_MASK_KEYS",
    "load_model",
    "save_model",
    "split_reference_masks",
    "config_for_reference_masks",
    "model_from_state_dict",
]

log = logging.getLogger(__name__)

REFERENCE_MASK_KEYS = tuple(f"transformer.{kind}_mask" for kind in MASK_KINDS)
WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"


def split_reference_masks(state_dict: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(weights, masks): the reference's four mask buffers taken out of a state dict, nothing else."""
    weights = {k: v for k, v in state_dict.items() if k not in REFERENCE_MASK_KEYS}
    masks = {k: v for k, v in state_dict.items() if k in REFERENCE_MASK_KEYS}
    return weights, masks


def config_for_reference_masks(config: RuDolphConfig, masks: dict[str, torch.Tensor]) -> RuDolphConfig:
    """`config` with `r_text_sees_l_text` set to the variant whose masks equal the checkpoint's.

    The reference slices each stored mask to the sequence length, so only that square is compared.
    Raises ValueError when the masks match neither variant (the checkpoint is for another layout).
    """
    if not masks:
        return config
    size = config.total_seq_length
    stored = {}
    for key, mask in masks.items():
        if mask.shape[0] < size or mask.shape[1] < size:
            raise ValueError(f"checkpoint mask {key} is {tuple(mask.shape)}, smaller than this config's sequence "
                             f"({size} tokens): the checkpoint was made for another layout")
        stored[key] = mask[:size, :size] != 0
    for sees in (config.r_text_sees_l_text, not config.r_text_sees_l_text):
        candidate = config.replace(r_text_sees_l_text=sees)
        ours = build_masks(candidate)
        if all(torch.equal(ours[MASK_KINDS.index(key.split(".")[1][: -len("_mask")])], mask)
               for key, mask in stored.items()):
            if sees != config.r_text_sees_l_text:
                log.info("checkpoint masks: right text %s the left text; config adjusted",
                         "sees" if sees else "does not see")
            return candidate
    raise ValueError("the checkpoint's attention masks match no RuDOLPH layout for this config (sequence "
                     f"{config.l_text_seq_length}+{config.image_seq_length}+{config.r_text_seq_length}, kernels "
                     f"{config.kernel_size}/{config.last_kernel_size}): wrong preset for these weights?")


def model_from_state_dict(config: RuDolphConfig, state_dict: dict[str, torch.Tensor]) -> RuDolph:
    """A `RuDolph` holding `state_dict` (ours or the reference's), loaded strictly but for the mask buffers."""
    weights, masks = split_reference_masks(state_dict)
    config = config_for_reference_masks(config, masks)
    with torch.device("meta"):  # no random init of weights that are about to be replaced
        model = RuDolph(config)
    _check_shapes(model, weights)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}  # fp16 files -> fp32
    model.load_state_dict(weights, strict=True, assign=True)
    model.reset_buffers()
    return model


def _check_shapes(model: RuDolph, weights: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or wrong:
        lines = [f"{len(missing)} missing: {', '.join(missing[:5])}" if missing else "",
                 f"{len(unexpected)} unexpected: {', '.join(unexpected[:5])}" if unexpected else "",
                 *wrong[:5]]
        raise ValueError("checkpoint does not fit the config"
                         f"{' ' + repr(model.config.name) if model.config.name else ''}: "
                         + "; ".join(x for x in lines if x) + ". Pick the preset these weights were trained with.")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as error:  # truncated (a copy or save cut short) or not a safetensors file
            raise ValueError(f"{path}: cannot read the weights ({error}; {path.stat().st_size} bytes): the file is "
                             "truncated or damaged; copy it again or re-save the model") from None
    # pickled official checkpoints: weights_only=True never runs code from the file
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError) as error:  # torch's message for a cut-off zip: "failed finding central directory"
        raise ValueError(f"{path}: cannot read the checkpoint ({error}): the file is truncated or damaged; "
                         "download or copy it again") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def _find_config_and_weights(path: Path, preset: str | None) -> tuple[RuDolphConfig, Path]:
    if path.is_dir():
        if (path / "pytorch_model.bin").is_file():
            path = path / "pytorch_model.bin"
        else:  # ours: a model directory, or a training run's final model / newest checkpoint
            path = resolve_model_dir(path)
            if not (path / WEIGHTS_NAME).is_file():
                raise FileNotFoundError(f"{path}: has {CONFIG_NAME} but no {WEIGHTS_NAME}")
            return RuDolphConfig.load(path / CONFIG_NAME), path / WEIGHTS_NAME
    if path.suffix == ".safetensors" and (path.parent / CONFIG_NAME).is_file():
        return RuDolphConfig.load(path.parent / CONFIG_NAME), path
    if preset is None:
        raise ValueError(f"{path}: an official checkpoint carries no config; say which preset it is, e.g. "
                         f"load_model({str(path)!r}, preset='350M') (presets: {', '.join(MODEL_PRESETS)})")
    return RuDolphConfig.from_preset(preset), path


def load_model(
    preset_or_path: str | os.PathLike = "350M",
    *,
    preset: str | None = None,
    pretrained: bool = True,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **overrides,
) -> RuDolph:
    """Load a RuDOLPH model, in eval mode.

    Args:
        preset_or_path: a preset name (`350M`, `350M_v1`, `1.3B`, `2.7B`, `2.7B_fbc2`, `tiny`, `demo`: weights
            from the hub cache, downloaded if missing), an official `pytorch_model.bin` (or its folder), one of
            our saved model folders (`model.safetensors` + `config.json`) or a training run directory.
        preset: the architecture of an official checkpoint given by path (default: the file's own config).
        pretrained: False builds the preset with random weights (tiny presets have no published weights).
        cache_dir: HF cache override. offline: forbid downloads (default: `HF_HUB_OFFLINE`).
        device, dtype: where and in which precision to put the model.
        overrides: config fields to change (e.g. `gradient_checkpointing=True`, dropout probabilities).
    """
    name = str(preset_or_path)
    path = Path(name).expanduser()
    if name in MODEL_PRESETS and not path.exists():
        config = RuDolphConfig.from_preset(name)
        if not pretrained or config.hub is None:
            if pretrained:
                raise WeightsNotFoundError(f"preset {name!r} has no published weights; use pretrained=False for a "
                                           "random init, or pass the path of a trained model")
            return _finish(RuDolph(config.replace(**overrides) if overrides else config), device, dtype)
        path = resolve_file(config.hub, cache_dir=cache_dir, offline=offline, what=f"RuDOLPH {name} weights")
        preset = preset or name
    elif not path.exists():
        raise FileNotFoundError(f"{name!r} is neither a preset ({', '.join(MODEL_PRESETS)}) nor an existing path")
    elif path.is_dir() and not (path / "pytorch_model.bin").is_file():
        folder = resolve_model_dir(path)
        if (folder / "base.json").is_file():  # a LoRA run: its base (checked), the adapter applied (needs peft)
            from ..lora import load_adapter_model
            if overrides:
                raise ValueError(f"{folder} is a LoRA adapter: its base's architecture cannot take overrides "
                                 f"({', '.join(overrides)})")
            return _finish(load_adapter_model(folder, cache_dir=cache_dir, offline=offline), device, dtype)
    config, weights_path = _find_config_and_weights(path, preset)
    if overrides:
        config = config.replace(**overrides)
    model = model_from_state_dict(config, _read_weights(weights_path))
    return _finish(model, device, dtype)


def _finish(model: RuDolph, device, dtype) -> RuDolph:
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def save_model(model: RuDolph, directory: str | os.PathLike) -> Path:
    """Write `model.safetensors` + `config.json` into `directory`, each atomically (temp file, then rename)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    config_json = json.dumps(model.config.to_dict(), indent=2, ensure_ascii=False) + "\n"
    atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(config_json, encoding="utf-8"))
    return directory

