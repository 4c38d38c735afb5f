"""Measured peak memory of training steps vs the memory plan (`rudolph_ft.train.plan`), side by side.

Each case (batch size x gradient checkpointing x optimizer) runs in a fresh process: the 350M preset with random
weights (no download), the run config's default freeze, `--steps` full steps (forward with the loss, backward,
clip, optimizer step, zero_grad) on full-length sequences (every right-text position scored), fp32 on the CPU.

How the peak is measured: the worker first runs one step of a tiny model (so lazily loaded kernels and libraries
are resident), reads its resident set size (VmRSS) as the baseline, resets the kernel's high-water mark
(`echo 5 > /proc/self/clear_refs`), builds the model and trains; the peak is the high-water mark (VmHWM) minus the
baseline. glibc would keep freed heap blocks below its adaptive mmap threshold (up to 32 MiB) resident, so the
worker runs with `MALLOC_MMAP_THRESHOLD_=65536`: every tensor above 64 KiB is its own mapping, returned to the
kernel when freed, and RSS follows the live tensors. The estimate is `memory_plan(config, device="cpu")
.peak(1)`, i.e. CPU attention (which keeps its dropout scores) and per-tensor AdamW:

    python benchmarks/bench_memory.py [--batch-sizes 1 2] [--optimizers adamw adam8bit] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def batch_ids(arch, batch: int, seed: int = 0):
    """(B, S) training ids as the trainer builds them: empty left text, image codes, a caption filling the right
    text (no pad, so the loss-only forward runs all S - 1 positions the plan assumes)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.cat([torch.zeros(batch, arch.l_text_seq_length, dtype=torch.long),
                      torch.randint(0, arch.image_vocab_size, (batch, arch.image_seq_length), generator=generator),
                      torch.randint(1, arch.vocab_size, (batch, arch.r_text_seq_length), generator=generator)], dim=1)


def train_steps(config, steps: int) -> None:
    """`steps` training steps of the model, freeze and optimizer `config` names, as `Trainer._optimizer_step`."""
    import torch

    from rudolph_ft.model.rudolph import RuDolph
    from rudolph_ft.train.freeze import apply_freeze
    from rudolph_ft.train.optim import build_optimizer
    from rudolph_ft.train.plan import model_config

    arch = model_config(config)
    model = RuDolph(arch).train()
    roles = apply_freeze(model, config.freeze)
    optimizer = build_optimizer(model, roles, config.optim)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for step in range(steps):
        loss = model(batch_ids(arch, config.train.batch_size, step), loss_weights=tuple(config.train.loss_weights)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def case_config(preset: str, batch: int, checkpointing: bool, optimizer: str, extra: list[str] | None = None):
    from rudolph_ft.train.config import load_train_config

    overrides = [f"model.name={preset}", "model.pretrained=false", f"train.batch_size={batch}",
                 f"train.gradient_checkpointing={str(checkpointing).lower()}", f"optim.name={optimizer}",
                 *(extra or [])]
    return load_train_config(None, overrides, echo=lambda message: None)


def worker(args) -> None:
    """One case in this (fresh) process; prints one JSON line."""
    import gc

    import torch

    from rudolph_ft.train.plan import memory_plan

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warm = case_config("tiny", 2, False, args.optimizer)
    train_steps(warm, 1)  # kernels, libraries and the optimizer's imports become resident here, not in the peak
    del warm
    gc.collect()
    config = case_config(args.preset, args.batch, args.checkpointing, args.optimizer, args.override)
    baseline = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    train_steps(config, args.steps)
    measured = _status("VmHWM") - baseline
    plan = memory_plan(config, device="cpu")
    print(json.dumps({"measured": measured, "estimated": plan.peak(1, "ddp"), "baseline": baseline,
                      "activations": plan.activation_bytes, "weights": plan.weight_bytes,
                      "optimizer_bytes": plan.optimizer_bytes, "trainable": plan.trainable_params}))


def run_case(args, batch: int, checkpointing: bool, optimizer: str) -> dict:
    argv = [sys.executable, __file__, "--worker", "--preset", args.preset, "--batch", str(batch), "--optimizer",
            optimizer, "--steps", str(args.steps), "--threads", str(args.threads)]
    argv += ["--checkpointing", "on" if checkpointing else "off"]
    for item in args.override:
        argv += ["--override", item]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "65536", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    case = {"batch": batch, "checkpointing": checkpointing, "optimizer": optimizer}
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        return {**case, "error": lines[-1] if lines else f"exit code {done.returncode}"}
    return {**case, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="350M")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--optimizers", nargs="+", default=["adamw", "adam8bit"], choices=["adamw", "adam8bit"])
    parser.add_argument("--checkpointing", choices=["both", "on", "off"], default="both")
    parser.add_argument("--steps", type=int, default=3, help="training steps per case (the peak is over all)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--override", action="append", default=[], help="extra section.key=value for every case")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--optimizer", default="adamw", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.checkpointing = args.checkpointing == "on"
        worker(args)
        return
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.checkpointing]
    rows = [run_case(args, batch, checkpointing, optimizer)
            for optimizer in args.optimizers for checkpointing in modes for batch in args.batch_sizes]
    if args.json:
        print(json.dumps({"preset": args.preset, "steps": args.steps, "rows": rows}))
        return
    print(f"RuDOLPH {args.preset} training step peak memory on the CPU (fp32, random weights, default freeze, "
          f"{args.steps} steps, fresh process per case): measured (VmHWM growth) vs planned")
    header = f"{'case':<28} {'measured MiB':>12} {'estimated MiB':>13} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for row in rows:
        name = f"{row['optimizer']} batch {row['batch']}" + (" ckpt" if row["checkpointing"] else "")
        if "error" in row:
            print(f"{name:<28} error: {row['error']}")
            continue
        print(f"{name:<28} {row['measured'] / MIB:>12.0f} {row['estimated'] / MIB:>13.0f} "
              f"{row['estimated'] / row['measured']:>6.3f}")


if __name__ == "__main__":
    main()
