"""Which parameters train: by module role, plus name-prefix patterns, with a printed summary.

Roles (every RuDOLPH parameter has exactly one):
    token_embeddings     text_embeddings, image_embeddings
    position_embeddings  l_text_pos_embeddings, r_text_pos_embeddings, image_row_embeddings, image_col_embeddings
    layer_norms          every LayerNorm (sandwich norms, final norm, the output layer's norm)
    attention            transformer.layers.N.attention.* (query_key_value, dense)
    mlp                  transformer.layers.N.mlp.*
    output_head          to_logits.1 (the joint-vocabulary projection)

The article's intent (`freeze_attn=True, freeze_ff=True`, the rest trained) is the default. Its code tested
lower-cased names for the substring `attn`, which RuDOLPH's `attention` modules do not contain, so it froze only
the MLPs; `mode="article"` reproduces that rule exactly for a faithful re-run.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from torch import nn

__all__ = ["ROLES", "ADAPTERS", "DEFAULT_TRAINED_ROLES", "FreezeConfig", "parameter_roles", "apply_freeze",
           "freeze_table"]

ROLES = ("token_embeddings", "position_embeddings", "layer_norms", "attention", "mlp", "output_head")
ADAPTERS = "adapters"  # LoRA / QLoRA adapter weights (finetune.method lora | qlora): their own group, always trained
DEFAULT_TRAINED_ROLES = ("token_embeddings", "position_embeddings", "layer_norms", "output_head")
_TOKEN_EMBEDDINGS = {"text_embeddings", "image_embeddings"}


class FreezeConfig(BaseModel):
    """What to train (the `freeze:` section of a run config; typed and checked like the other sections).

    Attributes:
        train: roles whose parameters train (see module docstring).
        unfreeze: `|`-separated parameter-name prefixes trained in addition, e.g. "transformer.layers.23|to_logits".
        freeze: `|`-separated prefixes frozen whatever their role (applied last).
        mode: "roles" (default) or "article": the article's substring rule, which freezes only the MLPs.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    train: list[StrictStr] = Field(default_factory=lambda: list(DEFAULT_TRAINED_ROLES),
                                   description="roles whose parameters train: " + ", ".join(ROLES),
                                   json_schema_extra={"expect": "a list of roles out of " + ", ".join(ROLES)})
    unfreeze: StrictStr = Field("", description="`|`-separated parameter-name prefixes trained in addition, e.g. "
                                "transformer.layers.23|to_logits")
    freeze: StrictStr = Field("", description="`|`-separated parameter-name prefixes frozen whatever their role "
                              "(applied last)")
    mode: Literal["roles", "article"] = Field("roles", description="roles, or article: the article's substring rule "
                                              "(it freezes only the MLPs)")

    @field_validator("train")
    @classmethod
    def _known_roles(cls, train: list[str]) -> list[str]:
        unknown = sorted(set(train) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(ROLES)}")
        return train


def parameter_roles(model: nn.Module) -> OrderedDict[str, str]:
    """Parameter name -> role, for every parameter of a RuDOLPH model (raises on a parameter with no role)."""
    roles: OrderedDict[str, str] = OrderedDict()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            name = f"{module_name}.{param_name}" if module_name else param_name
            roles[name] = _role_of(module_name, module, name)
    return roles


def _role_of(module_name: str, module: nn.Module, name: str) -> str:
    if ".lora_" in f".{name}":
        return ADAPTERS
    if isinstance(module, nn.LayerNorm):
        return "layer_norms"
    if isinstance(module, nn.Embedding):
        return "token_embeddings" if module_name in _TOKEN_EMBEDDINGS else "position_embeddings"
    if ".attention." in f".{module_name}.":
        return "attention"
    if ".mlp." in f".{module_name}.":
        return "mlp"
    if module_name == "to_logits.1" or module_name.startswith("to_logits.1."):  # .base_layer, .lora_A... (LoRA)
        return "output_head"
    raise ValueError(f"parameter {name} has no freeze role: is this a RuDOLPH model?")


def _matches(name: str, patterns: str) -> bool:
    prefixes = [p.strip() for p in patterns.split("|") if p.strip()]
    return any(name == p or name.startswith(p.rstrip(".") + ".") for p in prefixes)


def _article_trainable(name: str) -> bool:
    """The article's rule, verbatim in effect: ln/norm and embeddings train, mlp and attn freeze, rest trains."""
    lowered = name.lower()
    if "ln" in lowered or "norm" in lowered or "embeddings" in lowered:
        return True
    return not ("mlp" in lowered or "attn" in lowered)


def apply_freeze(model: nn.Module, config: FreezeConfig) -> OrderedDict[str, str]:
    """Set `requires_grad` on every parameter; returns name -> role for the summary and per-group LRs."""
    roles = parameter_roles(model)
    unused = [p for p in config.unfreeze.split("|") + config.freeze.split("|")
              if p.strip() and not any(_matches(name, p) for name in roles)]
    if unused:
        raise ValueError(f"freeze pattern(s) {', '.join(unused)} match no parameter name "
                         f"(names look like 'transformer.layers.0.attention.dense.weight', 'to_logits.1.bias')")
    for name, param in model.named_parameters():
        if config.mode == "article":
            trainable = _article_trainable(name)
        else:
            trainable = roles[name] in config.train
        trainable = (trainable or roles[name] == ADAPTERS or _matches(name, config.unfreeze)) \
            and not _matches(name, config.freeze)
        # a 4-bit quantized base weight (QLoRA) is frozen whatever its role: only its adapter trains
        param.requires_grad_(trainable and param.is_floating_point())
    return roles


def freeze_table(model: nn.Module, roles: dict[str, str] | None = None) -> str:
    """A table of trainable / frozen parameter counts per role, and the total."""
    roles = roles or parameter_roles(model)
    counts = {role: [0, 0] for role in (*ROLES, *([ADAPTERS] if ADAPTERS in roles.values() else []))}
    for name, param in model.named_parameters():
        counts[roles[name]][0 if param.requires_grad else 1] += param.numel()
    lines = [f"{'group':<20} {'trainable':>14} {'frozen':>14}"]
    for role, (trainable, frozen) in counts.items():
        lines.append(f"{role:<20} {trainable:>14,} {frozen:>14,}")
    total_trainable = sum(c[0] for c in counts.values())
    total = total_trainable + sum(c[1] for c in counts.values())
    lines.append(f"{'total':<20} {total_trainable:>14,} {total - total_trainable:>14,}"
                 f"   ({100 * total_trainable / max(total, 1):.1f}% trainable)")
    return "\n".join(lines)
