"""What each way of fine-tuning costs: the article's freeze, full fine-tuning, LoRA and QLoRA, side by side.

Per preset and batch size, four cases, each in a fresh process, built with the library the trainer uses
(`rudolph_ft.lora.apply_lora`, `rudolph_ft.train.freeze.apply_freeze`, `rudolph_ft.train.optim.build_optimizer`):

    freeze  the article's freeze (the run config's default `freeze.train`: embeddings, layer norms, output head)
    full    every role trains
    lora    LoRA r=8 on attention + mlp, the base frozen (`finetune.method=lora`, `freeze.train=[]`), with the
            method's default gradient checkpointing
    qlora   the same on an NF4 base (`finetune.method=qlora`; bitsandbytes' CPU kernels where there is no GPU)
    lora-nockpt  LoRA without gradient checkpointing (`train.gradient_checkpointing=false`)

Random weights (no download), the config's optimizer (`--optimizer`), full-length sequences, `--steps` training
steps (forward with the loss, backward, clip, optimizer step, zero_grad); the step time (wall) and the process's
CPU time per step (summed over its threads: steadier where other jobs share the cores) are medians after the first
step. Trainable parameters, peak memory and step time come with ratios to the article's freeze.

On the CPU (fp32) the peak is measured as benchmarks/bench_memory.py does: the worker first trains one step of a
tiny model (kernels and libraries resident), takes VmRSS as the baseline, resets VmHWM (`/proc/self/clear_refs`),
builds the model ("load": VmHWM minus the baseline; QLoRA builds fp32 linears, then packs them into NF4), resets
VmHWM again and trains; the peak is VmHWM minus the baseline (the built model included), under
`MALLOC_MMAP_THRESHOLD_=65536` so freed tensors leave the RSS. A case whose planned peak
(`rudolph_ft.train.plan.memory_plan`) does not fit the free RAM is skipped, with the reason printed (1.3B full
fine-tuning in fp32 needs ~16 bytes per parameter).

Where CUDA is present a GPU block follows by itself: bf16 autocast, peak `torch.cuda.max_memory_allocated`, the
350M / 1.3B / 2.7B presets, plus configs/borscht-2.7b-qlora.yaml's QLoRA run at batch 1 (`--gpu-presets`,
`--no-gpu`):

    python benchmarks/bench_peft.py [--presets 350M 1.3B] [--batch-sizes 1 2] [--cases freeze lora] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, cell  # noqa: E402

MIB = 2**20
CASES = {
    "freeze": [],
    "full": ["freeze.train=[token_embeddings, position_embeddings, layer_norms, attention, mlp, output_head]"],
    "lora": ["finetune.method=lora", "freeze.train=[]", "lora.r=8", "lora.targets=[attention, mlp]"],
    "qlora": ["finetune.method=qlora", "freeze.train=[]", "lora.r=8", "lora.targets=[attention, mlp]"],
    "lora-nockpt": ["finetune.method=lora", "freeze.train=[]", "lora.r=8", "lora.targets=[attention, mlp]",
                    "train.gradient_checkpointing=false"],
}
QLORA_CONFIG = ROOT / "configs" / "borscht-2.7b-qlora.yaml"
_HEADROOM = 0.9  # of the free memory a case may plan to use


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _available_ram() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def case_config(preset: str, batch: int, case: str, *, device: str, optimizer: str | None = None,
                checkpointing: bool = False, extra: list[str] | None = None):
    """The run config of one case (random weights: `model.pretrained=false`); `case` "config" is the shipped QLoRA
    config as it is, at `batch`."""
    from rudolph_ft.train.config import load_train_config

    path = QLORA_CONFIG if case == "config" else None
    overrides = [] if case == "config" else [f"model.name={preset}", *CASES[case],
                                             f"train.precision={'bf16' if device == 'cuda' else 'no'}"]
    overrides += ["model.pretrained=false", f"train.batch_size={batch}", *(extra or [])]
    if checkpointing:  # else the method's default: on for lora / qlora, off for the freeze and full fine-tuning
        overrides.append("train.gradient_checkpointing=true")
    if optimizer:
        overrides.append(f"optim.name={optimizer}")
    return load_train_config(path, overrides, echo=lambda message: None)


def build(config, device):
    """The model, its freeze and optimizer as `Trainer._run` builds them (adapters first, then the freeze)."""
    import torch

    from rudolph_ft.model.rudolph import RuDolph
    from rudolph_ft.train.freeze import apply_freeze
    from rudolph_ft.train.optim import build_optimizer
    from rudolph_ft.train.plan import model_config

    arch = model_config(config)
    model = RuDolph(arch).to(device).train()
    if config.finetune.method != "full":
        from rudolph_ft.lora import LoraSettings, apply_lora

        lora = config.lora
        model = apply_lora(model, LoraSettings(method=config.finetune.method, r=lora.r, alpha=lora.alpha,
                                               dropout=lora.dropout, targets=list(lora.targets),
                                               quantize=lora.quantize))
    roles = apply_freeze(model, config.freeze)
    optimizer = build_optimizer(model, roles, config.optim)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return arch, model, optimizer


def train_steps(config, device, steps: int, built=None) -> tuple[list[float], list[float]]:
    """`steps` training steps as `Trainer._optimizer_step` runs them; the wall and process CPU time of each (the
    CPU time, summed over threads, is steadier than the wall time where other jobs share the cores). `built()` is
    called once the model and optimizer exist, before the first step."""
    import torch
    from bench_memory import batch_ids

    arch, model, optimizer = build(config, device)
    if built is not None:
        built()
    trainable = [p for p in model.parameters() if p.requires_grad]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.train.precision == "bf16")
    times, cpu_times = [], []
    for step in range(steps):
        ids = batch_ids(arch, config.train.batch_size, step).to(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        with autocast:
            loss = model(ids, loss_weights=tuple(config.train.loss_weights)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times


def worker(args) -> None:
    """One case in this (fresh) process; prints one JSON line."""
    import gc

    import torch

    from rudolph_ft.train.plan import memory_plan

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = case_config(args.preset, args.batch, args.case, device=device.type, optimizer=args.optimizer,
                         checkpointing=args.checkpointing, extra=args.override)
    plan = memory_plan(config, device=device.type)
    warm = case_config("tiny", 2, args.case if args.case != "config" else "qlora", device=device.type,
                       optimizer=config.optim.name)
    train_steps(warm, device, 1)  # kernels, libraries and the optimizer's imports resident, not in the peak
    del warm
    gc.collect()
    def peak() -> int:
        return torch.cuda.max_memory_allocated() if device.type == "cuda" else _status("VmHWM")

    def reset_peak() -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS

    if device.type == "cuda":
        torch.cuda.empty_cache()
    baseline = torch.cuda.memory_allocated() if device.type == "cuda" else _status("VmRSS")
    reset_peak()
    loading = []

    def built() -> None:  # building the model peaks apart from training: QLoRA builds fp32 linears, then packs them
        loading.append(peak() - baseline)
        reset_peak()  # the training peak: from the built model (resident, still counted) on

    times, cpu_times = train_steps(config, device, args.steps, built)
    measured = peak() - baseline
    print(json.dumps({"measured": measured, "loading": loading[0], "estimated": plan.peak(1, "ddp"),
                      "trainable": plan.trainable_params,
                      "total": plan.total_params, "step_s": statistics.median(times[1:] or times), "times": times,
                      "cpu_s": statistics.median(cpu_times[1:] or cpu_times),
                      "optimizer": config.optim.name, "checkpointing": plan.gradient_checkpointing}))


def run_case(args, preset: str, batch: int, case: str, device: str) -> dict:
    """One case in a fresh process, or the reason it was skipped (its plan does not fit the free memory)."""
    row = {"device": device, "preset": preset, "batch": batch, "case": case}
    config = case_config(preset, batch, case, device=device, optimizer=args.optimizer,
                         checkpointing=args.checkpointing, extra=args.override)
    from rudolph_ft.train.plan import memory_plan

    planned = memory_plan(config, device=device).peak(1, "ddp")
    if device == "cuda":
        import torch

        free = torch.cuda.mem_get_info()[0]
    else:
        free = _available_ram()
    if planned > _HEADROOM * free:
        return {**row, "skipped": f"planned peak {planned / 2**30:.1f} GiB > {_HEADROOM:.0%} of the free "
                                  f"{free / 2**30:.1f} GiB"}
    argv = [sys.executable, __file__, "--worker", "--device", device, "--preset", preset, "--batch", str(batch),
            "--case", case, "--steps", str(args.steps), "--threads", str(args.threads)]
    argv += ["--optimizer", args.optimizer] if args.optimizer else []
    argv += ["--checkpointing"] if config.gradient_checkpointing else []
    for item in args.override:
        argv += ["--override", item]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "65536", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        return {**row, "error": lines[-1] if lines else f"exit code {done.returncode}"}
    return {**row, **json.loads(done.stdout.strip().splitlines()[-1])}


def _with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's peak and step time relative to the article's freeze at the same device, preset and batch."""
    base = {(r["device"], r["preset"], r["batch"]): r for r in rows if r["case"] == "freeze" and "measured" in r}
    for row in rows:
        ref = base.get((row["device"], row["preset"], row["batch"]))
        if ref and "measured" in row:
            row["mem_ratio"] = row["measured"] / ref["measured"]
            row["time_ratio"] = row["step_s"] / ref["step_s"]
            row["cpu_ratio"] = row["cpu_s"] / ref["cpu_s"]
    return rows


def print_table(rows: list[dict], title: str) -> None:
    print(title)
    header = (f"{'preset':<6} {'batch':>5} {'case':<11} {'ckpt':<4} {'trainable':>13} {'load MiB':>9} "
              f"{'peak MiB':>9} {'plan MiB':>9} {'step s':>7} {'cpu s':>7} {'mem x':>6} {'time x':>6} {'cpu x':>6}")
    print(header)
    print("-" * len(header))
    for row in rows:
        head = f"{row['preset']:<6} {row['batch']:>5} {row['case']:<11}"
        if "skipped" in row or "error" in row:
            print(f"{head} {'skipped: ' + row['skipped'] if 'skipped' in row else 'error: ' + row['error']}")
            continue
        ckpt = "on" if row["checkpointing"] else "off"
        print(f"{head} {ckpt:<4} {row['trainable']:>13,} {row['loading'] / MIB:>9.0f} {row['measured'] / MIB:>9.0f} "
              f"{row['estimated'] / MIB:>9.0f} {row['step_s']:>7.2f} {row['cpu_s']:>7.2f} "
              f"{cell(row.get('mem_ratio'), '6.2f')} {cell(row.get('time_ratio'), '6.2f')} "
              f"{cell(row.get('cpu_ratio'), '6.2f')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["350M", "1.3B"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--optimizer", choices=["adamw", "adam8bit"], default=None,
                        help="default: the run config's (adam8bit)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per case (the first is not timed)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--override", action="append", default=[], help="extra section.key=value for every case")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in every case")
    parser.add_argument("--gpu-presets", nargs="+", default=["350M", "1.3B", "2.7B"])
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU block even where CUDA is present")
    parser.add_argument("--no-cpu", action="store_true", help="only the GPU block")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="350M", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--case", default="freeze", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    cpu = [] if args.no_cpu else _with_ratios([run_case(args, preset, batch, case, "cpu") for preset in args.presets
                                               for batch in args.batch_sizes for case in args.cases])
    gpu: list[dict] = []
    if torch.cuda.is_available() and not args.no_gpu:
        gpu = [run_case(args, preset, batch, case, "cuda") for preset in args.gpu_presets
               for batch in args.batch_sizes for case in args.cases]
        gpu = _with_ratios(gpu + [run_case(args, "2.7B", 1, "config", "cuda")])
    if args.json:
        print(json.dumps({"steps": args.steps, "threads": args.threads, "rows": cpu + gpu}))
        return
    if cpu:
        ckpt = ", checkpointing" if args.checkpointing else ""
        print_table(cpu, f"RuDOLPH fine-tuning methods on the CPU (fp32{ckpt}, random weights, {args.steps} steps, "
                         f"{args.threads} threads, fresh process per case); x: vs the article's freeze")
    if gpu:
        print()
        print_table(gpu, f"on {torch.cuda.get_device_name()} (bf16 autocast, peak max_memory_allocated; "
                         f"'config': {QLORA_CONFIG.name}, checkpointing on)")


if __name__ == "__main__":
    main()
