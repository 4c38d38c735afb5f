"""One training run = one `TrainConfig`: a YAML file plus `section.key=value` overrides; defaults = the article.

The article's recipe (RECIPE §1): 5 epochs, batch 10, lr 2e-5, bitsandbytes 8-bit Adam, OneCycleLR
(final_div_factor 500, stepped every batch), clip 1.0, loss weights 0.01 / 1 / 7, checkpoint every 500 steps.

Every key is declared once below (pydantic): its type, range or choices, default and a one-line help
(`rudolph-ft config show` lists them). A value of the wrong type or out of range is refused when the config is
loaded, before any work, with one line naming the file or override, the key, what it must be and what it got.
Types are strict on purpose: YAML turns `epochs: 2.5`, `batch_size: yes` or `name: 350` into a float, a bool or an
int, and silently rounding or stringifying them would train something else than was written.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo

from ..tasks import FOOD
from .freeze import ADAPTERS, ROLES, FreezeConfig

__all__ = ["DEMO_CONFIG", "TrainConfig", "ConfigError", "load_train_config", "read_train_config", "apply_overrides",
           "resolve_data_path", "describe_keys", "format_keys", "ModelSection", "TokenizerSection", "VQGANSection",
           "DataSection", "OptimSection", "ScheduleSection", "TrainSection", "LoggingSection", "EvalSection",
           "CheckpointSection", "TasksSection"]

# The quick-start demo run, shipped inside the package (configs/demo.yaml in the checkout links to it).
DEMO_CONFIG = Path(__file__).parents[1] / "configs" / "demo.yaml"


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message (one line) names the file or override and the key."""


def _number_from_text(value: Any) -> Any:
    """YAML 1.1 reads `2e-5` (no dot) as a string: a string that parses as a number is taken as that number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


# Value types. Whole numbers refuse floats and bools; numbers take ints, floats and numeric strings, never bools
# or inf/nan; strings refuse numbers (quote them); flags take only true/false.
Whole = Annotated[int, Strict()]
Number = Annotated[float, BeforeValidator(_number_from_text), Strict(), Field(allow_inf_nan=False)]
UnitNumber = Annotated[Number, Field(ge=0, lt=1)]


def _false_means(word: str) -> BeforeValidator:
    """YAML 1.1 reads `no` and `off` as false: for a key whose choice is that word, false means the word."""
    return BeforeValidator(lambda value: word if value is False else value)


_Precision = Annotated[Literal["no", "bf16", "fp16"], _false_means("no")]
_WandbMode = Annotated[Literal["off", "online", "offline"], _false_means("off")]


def _key(default: Any = ..., help: str = "", *, expect: str | None = None, note: str = "", **constraints: Any) -> Any:
    """A config key: default, one-line help, range constraints; `expect` words the type where it is not derived
    from the annotation (tuples, mappings); `note` is added to the derived words (e.g. what 0 means)."""
    extra = {k: v for k, v in (("expect", expect), ("note", note)) if v}
    if callable(default):
        return Field(default_factory=default, description=help, json_schema_extra=extra or None, **constraints)
    return Field(default, description=help, json_schema_extra=extra or None, **constraints)


class _Section(BaseModel):
    """A config section: unknown keys are refused; assignments (e.g. `config.data.path = ...`) are checked too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class ModelSection(_Section):
    """`name`: preset, official checkpoint or model/run directory. `pretrained: false` = random init."""

    name: StrictStr = _key("350M", "preset (`rudolph-ft presets`), official checkpoint, or a model / run directory")
    pretrained: StrictBool = _key(True, "load the checkpoint's weights; false: random init (train from scratch)")
    overrides: dict[StrictStr, Any] = _key(dict, "RuDolphConfig fields changed from the preset, e.g. "
                                          "{num_layers: 2, attention_dropout_prob: 0.1}",
                                          expect="a mapping of RuDolphConfig fields to values")
    image_embeddings: Literal["random", "tokenizer"] = _key(
        "random", "start of the image-token embeddings in a from-scratch run: random, or tokenizer (each code's "
        "colour pattern, for the palette tokenizer: codes of like colours start alike)")


class TokenizerSection(_Section):
    """`name`: `rudalle`, a bpe.model path, or null with `train_vocab_size` set to learn one from the captions."""

    name: StrictStr | None = _key("rudalle", "rudalle, a bpe.model path, or null: learn one from the captions")
    train_vocab_size: Whole | None = _key(None, "size of the BPE vocabulary learned from the captions (name: null)",
                                         note=" (4 special ids, then characters and merges)", ge=5)
    bpe_dropout: Number = _key(0.0, "BPE dropout while training: random sub-word splits of the captions", ge=0, lt=1)
    split_digits: StrictBool = _key(False, "learned BPE (name: null): numbers stay digit by digit (no merge holds a "
                                           "digit), so a number's first token says its magnitude")


class VQGANSection(_Section):
    name: StrictStr = _key("sber-gumbel-f8", "image tokenizer: VQGAN preset (sber-gumbel-f8, tiny), the palette "
                             "tokenizer (palette: colour patterns of 8x8 patches, for from-scratch demos), a saved "
                             "tokenizer folder or weights file")
    seed: Whole | None = _key(None, "weight seed of the random-weight presets (tiny)", ge=0)
    views: Whole = _key(1, "image-code views per photo: 1 = argmax codes of the photo; more = augmentation", ge=1)
    augment: Literal["gumbel", "dihedral", "shift"] = _key(
        "gumbel", "extra views: gumbel (sampled codes), dihedral (rotations / flips of the photo, at most 8 views) "
        "or shift (dihedral views moved by a random few pixels: any number of views)")
    fit: Literal["none", "kmeans"] = _key(
        "none", "kmeans: before encoding, fit a random-weight VQGAN's code projection to k-means centroids of its "
        "encoder features on the training photos (every code used; labels unused), or the palette tokenizer's "
        "colour patterns to k-means centroids of the photos' patches; none: the tokenizer as loaded")


class DataSection(_Section):
    """The data (`rudolph_ft.data.DataConfig` fields); `path` is a CSV/JSONL file or a folder with data.csv.

    A relative `path` is relative to the working directory, like `output_dir` and every path on the command line
    (not to the YAML file, which may live inside the installed package). `data/demo` names the demo set: that folder
    when it is here (the checkout), else the same set drawn into the user's cache (`resolve_data_path`).
    """

    path: StrictStr = _key("data/demo", "CSV / JSONL table or a folder with data.csv (data/demo: the demo set)")
    images_root: StrictStr | None = _key(None, "folder the image paths are relative to (default: the table's folder)")
    caption: StrictStr | None = _key(None, "caption template over the columns (default: the article's)")
    caption_column: StrictStr | None = _key(None, "take the captions verbatim from this column")
    val_fraction: Number = _key(0.1, "share of the rows held out for validation", ge=0, lt=1)
    split_seed: Whole = _key(0, "seed of the train / validation split", ge=0)
    allow_outside_root: StrictBool = _key(False, "use image paths leaving images_root (../, absolute, symlinks out)")
    cache_dir: StrictStr | None = _key(None, "image-code cache (default: ~/.cache/rudolph-ft/codes)")


class OptimSection(_Section):
    name: Literal["adam8bit", "adamw"] = _key("adam8bit", "adam8bit (bitsandbytes 8-bit Adam) or adamw (torch)")
    lr: Number = _key(2e-5, "peak learning rate", note=", e.g. 2e-5", gt=0)
    weight_decay: Number = _key(0.0, "decoupled weight decay", ge=0)
    betas: tuple[UnitNumber, UnitNumber] = _key((0.9, 0.999), "Adam betas",
                                               expect="two numbers in [0, 1), e.g. [0.9, 0.999]")
    eps: Number = _key(1e-8, "Adam epsilon", gt=0)
    group_lr: dict[StrictStr, Annotated[Number, Field(gt=0)]] = _key(
        dict, "learning rate per freeze role, e.g. {output_head: 1e-4} (other roles: lr)",
        expect="a mapping of freeze roles to learning rates > 0")

    @model_validator(mode="after")
    def _known_roles(self) -> OptimSection:
        roles = (*ROLES, ADAPTERS)
        unknown = sorted(set(self.group_lr) - set(roles))
        if unknown:
            raise ValueError(f"optim.group_lr: unknown role(s) {', '.join(unknown)}; roles are {', '.join(roles)}")
        return self


class ScheduleSection(_Section):
    name: Literal["onecycle", "constant"] = _key("onecycle", "learning-rate schedule: OneCycleLR or constant")
    final_div_factor: Number = _key(500.0, "OneCycleLR: the last lr is the first lr / final_div_factor", gt=0)
    pct_start: Number = _key(0.3, "OneCycleLR: share of the steps spent warming up (torch's default)", gt=0, lt=1)


class TrainSection(_Section):
    epochs: Whole = _key(5, "passes over the training split", ge=1)
    batch_size: Whole = _key(10, "examples per batch, per process", ge=1)
    grad_accum_steps: Whole = _key(1, "batches whose gradients are summed into one optimizer step", ge=1,
                                  validation_alias=AliasChoices("grad_accum_steps", "grad_accum"))
    gradient_checkpointing: StrictBool | None = _key(
        None, "recompute each layer's activations in the backward pass (less memory, slower)",
        note=" (or null: on for finetune.method lora / qlora, off for full)")
    strategy: Literal["ddp", "fsdp"] = _key("ddp", "several processes: ddp (replicate the model) or fsdp (shard it)")
    max_grad_norm: Number = _key(1.0, "gradients are clipped to this norm", gt=0)
    loss_weights: tuple[Annotated[Number, Field(ge=0)], Annotated[Number, Field(ge=0)],
                        Annotated[Number, Field(ge=0)]] = _key(
        (0.01, 1.0, 7.0), "loss weights of the left text, the image and the right text",
        expect="three numbers >= 0 (left text, image, right text)")
    precision: _Precision = _key("no", "mixed precision (accelerate): no, bf16 or fp16")
    seed: Whole = _key(42, "seed of the initialization, batch order and dropout", ge=0)
    nan_policy: Literal["stop", "skip"] = _key("stop", "on a non-finite loss: stop the run, or skip the batch")
    max_steps: Whole | None = _key(None, "stop after this many optimizer steps (tests, smoke runs)",
                                  note=" (or null: no limit)", ge=1)


class LoggingSection(_Section):
    every: Whole = _key(1, "log the metrics every N steps", ge=1)
    wandb: _WandbMode = _key("off", "Weights & Biases logging: off, online or offline")
    wandb_project: StrictStr = _key("rudolph-ft", "Weights & Biases project")
    progress: StrictBool = _key(True, "show a progress bar")


class EvalSection(_Section):
    every: Whole = _key(500, "validation loss + sample captions every N steps", note=" (0: only at the end)", ge=0)
    samples: Whole = _key(4, "fixed validation photos captioned at each evaluation", ge=0)
    final: StrictBool = _key(True, "dish / nutrient metrics on the validation split at the end")
    template: StrictStr = _key(FOOD.prompt, "start of every sampled caption")
    captions_per_image: Whole = _key(4, "captions sampled per photo by the final evaluation", ge=1)


class FinetuneSection(_Section):
    method: Literal["full", "lora", "qlora"] = _key(
        "full", "full: the freeze section's roles train; lora: low-rank adapters (lora section) train beside them; "
        "qlora: the same on a base quantized to 4-bit NF4")


class LoraSection(_Section):
    r: Whole = _key(8, "adapter rank", ge=1)
    alpha: Number = _key(16.0, "adapter scale numerator: the update is alpha / r * B A", gt=0)
    dropout: UnitNumber = _key(0.05, "dropout on the adapters' input")
    targets: list[StrictStr] = _key(lambda: ["attention", "mlp"], "roles (attention, mlp, output_head) or module "
                                    "names / globs (e.g. transformer.layers.2?.mlp.*) that get adapters",
                                    expect="a list of roles or module names", min_length=1)
    quantize: Literal["targets", "all"] = _key(
        "targets", "qlora: quantize the adapted linears, or all linears of the transformer layers (least memory)")


_Weight = Annotated[Number, Field(ge=0)]


class TasksSection(_Section):
    """Multitask training (FBC2): a table of task rows trained beside data.path, whose rows stay captioning.

    `data.path`'s rows keep the single-task layout (empty left text, `train.loss_weights`), so its food evaluation
    is unchanged; the table's rows are built by their `rudolph_ft.tasks.Task` (task tokens, dropout, loss weights).
    """

    path: StrictStr | None = _key(None, "multitask table (CSV / JSONL: task, left_text, image, right_text) trained "
                                        "beside data.path", note=" (or null: single-task training)")
    val_path: StrictStr | None = _key(None, "a task table of held-out rows (as tasks.path, same images_root): each "
                                            "task's loss on them logged as val_task_loss/<task> at every "
                                            "validation", note=" (or null: none)")
    images_root: StrictStr | None = _key(None, "folder the table's image paths are relative to (default: its folder)")
    loss_weights: dict[StrictStr, tuple[_Weight, _Weight, _Weight]] = _key(
        dict, "per-task (left text, image, right text) loss weights replacing the Task's, e.g. {vqa: [1, 1, 7]}",
        expect="a mapping of task names to three numbers >= 0")
    token_dropout: UnitNumber = _key(0.25, "probability of replacing a row's task token by its side's UNK")
    augment: list[StrictStr] = _key(lambda: ["vqa"], "tasks whose rows' photos get data.path's image views "
                                    "(vqgan.views, vqgan.augment): leave out a task whose answer changes when the "
                                    "photo turns or mirrors (text recognition, «what is on the left?»)",
                                    expect="a list of task names")
    balanced: StrictBool = _key(False, "draw each epoch's examples so that every task (data.path's: captioning) is "
                                       "equally likely, instead of one pass over all rows")

    @model_validator(mode="after")
    def _known_tasks(self) -> TasksSection:
        from ..tasks import TASKS

        for key, names in (("loss_weights", self.loss_weights), ("augment", self.augment)):
            unknown = sorted(set(names) - set(TASKS))
            if unknown:
                raise ValueError(f"tasks.{key}: unknown task(s) {', '.join(unknown)}; tasks are {', '.join(TASKS)}")
        if self.val_path is not None and self.path is None:
            raise ValueError("tasks.val_path is the validation table of a multitask run: set tasks.path too")
        return self


class CheckpointSection(_Section):
    every: Whole = _key(500, "save a checkpoint every N steps", note=" (0: only at the end)", ge=0)
    keep: Whole = _key(3, "newest checkpoints kept (older ones are deleted)", ge=1)


class TrainConfig(BaseModel):
    """Everything a run needs; saved as `run_config.yaml` next to every checkpoint.

    Built from a mapping it is checked key by key: `load_train_config` and `replace` turn any problem into a
    one-line `ConfigError` (`TrainConfig(**values)` raises pydantic's ValidationError, a ValueError too). Sections
    are plain attributes (`config.train.epochs`) and may be assigned to (checked as well).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    output_dir: StrictStr = _key("runs/run", "the run folder: checkpoints, metrics, run_config.yaml")
    model: ModelSection = _key(ModelSection, "the model")
    tokenizer: TokenizerSection = _key(TokenizerSection, "the text tokenizer")
    vqgan: VQGANSection = _key(VQGANSection, "the image tokenizer")
    data: DataSection = _key(DataSection, "the data")
    freeze: FreezeConfig = _key(FreezeConfig, "what trains")
    optim: OptimSection = _key(OptimSection, "the optimizer")
    schedule: ScheduleSection = _key(ScheduleSection, "the learning-rate schedule")
    train: TrainSection = _key(TrainSection, "the training loop")
    logging: LoggingSection = _key(LoggingSection, "metrics and progress")
    eval: EvalSection = _key(EvalSection, "evaluation during and after training")
    checkpoint: CheckpointSection = _key(CheckpointSection, "checkpoints")
    finetune: FinetuneSection = _key(FinetuneSection, "full fine-tuning or adapters")
    lora: LoraSection = _key(LoraSection, "the adapters of finetune.method lora / qlora")
    tasks: TasksSection = _key(TasksSection, "multitask training (a table of task rows beside data.path)")

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, values: Any) -> Any:
        """`train:` with nothing under it (YAML null) is an empty section, as it reads."""
        if isinstance(values, dict):
            return {k: {} if v is None and k in _SECTIONS else v for k, v in values.items()}
        return values

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        """Checks across keys (single keys are checked by their types)."""
        if self.vqgan.augment == "dihedral" and self.vqgan.views > 8:
            raise ValueError(f"vqgan.augment=dihedral gives at most 8 views, got vqgan.views={self.vqgan.views}")
        if self.tokenizer.name is None and not self.tokenizer.train_vocab_size:
            raise ValueError("tokenizer: give a name/path or train_vocab_size to learn one from the captions")
        return self

    @property
    def gradient_checkpointing(self) -> bool:
        """`train.gradient_checkpointing`, null resolved: on for LoRA / QLoRA, off for full fine-tuning.

        Adapters train on a frozen base, so a LoRA step skips the base's weight gradients and most optimizer work;
        recomputing the layers in the backward pass spends that saving on memory: at 350M, batch 2 on the CPU, a
        LoRA step with checkpointing stays near the article freeze's time at about 0.6x its peak memory
        (`benchmarks/bench_peft.py`). peft's `prepare_model_for_kbit_training` makes the same default for QLoRA.
        """
        if self.train.gradient_checkpointing is not None:
            return self.train.gradient_checkpointing
        return self.finetune.method != "full"

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with top-level keys changed (e.g. `output_dir`), checked like a loaded config."""
        values = self.model_dump()
        values.update({k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in changes.items()})
        return _validate(values, "config", set())

    def to_dict(self) -> dict[str, Any]:
        return _plain(self.model_dump())

    def save(self, path: str | Path) -> None:
        """Write the config as YAML, its paths absolute (a run resumes from any folder), as written in a comment."""
        values, written = _absolute_paths(self.to_dict())
        header = "".join(f"# {key}: {value}\n" for key, value in written.items())
        if header:
            header = f"# paths made absolute from the working directory {os.getcwd()}; as written:\n{header}"
        text = yaml.safe_dump(values, allow_unicode=True, sort_keys=False)
        Path(path).write_text(header + text, encoding="utf-8")


_SECTIONS = {name: field.annotation for name, field in TrainConfig.model_fields.items()
             if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}


def _absolute_paths(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(`values` with relative paths made absolute, {key: the path as written}) for the keys holding paths.

    output_dir and data paths always are paths; a model, tokenizer or VQGAN name only when it names an existing
    file or folder the loaders would take (a VQGAN preset name wins over a folder of that name, as in `load_vqgan`).
    """
    from ..config import VQGAN_PRESETS

    keys = [("", "output_dir", True), ("data", "path", True), ("data", "images_root", True),
            ("data", "cache_dir", True), ("tasks", "path", True), ("tasks", "val_path", True),
            ("tasks", "images_root", True), ("model", "name", False), ("tokenizer", "name", False),
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


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---- what each key must be, in words (errors) and in short (`config show`) ----------------------------------
def _fields() -> list[tuple[str, FieldInfo]]:
    """(dotted key, field) for every key of TrainConfig, in declaration order."""
    out = []
    for name, field in TrainConfig.model_fields.items():
        section = _SECTIONS.get(name)
        if section is None:
            out.append((name, field))
        else:
            out.extend((f"{name}.{sub}", subfield) for sub, subfield in section.model_fields.items())
    return out


def _unpack(annotation: Any, metadata: list) -> tuple[Any, list, bool]:
    """(base type, constraint metadata, nullable) of a field annotation: Annotated and `X | None` unwrapped."""
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation, *more = typing.get_args(annotation)
            metadata = [*metadata, *more]
        elif origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation):
            nullable = True
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        else:
            return annotation, metadata, nullable


def _bounds(metadata: list) -> str:
    """The range of the constraints in `metadata`, in words: ">= 1", "> 0", "in [0, 1)" or ""."""
    low = high = None
    for item in metadata:
        for attr, bracket in (("ge", "["), ("gt", "(")):
            if getattr(item, attr, None) is not None:
                low = (bracket, getattr(item, attr))
        for attr, bracket in (("le", "]"), ("lt", ")")):
            if getattr(item, attr, None) is not None:
                high = (bracket, getattr(item, attr))
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    if high:
        return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"
    return ""


def _describe(field: FieldInfo) -> tuple[str, str]:
    """(short type for the key table, what the value must be in words for errors)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    base, metadata, nullable = _unpack(field.annotation, list(field.metadata))
    bounds, note = _bounds(metadata), str(extra.get("note", ""))
    if typing.get_origin(base) is Literal:
        choices = [str(c) for c in typing.get_args(base)]
        short, words = " | ".join(choices), "one of " + ", ".join(choices)
    elif base is bool:
        short, words = "bool", "true or false"
    elif base is int:
        short, words = f"int {bounds}".strip(), f"a whole number {bounds}".strip()
    elif base is float:
        short, words = f"float {bounds}".strip(), f"a number {bounds}".strip()
    elif base is str:
        short, words = "str", "a string"
    elif typing.get_origin(base) is tuple:
        short, words = f"[{', '.join(['float'] * len(typing.get_args(base)))}]", "a list"
    elif typing.get_origin(base) is dict:
        short, words = "mapping", "a mapping"
    elif typing.get_origin(base) is list:
        short, words = "list", "a list"
    else:
        short, words = "section", "a mapping"
    if nullable:  # unless the note says what null means
        short, words = f"{short} | null", words if "null" in note else f"{words} or null"
    return short, str(extra.get("expect") or words + note)


def describe_keys() -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every key of a run config, in file order (`rudolph-ft config show`)."""
    rows = []
    for dotted, field in _fields():
        default = field.get_default(call_default_factory=True)
        default = _plain(default.model_dump()) if isinstance(default, BaseModel) else _plain(default)
        shown = yaml.safe_dump(default, default_flow_style=True, allow_unicode=True, width=10**6).strip()
        shown = shown.removesuffix("\n...").removesuffix("...").strip()
        rows.append((dotted, _describe(field)[0], shown, field.description or ""))
    return rows


def format_keys() -> str:
    """Every key with its type, default and help: an aligned table, a heading per section."""
    rows = describe_keys()
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    widths[2] = min(widths[2], 20)  # a long default (freeze.train) overflows its own row, not the whole table
    lines = [f"{'key':<{widths[0]}}  {'type':<{widths[1]}}  {'default':<{widths[2]}}  help"]
    section = None
    for dotted, kind, default, help_text in rows:
        head = dotted.split(".")[0] if "." in dotted else ""
        if head != section:
            section = head
            if head:
                lines.append(f"[{head}]  {TrainConfig.model_fields[head].description}")
        lines.append(f"{dotted:<{widths[0]}}  {kind:<{widths[1]}}  {default:<{widths[2]}}  {help_text}".rstrip())
    return "\n".join(lines)


# ---- pydantic's errors as one line naming the key -------------------------------------------------------------
def _explain(error: ValidationError, values: Any, where: str, from_overrides: set[str]) -> str:
    """The first problem of `error` in one line: where (file / override), the key, what it must be, what it got."""
    problems = error.errors()
    first = problems[0]
    loc = [str(part) for part in first["loc"]]
    depth = 2 if loc and loc[0] in _SECTIONS and len(loc) > 1 else 1
    dotted = ".".join(loc[:depth])
    if any(dotted == k or dotted.startswith(k + ".") or k.startswith(dotted + ".") for k in from_overrides):
        where = "override"
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    kind = first["type"]
    if not loc:  # a check across keys (TrainConfig._consistent)
        return f"{where}: {_reason(first)}{more}"
    if kind == "extra_forbidden":
        return f"{where}: {_unknown(loc[:depth])}{more}"
    if kind == "value_error":
        reason = _reason(first)
        return f"{where}: {reason if reason.startswith(dotted) else f'{dotted}: {reason}'}{more}"
    if depth == 1 and loc[0] in _SECTIONS:
        known = ", ".join(_SECTIONS[loc[0]].model_fields)
        return (f"{where}: {loc[0]} must be a mapping of its keys ({known}), got {first['input']!r}{more}")
    field = dict(_fields())[dotted]
    got = first["input"] if len(loc) == depth else _lookup(values, loc[:depth])
    message = f"{where}: {dotted} must be {_describe(field)[1]}, got {got!r}"
    base = _unpack(field.annotation, [])[0]
    if base is str and not isinstance(got, str) and isinstance(got, (int, float, bool)):
        text = str(got).lower() if isinstance(got, bool) else str(got)
        quoted = f"'{dotted}=\"{text}\"'" if where == "override" else f'{loc[-1]}: "{text}"'
        message += f" (quote it to mean the text: {quoted})"
    return message + more


def _reason(problem: dict) -> str:
    error = (problem.get("ctx") or {}).get("error")
    return str(error) if error is not None else problem["msg"]


def _lookup(values: Any, loc: list[str]) -> Any:
    for part in loc:
        if not isinstance(values, dict):
            return values
        values = values.get(part)
    return values


def _unknown(loc: list[str]) -> str:
    """An unknown key or section, with the close matches and every known key of its level."""
    if len(loc) == 1:
        known = list(TrainConfig.model_fields)
        what = f"unknown key or section {loc[0]}"
    else:
        known = list(_SECTIONS[loc[0]].model_fields)
        what = f"unknown key {'.'.join(loc)}"
    close = difflib.get_close_matches(loc[-1], known, n=1)
    hint = f" (did you mean {'.'.join([*loc[:-1], close[0]])}?)" if close else ""
    level = f"keys of {loc[0]}" if len(loc) > 1 else "top-level keys and sections"
    return f"{what}{hint}; known {level}: {', '.join(known)}"


def _validate(values: Any, where: str, from_overrides: set[str]) -> TrainConfig:
    """TrainConfig from a mapping, or a one-line ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of sections ({', '.join(TrainConfig.model_fields)}), "
                          f"got {type(values).__name__}")
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as error:
        raise ConfigError(_explain(error, values, where, from_overrides)) from None


# ---- loading ----------------------------------------------------------------------------------------------------
def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`["train.epochs=3", "optim.lr=1e-4"]` applied onto a nested mapping (values parsed as YAML)."""
    values = _plain(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.epochs=3)")
        dotted, raw = item.split("=", 1)
        target = values
        *parents, leaf = dotted.strip().split(".")
        for depth, part in enumerate(parents, 1):
            if target.get(part) is None:  # absent, or `train:` with nothing under it
                target[part] = {}
            target = target[part]
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parents[:depth])} is not a section")
        try:
            target[leaf] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            problem = str(error).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); quote it for the "
                              "shell as one argument, e.g. 'optim.group_lr={output_head: 1e-4}'") from None
    return values


def read_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """The checked config of a YAML file (or the defaults when `path` is None) with `section.key=value` overrides,
    touching nothing else (no data is drawn: see `load_train_config`)."""
    values: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(TrainConfig.model_fields)}), "
                              f"got {type(values).__name__}")
    overrides = overrides or []
    values = apply_overrides(values, overrides)
    from_overrides = {item.split("=", 1)[0].strip() for item in overrides}
    return _validate(values, str(path) if path is not None else "config", from_overrides)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line: what is wrong and where (PyYAML's own message spans several lines)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                      echo: Callable[[str], None] = print) -> TrainConfig:
    """Read a YAML run config (or the defaults when `path` is None) and apply `section.key=value` overrides.

    `data.path` is then resolved (`resolve_data_path`): the demo set is drawn on first use, telling `echo` where.
    """
    return resolve_data_path(read_train_config(path, overrides), echo=echo)


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
