"""Shared by the benchmarks: run a worker in a fresh process, time steps, read peak memory, format cells."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REF_PYTHON = os.environ.get("RUDOLPH_REF_PYTHON", str(ROOT / ".venv-ref" / "bin" / "python"))


def run_worker(python: str, worker: Path, argv: list[str]) -> dict:
    """Run `python worker argv` (repo on PYTHONPATH) and parse the JSON object on its last stdout line."""
    if not Path(python).exists():
        return {"error": f"no python at {python}: build the reference env with "
                         "`bash scripts/make-reference-env.sh .venv-ref` or pass --ref-python"}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([python, str(worker), *argv], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_steps(step, *, warmup: int, steps: int, device) -> dict:
    """Median wall time of `step()` over `steps` runs after `warmup` runs, with the process's peak memory."""
    import torch

    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"step_s": statistics.median(times), "times": times, "peak_mem_mb": peak_mb}


def cell(value, spec: str) -> str:
    """`format(value, spec)`, or a right-aligned dash when the value is missing."""
    if isinstance(value, (int, float)):
        return format(value, spec)
    return "-".rjust(int(spec.split(".")[0]))
