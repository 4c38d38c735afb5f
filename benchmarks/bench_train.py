"""Training-step throughput and peak memory: rudolph-ft vs the reference model driven the article's way.

The article's step (reference env): VQGAN-encode the batch, forward, backward, clip, bitsandbytes Adam8bit,
OneCycleLR, with its substring freeze. Ours: the same model size, freeze, optimizer and schedule, on image codes
read from the cache. 350M config with random weights, fp32, batch 2 on CPU by default:

    python benchmarks/bench_train.py [--batch-sizes 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from _common import DEFAULT_REF_PYTHON, cell, run_worker

WORKER = Path(__file__).with_name("_train_worker.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="350M")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--optimizer", default="adam8bit", choices=["adam8bit", "adamw"], help="ours")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ref-python", default=DEFAULT_REF_PYTHON)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for batch in args.batch_sizes:
        common = ["--preset", args.preset, "--batch", str(batch), "--steps", str(args.steps), "--warmup",
                  str(args.warmup), "--threads", str(args.threads)]
        article = run_worker(args.ref_python, WORKER, ["--impl", "article", *common])
        ours = run_worker(sys.executable, WORKER, ["--impl", "ours", "--optimizer", args.optimizer, *common])
        row = {"batch": batch, "article": article, "ours": ours}
        if "step_s" in article and "step_s" in ours:
            row["speedup"] = article["step_s"] / ours["step_s"]
            row["samples_per_s"] = {"article": batch / article["step_s"], "ours": batch / ours["step_s"]}
            row["memory_ratio"] = ours["peak_mem_mb"] / article["peak_mem_mb"]
        rows.append(row)
    result = {"preset": args.preset, "optimizer": args.optimizer, "threads": args.threads, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(f"RuDOLPH {args.preset} training step, CPU fp32, {args.threads} threads, article freeze, "
          f"ours with {args.optimizer} (median of {args.steps})")
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


if __name__ == "__main__":
    main()
