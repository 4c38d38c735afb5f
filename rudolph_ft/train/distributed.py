"""FSDP for the large models: each transformer layer sharded across the processes with torch's `fully_shard` (FSDP2).

The trainer calls these when `train.strategy=fsdp`, or when `accelerate launch` runs with an FSDP config
(`configs/accelerate/fsdp.yaml` sets ACCELERATE_USE_FSDP). Sharding is done here rather than by accelerate's FSDP
plugin, so the same code runs on GPUs (NCCL) and on the CPU (gloo, which accelerate's plugin refuses): the tests
run it on two CPU processes.

State: the model is saved consolidated (a full state dict gathered to the main process, written as a normal model
folder that every inference command loads); the optimizer state stays sharded, one file per process, written with
torch.distributed.checkpoint (DCP) into the checkpoint folder, and read back by the same or another process count.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["fsdp_requested", "shard_model", "full_state_dict", "save_sharded_optimizer", "load_sharded_optimizer",
           "largest_weight", "OPTIMIZER_DIR"]

OPTIMIZER_DIR = "optimizer"  # inside a checkpoint of an FSDP run: the sharded optimizer state


def fsdp_requested(strategy: str) -> bool:
    """`train.strategy=fsdp`, or `accelerate launch` with an FSDP config (which sets ACCELERATE_USE_FSDP)."""
    return strategy == "fsdp" or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def shard_model(model: nn.Module, *, device: torch.device, precision: str) -> nn.Module:
    """Shard every transformer layer, then the rest (embeddings, head), across the processes of the default group.

    bf16: parameters gathered in bf16 for the forward and backward, gradients reduced and optimizer states kept
    in fp32 (`MixedPrecisionPolicy`). fp16 needs a sharded loss scaler: not supported, use bf16.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if precision == "fp16":
        raise ValueError("train.strategy=fsdp trains in bf16 or fp32 (train.precision=bf16 or no), not fp16: the "
                         "fp16 loss scaler is not sharded")
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16" \
        else MixedPrecisionPolicy()
    # each shard moves to `device` as it is made: the whole model never sits on one GPU
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in model.transformer.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights gathered on the CPU of the main process ({} on the others); every process calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Every process writes its shard of the optimizer state into `folder/optimizer` (DCP; a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=Path(folder) / OPTIMIZER_DIR)


def load_sharded_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, checkpoint: Path) -> None:
    """Read the optimizer state `save_sharded_optimizer` wrote (resharded if the process count changed)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    path = Path(checkpoint) / OPTIMIZER_DIR
    if not path.is_dir():
        raise FileNotFoundError(f"{checkpoint}: no {OPTIMIZER_DIR}/ (the sharded optimizer state of an FSDP run); "
                                "was it saved by a run with train.strategy=ddp? Resume it with that strategy")
    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}  # the layout to read into (states allocated)
    dcp.load(state, checkpoint_id=path)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state["optimizer"])


def largest_weight(model: nn.Module, *, sharded: bool) -> float:
    """max |w| over the trainable parameters (one fused reduction; over all shards when `sharded`)."""
    params = [p.detach() for p in model.parameters() if p.requires_grad]
    if sharded:
        params = [p.to_local() if hasattr(p, "to_local") else p for p in params]
        params = [p for p in params if p.numel()]
    local = torch.stack(torch._foreach_norm(params, math.inf)).max() if params else torch.zeros(())
    if sharded:
        import torch.distributed as dist

        local = local.float().reshape(1).to(_collective_device())
        dist.all_reduce(local, op=dist.ReduceOp.MAX)
    return float(local)


def _collective_device() -> torch.device:
    """Where tensors of a collective must live: the GPU for NCCL, the CPU for gloo."""
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
