"""Forward+backward step time and peak memory: rudolph-ft vs the original `rudolph`, plus the pure-GEMM floor.

Same config (a preset, random weights), same inputs, same loss weights (0.01 / 1 / 7), train mode (dropout on).
Step times come from one process (in the reference env) that alternates a step of each implementation, so that
a machine whose speed drifts affects all alike; peak memory comes from a fresh process per implementation:

    python benchmarks/bench_model.py                       # 350M, batch 1 and 4, fp32 on CPU
    python benchmarks/bench_model.py --device cuda --dtype bf16 --batch-sizes 1 4 10
    python benchmarks/bench_model.py --json                # one JSON object with the ratios

The reference runs in the reference env (`scripts/make-reference-env.sh`): `--ref-python` or RUDOLPH_REF_PYTHON.
"GEMM floor" times only the step's matrix multiplications (forward and both backward products) at the
reference's shapes (full joint output layer at every position), with no masking, norms or activations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from _common import DEFAULT_REF_PYTHON, cell, run_worker

WORKER = Path(__file__).with_name("_model_worker.py")


def run(python: str, impl: str, args, batch: int, steps: int | None = None, warmup: int | None = None) -> dict:
    return run_worker(python, WORKER, ["--impl", impl, "--preset", args.preset, "--batch", str(batch),
                                       "--steps", str(args.steps if steps is None else steps),
                                       "--warmup", str(args.warmup if warmup is None else warmup),
                                       "--device", args.device, "--dtype", args.dtype, "--threads",
                                       str(args.threads)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="350M")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ref-python", default=DEFAULT_REF_PYTHON)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()

    rows = []
    for batch in args.batch_sizes:
        # time: all three interleaved in one process of the reference env (robust to a drifting machine);
        # memory: each alone in a fresh process (one step), so each peak is its own
        timing = {"error": "skipped"} if args.no_reference else run(args.ref_python, "interleaved", args, batch)
        memory = {impl: run(python, impl, args, batch, steps=1, warmup=0)
                  for impl, python in (("ours", sys.executable), ("reference", args.ref_python),
                                       ("gemm", sys.executable)) if not (args.no_reference and impl == "reference")}
        row = {"batch": batch}
        for impl in ("ours", "reference", "gemm"):
            row[impl] = {**memory.get(impl, {}), **timing.get(impl, {})} if "error" not in timing else \
                memory.get(impl, {"error": timing["error"]})
        ours, ref, gemm = row["ours"], row["reference"], row["gemm"]
        if "step_s" in ours and "step_s" in ref:
            row["speedup"] = ref["step_s"] / ours["step_s"]
        if "peak_mem_mb" in ours and "peak_mem_mb" in ref:
            row["memory_ratio"] = ours["peak_mem_mb"] / ref["peak_mem_mb"]
        if "step_s" in ours and "step_s" in gemm:
            row["ours_over_gemm"] = ours["step_s"] / gemm["step_s"]
            if "step_s" in ref:
                row["reference_over_gemm"] = ref["step_s"] / gemm["step_s"]
        rows.append(row)

    result = {"preset": args.preset, "device": args.device, "dtype": args.dtype, "threads": args.threads,
              "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(f"RuDOLPH {args.preset} forward+backward, {args.device} {args.dtype}, {args.threads} threads "
          f"(median of {args.steps} interleaved rounds)")
    header = f"{'batch':>5} | {'ours s':>7} {'ref s':>7} {'GEMM s':>7} | {'speedup':>7} | {'ours/GEMM':>9} " \
             f"{'ref/GEMM':>8} | {'ours MB':>8} {'ref MB':>8} {'mem ratio':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        ours, ref, gemm = row["ours"], row["reference"], row["gemm"]
        print(f"{row['batch']:>5} | {cell(ours.get('step_s'), '7.2f')} {cell(ref.get('step_s'), '7.2f')} "
              f"{cell(gemm.get('step_s'), '7.2f')} | {cell(row.get('speedup'), '6.2f')}x | "
              f"{cell(row.get('ours_over_gemm'), '8.2f')}x {cell(row.get('reference_over_gemm'), '7.2f')}x | "
              f"{cell(ours.get('peak_mem_mb'), '8.0f')} {cell(ref.get('peak_mem_mb'), '8.0f')} "
              f"{cell(row.get('memory_ratio'), '8.2f')}x")
        for part in ("ours", "reference", "gemm"):
            if "error" in row[part]:
                print(f"      {part}: {row[part]['error']}")


if __name__ == "__main__":
    main()
