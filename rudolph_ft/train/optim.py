"""Optimizer (bitsandbytes 8-bit Adam by default, torch AdamW) with per-role learning rates, and the schedule."""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

from .config import OptimSection, ScheduleSection

__all__ = ["build_optimizer", "build_scheduler"]


def _import_bitsandbytes():
    # bitsandbytes prints optional-kernel notices on import on CPU; they are not errors
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import bitsandbytes
    return bitsandbytes


def build_optimizer(model: nn.Module, roles: dict[str, str], config: OptimSection) -> torch.optim.Optimizer:
    """One parameter group per freeze role that has trainable parameters (lr from `group_lr`, else `lr`)."""
    unknown = sorted(set(config.group_lr) - set(roles.values()))
    if unknown:
        raise ValueError(f"optim.group_lr: unknown role(s) {', '.join(unknown)}; "
                         f"roles: {', '.join(sorted(set(roles.values())))}")
    by_role: dict[str, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            by_role.setdefault(roles[name], []).append(param)
    if not by_role:
        raise ValueError("no trainable parameters: check freeze.train / freeze.unfreeze")
    groups = [{"params": params, "lr": config.group_lr.get(role, config.lr), "name": role}
              for role, params in by_role.items()]
    kwargs = {"lr": config.lr, "betas": tuple(config.betas), "eps": config.eps, "weight_decay": config.weight_decay}
    if config.name == "adam8bit":
        return _import_bitsandbytes().optim.Adam8bit(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleSection, total_steps: int):
    """OneCycleLR peaking at each group's lr (the article's `final_div_factor=500`), stepped every optimizer step."""
    if config.name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=max(total_steps, 2),
        pct_start=config.pct_start, final_div_factor=config.final_div_factor)
