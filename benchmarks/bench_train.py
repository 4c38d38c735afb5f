"""Training-step throughput and peak memory: rudolph-ft vs the reference model driven the article's way.

The article's step (reference env): VQGAN-encode the batch, forward, backward, clip, bitsandbytes Adam8bit,
OneCycleLR, with its substring freeze. Ours: the same model size, freeze, optimizer and schedule, on image codes
read from the cache. 350M config with random weights, fp32, batch 2 on CPU by default. The two sides run in
fresh processes, alternating for `--rounds` rounds; a second table shows where each step's time goes (image
codes, forward, backward, optimizer):

    python benchmarks/bench_train.py [--batch-sizes 2] [--json]
    python benchmarks/bench_train.py --device cuda --dtype bf16 --batch-sizes 10   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from _common import DEFAULT_REF_PYTHON, cell, run_worker

WORKER = Path(__file__).with_name("_train_worker.py")


def measure(args, batch: int) -> tuple[dict, dict]:
    """`--rounds` rounds of one fresh process per side (the article's, then ours), each timing `--steps` steps
    after `--warmup`: a machine drifting over the minutes of a run affects both sides alike, and neither side
    shares a process (allocator, caches) with the other. Step times and phases: medians over all rounds; peak
    memory: the largest of a side's processes."""
    argv = ["--preset", args.preset, "--batch", str(batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--threads", str(args.threads), "--device", args.device, "--dtype", args.dtype]
    runs = {"article": [], "ours": []}
    for _ in range(args.rounds):
        runs["article"].append(run_worker(args.ref_python, WORKER, ["--impl", "article", *argv]))
        runs["ours"].append(run_worker(sys.executable, WORKER, ["--impl", "ours", "--optimizer", args.optimizer,
                                                                *argv]))
    return tuple(_combine(runs[side]) for side in ("article", "ours"))


def _combine(results: list[dict]) -> dict:
    failed = [r for r in results if "error" in r]
    if failed:
        return failed[0]
    times = [t for r in results for t in r["times"]]
    steps = [step for r in results for step in r["phase_steps"]]
    return {"step_s": statistics.median(times), "times": times, "peak_mem_mb": max(r["peak_mem_mb"] for r in results),
            "phases": {name: statistics.median(step[name] for step in steps) for name in steps[0]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="350M")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="processes per side, alternating")
    parser.add_argument("--optimizer", default="adam8bit", choices=["adam8bit", "adamw"], help="ours")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast dtype")
    parser.add_argument("--ref-python", default=DEFAULT_REF_PYTHON)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for batch in args.batch_sizes:
        article, ours = measure(args, batch)
        row = {"batch": batch, "article": article, "ours": ours}
        if "step_s" in article and "step_s" in ours:
            row["speedup"] = article["step_s"] / ours["step_s"]
            row["samples_per_s"] = {"article": batch / article["step_s"], "ours": batch / ours["step_s"]}
            row["memory_ratio"] = ours["peak_mem_mb"] / article["peak_mem_mb"]
        rows.append(row)
    result = {"preset": args.preset, "optimizer": args.optimizer, "threads": args.threads, "device": args.device,
              "dtype": args.dtype, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(f"RuDOLPH {args.preset} training step, {args.device} {args.dtype}, {args.threads} threads, article freeze, "
          f"ours with {args.optimizer} (median of {args.rounds} x {args.steps} steps, sides alternating)")
    header = f"{'batch':>5} | {'article s':>9} {'ours s':>7} | {'speedup':>7} | {'article MB':>10} {'ours MB':>8} " \
             f"{'mem ratio':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        article, ours = row["article"], row["ours"]
        print(f"{row['batch']:>5} | {cell(article.get('step_s'), '9.2f')} {cell(ours.get('step_s'), '7.2f')} | "
              f"{cell(row.get('speedup'), '6.2f')}x | {cell(article.get('peak_mem_mb'), '10.0f')} "
              f"{cell(ours.get('peak_mem_mb'), '8.0f')} {cell(row.get('memory_ratio'), '8.2f')}x")
        for part in ("article", "ours"):
            if "error" in row[part]:
                print(f"      {part}: {row[part]['error']}")
    print("\nwhere the time goes (median s per step)")
    names = ("image_codes", "forward", "backward", "optimizer")
    print(f"{'batch':>5} {'side':>8} | " + " ".join(f"{name:>11}" for name in names))
    for row in rows:
        for part in ("article", "ours"):
            phases = row[part].get("phases", {})
            print(f"{row['batch']:>5} {part:>8} | " + " ".join(cell(phases.get(name), "11.2f") for name in names))


if __name__ == "__main__":
    main()
