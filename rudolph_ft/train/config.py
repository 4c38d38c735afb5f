"""One training run = one `TrainConfig`: a YAML file plus `section.key=value` overrides; defaults = the article.

The article's recipe (RECIPE §1): 5 epochs, batch 10, lr 2e-5, bitsandbytes 8-bit Adam, OneCycleLR
(final_div_factor 500, stepped every batch), clip 1.0, loss weights 0.01 / 1 / 7, checkpoint every 500 steps.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .freeze import FreezeConfig

__all__ = ["DEMO_CONFIG", "TrainConfig", "ConfigError", "load_train_config", "apply_overrides", "resolve_data_path"]

# The quick-start demo run, shipped inside the package (configs/demo.yaml in the checkout links to it).
DEMO_CONFIG = Path(__file__).parents[1] / "configs" / "demo.yaml"


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message names the file and key."""


@dataclass
class ModelSection:
    """`name`: preset, official checkpoint or model/run directory. `pretrained: false` = random init."""

    name: str = "350M"
    pretrained: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)  # RuDolphConfig fields, e.g. gradient_checkpointing


@dataclass
class TokenizerSection:
    """`name`: `rudalle`, a bpe.model path, or null with `train_vocab_size` set to learn one from the captions."""

    name: str | None = "rudalle"
    train_vocab_size: int | None = None
    bpe_dropout: float = 0.0


@dataclass
class VQGANSection:
    name: str = "sber-gumbel-f8"
    seed: int | None = None  # random-weight presets only (tiny)
    views: int = 1  # image-code views per image: 1 = argmax codes of the photo; more = augmentation (below)
    augment: str = "gumbel"  # extra views: gumbel (sampled codes) | dihedral (rotations/flips of the photo, argmax)


@dataclass
class DataSection:
    """The data (`rudolph_ft.data.DataConfig` fields); `path` is a CSV/JSONL file or a folder with data.csv.

    A relative `path` is relative to the working directory, like `output_dir` and every path on the command line
    (not to the YAML file, which may live inside the installed package). `data/demo` names the demo set: that folder
    when it is here (the checkout), else the same set drawn into the user's cache (`resolve_data_path`).
    """

    path: str = "data/demo"
    images_root: str | None = None
    caption: str | None = None  # caption template over the columns (default: the article's)
    caption_column: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    allow_outside_root: bool = False  # use image paths leaving images_root (../, absolute, symlinks out)
    cache_dir: str | None = None  # image-code cache (default: ~/.cache/rudolph-ft/codes)


@dataclass
class OptimSection:
    name: str = "adam8bit"  # adam8bit (bitsandbytes) | adamw (torch)
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    group_lr: dict[str, float] = field(default_factory=dict)  # per freeze role, e.g. {output_head: 1e-4}


@dataclass
class ScheduleSection:
    name: str = "onecycle"  # onecycle | constant
    final_div_factor: float = 500.0
    pct_start: float = 0.3  # torch's OneCycleLR default, as the article left it


@dataclass
class TrainSection:
    epochs: int = 5
    batch_size: int = 10  # per process
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    loss_weights: tuple[float, float, float] = (0.01, 1.0, 7.0)  # left text, image, right text
    precision: str = "no"  # no | bf16 | fp16 (accelerate mixed precision)
    seed: int = 42
    nan_policy: str = "stop"  # stop | skip
    max_steps: int | None = None  # stop early (tests, smoke runs)


@dataclass
class LoggingSection:
    every: int = 1
    wandb: str = "off"  # off | online | offline
    wandb_project: str = "rudolph-ft"
    progress: bool = True


@dataclass
class EvalSection:
    every: int = 500  # validation loss + sample captions every N steps (0 = only at the end)
    samples: int = 4  # fixed validation images captioned at each evaluation
    final: bool = True  # dish / nutrient metrics on the validation split at the end
    template: str = "блюдо:"
    captions_per_image: int = 4


@dataclass
class CheckpointSection:
    every: int = 500
    keep: int = 3


@dataclass
class TrainConfig:
    """Everything a run needs; saved as `run_config.yaml` next to every checkpoint."""

    output_dir: str = "runs/run"
    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    vqgan: VQGANSection = field(default_factory=VQGANSection)
    data: DataSection = field(default_factory=DataSection)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    def __post_init__(self) -> None:
        _check_numbers(self)
        checks = [
            (self.train.precision in ("no", "bf16", "fp16"), "train.precision must be no, bf16 or fp16"),
            (self.train.nan_policy in ("stop", "skip"), "train.nan_policy must be stop or skip"),
            (self.optim.name in ("adam8bit", "adamw"), "optim.name must be adam8bit or adamw"),
            (self.schedule.name in ("onecycle", "constant"), "schedule.name must be onecycle or constant"),
            (self.logging.wandb in ("off", "online", "offline"), "logging.wandb must be off, online or offline"),
            (self.vqgan.augment in ("gumbel", "dihedral"), "vqgan.augment must be gumbel or dihedral"),
            (self.vqgan.augment != "dihedral" or self.vqgan.views <= 8, "vqgan.augment=dihedral gives at most 8 views"),
            (self.tokenizer.name is not None or self.tokenizer.train_vocab_size,
             "tokenizer: give a name/path or train_vocab_size to learn one from the captions"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def save(self, path: str | Path) -> None:
        """Write the config as YAML, its paths absolute (a run resumes from any folder), as written in a comment."""
        values, written = _absolute_paths(self.to_dict())
        header = "".join(f"# {key}: {value}\n" for key, value in written.items())
        if header:
            header = f"# paths made absolute from the working directory {os.getcwd()}; as written:\n{header}"
        text = yaml.safe_dump(values, allow_unicode=True, sort_keys=False)
        Path(path).write_text(header + text, encoding="utf-8")


def _absolute_paths(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(`values` with relative paths made absolute, {key: the path as written}) for the keys holding paths.

    output_dir and data paths always are paths; a model, tokenizer or VQGAN name only when it names an existing
    file or folder the loaders would take (a VQGAN preset name wins over a folder of that name, as in `load_vqgan`).
    """
    from ..config import VQGAN_PRESETS

    keys = [("", "output_dir", True), ("data", "path", True), ("data", "images_root", True),
            ("data", "cache_dir", True), ("model", "name", False), ("tokenizer", "name", False),
            ("vqgan", "name", False)]
    written = {}
    for section, name, always in keys:
        holder = values[section] if section else values
        value = holder.get(name)
        if value is None or (section == "vqgan" and value in VQGAN_PRESETS):
            continue
        path = Path(str(value)).expanduser()
        if not always and not path.exists():
            continue
        absolute = os.path.abspath(path)
        if absolute != value:
            holder[name] = absolute
            written[f"{section}.{name}" if section else name] = value
    return values, written


# Every numeric key: (whole number?, allowed?, the allowed range in words). None passes where the type allows it.
_NUMBERS: dict[str, tuple[bool, Callable[[float], bool], str]] = {
    "tokenizer.train_vocab_size": (True, lambda v: v >= 5, ">= 5 (4 special ids, then characters and merges)"),
    "tokenizer.bpe_dropout": (False, lambda v: 0 <= v < 1, "in [0, 1)"),
    "vqgan.seed": (True, lambda v: v >= 0, ">= 0"),
    "vqgan.views": (True, lambda v: v >= 1, ">= 1"),
    "data.val_fraction": (False, lambda v: 0 <= v < 1, "in [0, 1)"),
    "data.split_seed": (True, lambda v: v >= 0, ">= 0"),
    "optim.lr": (False, lambda v: v > 0, "> 0, e.g. 2e-5"),
    "optim.weight_decay": (False, lambda v: v >= 0, ">= 0"),
    "optim.betas": (False, lambda v: 0 <= v < 1, "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    "optim.eps": (False, lambda v: v > 0, "> 0"),
    "optim.group_lr": (False, lambda v: v > 0, "a mapping of freeze roles to learning rates > 0"),
    "schedule.final_div_factor": (False, lambda v: v > 0, "> 0"),
    "schedule.pct_start": (False, lambda v: 0 < v < 1, "in (0, 1)"),
    "train.epochs": (True, lambda v: v >= 1, ">= 1"),
    "train.batch_size": (True, lambda v: v >= 1, ">= 1"),
    "train.grad_accum": (True, lambda v: v >= 1, ">= 1"),
    "train.max_grad_norm": (False, lambda v: v > 0, "> 0"),
    "train.loss_weights": (False, lambda v: v >= 0, "three numbers >= 0 (left text, image, right text)"),
    "train.seed": (True, lambda v: v >= 0, ">= 0"),
    "train.max_steps": (True, lambda v: v >= 1, ">= 1 (or null: no limit)"),
    "logging.every": (True, lambda v: v >= 1, ">= 1 (log every N steps)"),
    "eval.every": (True, lambda v: v >= 0, ">= 0 (0: only at the end)"),
    "eval.samples": (True, lambda v: v >= 0, ">= 0"),
    "eval.captions_per_image": (True, lambda v: v >= 1, ">= 1"),
    "checkpoint.every": (True, lambda v: v >= 0, ">= 0 (0: only at the end)"),
    "checkpoint.keep": (True, lambda v: v >= 1, ">= 1"),
}
_LENGTHS = {"optim.betas": 2, "train.loss_weights": 3}


def _check_numbers(config: TrainConfig) -> None:
    """Raise ConfigError naming the first numeric key whose value has the wrong type or is out of its range."""
    for key, (whole, allowed, words) in _NUMBERS.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value is None and key in ("tokenizer.train_vocab_size", "vqgan.seed", "train.max_steps"):
            continue
        values = list(value.values()) if isinstance(value, dict) else list(value) if isinstance(
            value, (list, tuple)) else [value]
        kind = "whole number" if whole else "number"
        ok = key not in _LENGTHS or (isinstance(value, (list, tuple)) and len(value) == _LENGTHS[key])
        for item in values if ok else []:
            number = isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)
            ok = ok and number and (not whole or isinstance(item, int)) and allowed(item)
        if not ok:
            described = words if key in _LENGTHS or isinstance(value, dict) else f"a {kind} {words}"
            raise ConfigError(f"{key} must be {described}, got {value!r}")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls, values: dict[str, Any], where: str):
    """Instantiate dataclass `cls` from a (partial) mapping, recursing into nested sections, naming bad keys."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{where}.{name}" if where else name)
        elif typing.get_origin(hint) is dict and isinstance(value, dict):
            value_type = typing.get_args(hint)[1]
            kwargs[name] = {k: _coerce(v, value_type, f"{where}.{name}.{k}") for k, v in value.items()}
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            kwargs[name] = tuple(_coerce(v, float, f"{where}.{name}") for v in value)
        else:
            kwargs[name] = _coerce(value, hint, f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}" if where else str(error)) from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where or 'config'}: {error}") from None


def _coerce(value, hint, key: str):
    """YAML 1.1 reads `2e-5` as a string: turn strings into the field's number type, and say so when impossible."""
    number = next((t for t in (float, int) if hint is t or t in typing.get_args(hint)), None)
    if number is None or value is None or isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return value
    try:
        return number(value) if number is float or isinstance(value, str) else value
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`["train.epochs=3", "optim.lr=1e-4"]` applied onto a nested mapping (values parsed as YAML)."""
    values = _plain(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.epochs=3)")
        dotted, raw = item.split("=", 1)
        target = values
        *parents, leaf = dotted.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        try:
            target[leaf] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            problem = str(error).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); quote it for the "
                              "shell as one argument, e.g. 'optim.group_lr={output_head: 1e-4}'") from None
    return values


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                      echo: Callable[[str], None] = print) -> TrainConfig:
    """Read a YAML run config (or the defaults when `path` is None) and apply `section.key=value` overrides.

    `data.path` is then resolved (`resolve_data_path`): the demo set is drawn on first use, telling `echo` where.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
    values = apply_overrides(values, overrides or [])
    try:
        config = _build(TrainConfig, values, "")
    except ConfigError as error:
        raise ConfigError(f"{path or 'config'}: {error}") from None
    return resolve_data_path(config, echo=echo)


def resolve_data_path(config: TrainConfig, echo: Callable[[str], None] = print) -> TrainConfig:
    """Point `config.data.path` at the demo set in the user's cache when it names the demo set and is not here.

    `data/demo` with no such folder in the working directory (an installed rudolph-ft, any folder) becomes the cached
    set (`rudolph_ft.data.demo.demo_data_dir()`), drawn first if missing; so does that cached folder itself when it
    was deleted (a run's `run_config.yaml` names it). Any other path is left as written: a missing one is reported
    by the data checks, never replaced.
    """
    if Path(config.data.path).exists():
        return config
    from ..data.demo import DEMO_DATA, demo_data_dir, ensure_demo_data

    cached = demo_data_dir()
    if Path(config.data.path) in (Path(DEMO_DATA), cached):
        config.data.path = str(ensure_demo_data(cached, echo=echo))
    return config
