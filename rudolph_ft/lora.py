"""LoRA and QLoRA adapters for RuDOLPH, on peft: choose targets by role, inject, save/load adapter-only folders, merge.

Adapters are injected with peft's `inject_adapter_in_model`, not `get_peft_model`: the model stays the same
`RuDolph` object (its keyword-only `forward(ids, loss_weights=...)`, its `config`, the methods the generation
pipelines call, `isinstance` checks), where a `PeftModel` would wrap it behind a generic forward and a config of its
own. Parameter names only gain peft's infixes (`...query_key_value.base_layer.weight`, `....lora_A.default.weight`).

QLoRA replaces the frozen base `nn.Linear`s by bitsandbytes NF4 `Linear4bit`s (compute in bf16 on CUDA, fp32 on
the CPU) before the adapters, which stay in full precision.

An adapter folder holds peft's `adapter_model.safetensors` + `adapter_config.json` (loadable by peft itself) and
`base.json`, which names the base model the adapter belongs to (a preset and its hub repository, or a model folder
and the sha256 of its weights) and how it was applied (lora or qlora).

Example:
    >>> model = load_model("350M")
    >>> model = apply_lora(model, LoraSettings(targets=["attention", "mlp"]))
    >>> ...train: only the adapters have requires_grad...
    >>> save_adapter(model, "run/adapter", base_reference("350M"))
    >>> model = load_adapter_model("run/adapter")          # the base, checked, plus the adapter
    >>> save_model(merge_adapter(model), "run/merged")     # a plain RuDOLPH again
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .config import MODEL_PRESETS
from .io import atomic_write
from .model.rudolph import RuDolph, dropout, register_head_rows_forward
from .train.optim import _import_bitsandbytes

__all__ = [
    "LORA_ROLES",
    "LoraSettings",
    "target_modules",
    "apply_lora",
    "adapter_parameters",
    "base_reference",
    "save_adapter",
    "load_adapter_model",
    "merge_adapter",
    "is_adapter_folder",
    "lora_summary",
    "merge_run",
]

#: role -> module names inside each transformer layer (or from the model's root, for the output head)
LORA_ROLES: dict[str, tuple[str, ...]] = {
    "attention": ("attention.query_key_value", "attention.dense"),
    "mlp": ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
    "output_head": ("to_logits.1",),
}
ADAPTER_WEIGHTS, ADAPTER_CONFIG, BASE_NAME = "adapter_model.safetensors", "adapter_config.json", "base.json"
TRAINED_NAME = "trained_weights.safetensors"  # base parameters the caller unfroze and trained next to the adapters
_PEFT_PREFIX = "base_model.model."  # what PeftModel.save_pretrained puts before module names: keeps files peft's


@dataclass
class LoraSettings:
    """What to adapt, and how.

    Attributes:
        method: "lora" (adapters on full-precision weights) or "qlora" (base linears quantized to NF4 first).
        r: adapter rank. alpha: scale numerator (the update is `alpha / r * B @ A`). dropout: on the adapter's input.
        targets: roles (`attention`, `mlp`, `output_head`) and/or module-name patterns (an exact name, a prefix such
            as `transformer.layers.23`, or a glob such as `transformer.layers.2?.mlp.*`); only nn.Linear modules.
        quantize: qlora only: "targets" quantizes the adapted linears, "all" every linear of the transformer layers
            too (the QLoRA paper's choice: least memory).
    """

    method: Literal["lora", "qlora"] = "lora"
    r: int = 8
    alpha: float = 16
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["attention", "mlp"])
    quantize: Literal["targets", "all"] = "targets"

    def __post_init__(self) -> None:
        if self.method not in ("lora", "qlora"):
            raise ValueError(f"LoRA method must be 'lora' or 'qlora', got {self.method!r}")
        if self.quantize not in ("targets", "all"):
            raise ValueError(f"quantize must be 'targets' or 'all', got {self.quantize!r}")
        if self.r < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA needs r >= 1 and 0 <= dropout < 1, got r={self.r}, dropout={self.dropout}")
        if not self.targets:
            raise ValueError(f"LoRA needs at least one target (roles: {', '.join(LORA_ROLES)})")


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def target_modules(model: nn.Module, targets: list[str]) -> list[str]:
    """The exact names of the nn.Linear modules that `targets` (roles and/or patterns) select, in model order.

    Raises ValueError naming any role or pattern that selects nothing, so a typo never trains fewer modules.
    """
    linears = _linear_names(model)
    layers = sorted({n.split(".")[2] for n in linears if n.startswith("transformer.layers.")}, key=int)
    chosen: set[str] = set()
    for target in targets:
        if target in LORA_ROLES:
            suffixes = LORA_ROLES[target]
            found = list(suffixes) if target == "output_head" else \
                [f"transformer.layers.{i}.{suffix}" for i in layers for suffix in suffixes]
            found = [name for name in found if name in linears]
        else:
            found = [n for n in linears if n == target or n.startswith(target.rstrip(".") + ".")
                     or fnmatch.fnmatchcase(n, target)]
        if not found:
            raise ValueError(f"LoRA target {target!r} matches no linear module; use a role ({', '.join(LORA_ROLES)}) "
                             "or a module name such as 'transformer.layers.0.attention.dense'")
        chosen.update(found)
    return [name for name in linears if name in chosen]


def _default_compute_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _quantize(model: nn.Module, names: list[str], compute_dtype: torch.dtype) -> None:
    """Replace the named nn.Linear modules by frozen NF4 `Linear4bit`s (blocks of 64 values) on the same device."""
    import bitsandbytes as bnb

    for name in names:
        parent, _, child = name.rpartition(".")
        linear = model.get_submodule(name)
        if isinstance(linear, bnb.nn.Linear4bit):
            continue
        device = linear.weight.device
        quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                      compute_dtype=compute_dtype, quant_type="nf4", device="meta")
        quantized.weight = bnb.nn.Params4bit(linear.weight.data.float().cpu(), requires_grad=False, quant_type="nf4")
        if linear.bias is not None:
            quantized.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        # bitsandbytes' AVX512-BF16 CPU path repacks the weight in place at the first eval forward (and needs
        # out_features % 32 == 0, which tiny vocabularies miss): keep the standard layout, so eval computes what
        # training does and merge_adapter / state_dict read it as NF4
        quantized.support_avx512bf16_for_cpu = False
        model.get_submodule(parent).register_module(child, quantized.to(device))  # .to quantizes


def apply_lora(model: RuDolph, settings: LoraSettings, *, compute_dtype: torch.dtype | None = None) -> RuDolph:
    """Inject LoRA adapters into `model` in place and return it (still a `RuDolph`, see the module docstring).

    Every base parameter is frozen and every adapter parameter trainable; unfreeze more afterwards if wanted
    (e.g. `model.to_logits[0].requires_grad_(True)`). Fresh adapters have B = 0: the outputs are the base's.

    Args:
        model: a plain RuDOLPH (not yet adapted), on the device it will run on (QLoRA quantizes there).
        settings: targets, rank, method.
        compute_dtype: QLoRA's matmul precision; default bf16 on CUDA, fp32 on the CPU.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if getattr(model, "peft_config", None):
        raise ValueError("this model already carries LoRA adapters; merge them (merge_adapter) or start from the base")
    names = target_modules(model, settings.targets)
    if settings.method == "qlora":
        device = next(model.parameters()).device
        quantized = names if settings.quantize == "targets" else \
            sorted(set(names) | {n for n in _linear_names(model) if n.startswith("transformer.layers.")})
        _quantize(model, quantized, compute_dtype or _default_compute_dtype(device))
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=names,
                        bias="none")
    training = model.training
    model = inject_adapter_in_model(config, model)
    _use_model_dropout(model)
    model.train(training)  # peft's new layers start in training mode: an eval model would drop adapter inputs
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name)
    model._lora_settings = settings  # what save_adapter records in base.json
    model._lora_modules = names
    return model


class _AdapterDropout(nn.Dropout):
    """The adapters' input dropout through the model's `dropout`: on the CPU its masks come 16 bits at a time
    (`_Dropout16`) where `nn.Dropout` draws `bernoulli_` per element, which took ~20 % of a 350M LoRA step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def _use_model_dropout(model: nn.Module) -> None:
    """Swap peft's `nn.Dropout` on every adapter's input for `_AdapterDropout` (same p, same place)."""
    for module in model.modules():
        for name, layer in getattr(module, "lora_dropout", {}).items():
            if type(layer) is nn.Dropout:
                module.lora_dropout[name] = _AdapterDropout(layer.p)


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The LoRA parameters by name (what the optimizer must hold, whatever else the caller unfreezes)."""
    return {name: param for name, param in model.named_parameters() if ".lora_" in name}


# Output head: one head's rows through the adapter ----------------------------------------------------------------
def _lora_head_rows(layer: nn.Module, hidden: torch.Tensor, rows: slice) -> torch.Tensor:
    """`layer(hidden)[..., rows]` for a peft LoRA `Linear` wrapping the output layer, computing only those rows
    (the text head's rows on text positions, the image head's on image positions), as `RuDolph._split_heads` does
    for a plain layer. Other LoRA variants (DoRA, ...) and disabled or merged adapters take peft's own forward."""
    base = layer.get_base_layer()
    if layer.lora_variant or layer.disable_adapters or layer.merged:
        return layer(hidden)[..., rows]
    if type(base) is nn.Linear:
        result = F.linear(hidden, base.weight[rows], None if base.bias is None else base.bias[rows])
    else:  # e.g. a 4-bit base: it dequantizes its whole weight anyway
        result = base(hidden)[..., rows]
    dtype = result.dtype
    for name in layer.active_adapters:
        if name not in layer.lora_A:
            continue
        lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
        x = layer._cast_input_dtype(hidden, lora_a.weight.dtype)
        result = result + F.linear(lora_a(layer.lora_dropout[name](x)), lora_b.weight[rows]) * layer.scaling[name]
    return result.to(dtype)


def _register_head_rows() -> None:
    _import_bitsandbytes()  # quietly, before peft imports it with its notices about optional CPU kernels
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError as error:
        raise ImportError(f"LoRA fine-tuning needs peft ({error}): pip install 'rudolph-ft[lora]' (peft>=0.13)") \
            from None

    register_head_rows_forward(LoraLayer, _lora_head_rows)


_register_head_rows()


# Files -----------------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin: not a model folder")


def base_reference(preset_or_path: str | os.PathLike, *, preset: str | None = None,
                   cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """What `base.json` records about a base model, given as `load_model` takes it: an official preset's name, hub
    repository and (when the cached file shows it) revision; or a model folder's (or official checkpoint's) absolute
    path and the sha256 of its weights file, plus `preset`, the architecture an official checkpoint file needs."""
    name = str(preset_or_path)
    if name in MODEL_PRESETS and not Path(name).exists():
        hub = MODEL_PRESETS[name].hub
        if hub is None:
            raise ValueError(f"preset {name!r} has no published weights; save the base model (save_model) and name "
                             "its folder instead")
        reference: dict[str, Any] = {"preset": name, "repo_id": hub.repo_id, "filename": hub.filename}
        try:
            from .hub import resolve_file

            parts = Path(resolve_file(hub, cache_dir=cache_dir, offline=True, what=name)).parts
            if "snapshots" in parts:
                reference["revision"] = parts[parts.index("snapshots") + 1]
        except Exception:  # not cached here: the repository alone names it
            pass
        return reference
    from .hub import resolve_model_dir

    path = Path(name).expanduser().resolve()
    folder = path if (path / "pytorch_model.bin").is_file() else resolve_model_dir(path) if path.is_dir() else path
    weights = _weights_file(folder) if folder.is_dir() else folder
    return {"path": str(folder), "sha256": _sha256(weights), **({"preset": preset} if preset else {})}


def save_adapter(model: nn.Module, directory: str | os.PathLike, base: dict[str, Any]) -> Path:
    """Write the adapter alone (`adapter_model.safetensors`, `adapter_config.json`, `base.json`), each atomically,
    plus `trained_weights.safetensors` with the base parameters the caller unfroze (they changed, so the base file
    no longer holds them); `load_adapter_model` puts them back, trainable.

    Args:
        model: a model returned by `apply_lora` / `load_adapter_model`.
        directory: created when missing.
        base: `base_reference(...)` of the model the adapter was applied to.
    """
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = getattr(model, "peft_config", {}).get("default")
    if config is None:
        raise ValueError("model carries no LoRA adapter (apply_lora first)")
    if not (("path" in base and "sha256" in base) or "repo_id" in base):
        raise ValueError(f"base must name a preset or a path + sha256 (base_reference gives one), got {base}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {_PEFT_PREFIX + k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}
    config_dict = config.to_dict()
    config_dict["base_model_name_or_path"] = base.get("path") or base.get("preset")
    settings = getattr(model, "_lora_settings", None)
    if settings is None:
        raise ValueError("model was not adapted by apply_lora / load_adapter_model: its LoRA settings are unknown")
    # the exact module names: peft may shorten target_modules in adapter_config.json to suffixes
    method = {**asdict(settings), "modules": model._lora_modules}
    trained = {name: p.detach().contiguous().cpu() for name, p in model.named_parameters()
               if p.requires_grad and ".lora_" not in name}
    texts = {ADAPTER_CONFIG: json.dumps(config_dict, indent=2, default=sorted) + "\n",
             BASE_NAME: json.dumps({"base": base, "adapter": method}, indent=2) + "\n"}
    atomic_write(directory / ADAPTER_WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    if trained:
        atomic_write(directory / TRAINED_NAME, lambda tmp: save_file(trained, tmp, metadata={"format": "pt"}))
    else:  # a folder saved over: an older save's trained weights must not come back
        (directory / TRAINED_NAME).unlink(missing_ok=True)
    for name, text in texts.items():  # base.json last: its presence marks a complete folder
        atomic_write(directory / name, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))
    return directory


def is_adapter_folder(path: str | os.PathLike) -> bool:
    """True for a folder written by `save_adapter` (adapter weights, peft config, base.json)."""
    path = Path(path)
    return all((path / name).is_file() for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG, BASE_NAME))


def _load_base(base: dict[str, Any], directory: Path, device, cache_dir, offline) -> RuDolph:
    from .model import load_model

    if "path" not in base:
        model = load_model(base["preset"], cache_dir=cache_dir, offline=offline, device=device)
        found = base_reference(base["preset"], cache_dir=cache_dir).get("revision")
        if base.get("revision") and found and found != base["revision"]:
            raise ValueError(f"adapter {directory} was trained on {base['repo_id']} revision {base['revision']}, but "
                             f"the cached {base['preset']} weights are revision {found}")
        return model
    path = Path(base["path"])
    if not path.exists():
        raise FileNotFoundError(f"adapter {directory} needs its base model {path} (sha256 {base['sha256'][:12]}...), "
                                "which is missing")
    found = _sha256(_weights_file(path) if path.is_dir() else path)
    if found != base["sha256"]:
        raise ValueError(f"adapter {directory} was trained on base {path} with sha256 {base['sha256'][:12]}..., but "
                         f"{path} now holds other weights (sha256 {found[:12]}...)")
    return load_model(path, preset=base.get("preset"), device=device)


def load_adapter_model(directory: str | os.PathLike, *, device: torch.device | str | None = None,
                       cache_dir: str | os.PathLike | None = None, offline: bool | None = None) -> RuDolph:
    """The base model `base.json` names (its weights checked against the recorded sha256) with the adapter applied
    (and the base parameters trained with it, trainable again), in eval mode. A missing or different base raises
    FileNotFoundError / ValueError, one line naming both."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    directory = Path(directory)
    if not is_adapter_folder(directory):
        raise FileNotFoundError(f"{directory}: not an adapter folder (needs {ADAPTER_WEIGHTS}, {ADAPTER_CONFIG} and "
                                f"{BASE_NAME})")
    info = json.loads((directory / BASE_NAME).read_text(encoding="utf-8"))
    model = _load_base(info["base"], directory, device, cache_dir, offline)
    settings = LoraSettings(**{f.name: info["adapter"][f.name] for f in fields(LoraSettings)})
    model = apply_lora(model, replace(settings, targets=info["adapter"]["modules"]))  # exactly the saved modules
    model._lora_settings = settings
    state = {k.removeprefix(_PEFT_PREFIX): v for k, v in load_file(str(directory / ADAPTER_WEIGHTS)).items()}
    result = set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []))
    missing = [k for k in getattr(result, "missing_keys", []) if ".lora_" in k]
    if unexpected or missing:
        raise ValueError(f"{directory / ADAPTER_WEIGHTS} does not fit its config: {len(missing)} missing "
                         f"({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
    if (directory / TRAINED_NAME).is_file():
        params = dict(model.named_parameters())
        trained = load_file(str(directory / TRAINED_NAME))
        wrong = [k for k, v in trained.items() if k not in params or params[k].shape != v.shape]
        if wrong:
            raise ValueError(f"{directory / TRAINED_NAME}: {len(wrong)} tensor(s) fit no parameter of the base model "
                             f"({', '.join(wrong[:3])})")
        with torch.no_grad():
            for name, value in trained.items():
                params[name].copy_(value)
                params[name].requires_grad_(True)
    return model.eval()


def _dense_weight(base: nn.Module) -> torch.Tensor:
    """A base layer's weight in full precision (dequantized when it is NF4)."""
    weight = base.weight
    if getattr(weight, "quant_state", None) is None:
        return weight.data.float()
    import bitsandbytes as bnb

    data, state = weight.data, weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):  # bitsandbytes' CPU inference layout (not ours)
        data, state = bnb.functional._convert_weight_packed_for_cpu_inverse(data, state)
    return bnb.functional.dequantize_4bit(data, state).float()


def merge_adapter(model: RuDolph) -> RuDolph:
    """Fold every adapter into its weight (`W + alpha / r * B @ A`) and drop peft's layers, in place: the result is a
    plain `RuDolph` in float32 (QLoRA's 4-bit weights dequantized), savable with `save_model` / `save_components`."""
    from peft.tuners.lora import LoraLayer

    replacements = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            weight = _dense_weight(base)
            for adapter in module.active_adapters if not module.merged else []:
                if adapter in module.lora_A:
                    weight = weight + module.get_delta_weight(adapter).float()
            replacements.append((name, base, weight))
        elif getattr(getattr(module, "weight", None), "quant_state", None) is not None:  # quantized, not adapted
            replacements.append((name, module, _dense_weight(module)))
    for name, base, weight in replacements:
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=base.bias is not None, device="meta")
        linear.weight = nn.Parameter(weight.detach().clone())
        if base.bias is not None:
            linear.bias = nn.Parameter(base.bias.detach().float().clone())
        parent, _, child = name.rpartition(".")
        model.get_submodule(parent).register_module(child, linear)
    for attribute in ("peft_config", "_lora_settings", "_lora_modules"):
        model.__dict__.pop(attribute, None)
    model.requires_grad_(True)
    return model


def lora_summary(model: nn.Module) -> str:
    """One line: adapter parameters, other trainable ones, and the total."""
    adapters = sum(p.numel() for p in adapter_parameters(model).values())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return (f"LoRA: {adapters:,} adapter parameters, {trainable - adapters:,} other trainable, {total:,} in all "
            f"({100 * trainable / max(total, 1):.2f}% trainable)")


def merge_run(model: str | os.PathLike, out: str | os.PathLike, *, echo=print) -> Path:
    """`rudolph-ft merge`: the LoRA model at `model` (a run folder, checkpoint or adapter folder) folded into a full
    model folder at `out` (safetensors + config + its tokenizer and VQGAN) that loads like any other."""
    from .components import _named_components, load_components, save_components
    from .hub import resolve_model_dir

    folder = resolve_model_dir(model, echo=echo)
    if not is_adapter_folder(folder):
        raise ValueError(f"{folder} holds a full model, not a LoRA adapter: nothing to merge")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: choose another --out")
    components = load_components(folder)
    names = _named_components(folder)  # official tokenizer / VQGAN stay named, copies stay copies
    merged = merge_adapter(components.model)
    save_components(type(components)(merged, components.tokenizer, components.vqgan), out,
                    tokenizer_name=names.get("tokenizer") if names.get("tokenizer") == "rudalle" else None,
                    vqgan_name=names.get("vqgan") if names.get("vqgan") == "sber-gumbel-f8" else None)
    return out
