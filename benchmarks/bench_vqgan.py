"""VQGAN encode speed, images/s: rudolph_ft vs rudalle 1.1.3 (`get_codebook_indices(img, disable_gumbel_softmax=True)`).

    RUDOLPH_REF_PYTHON=/work/.venv-ref/bin/python python benchmarks/bench_vqgan.py [--json]

Both sides build the official architecture (`sber-gumbel-f8`, 69.0M parameters) with random weights and encode the
same seeded batch (default 16 images of 128 px) to argmax codes. rudalle runs in the reference env's python as a
worker subprocess that times one batch whenever asked, so the two sides take turns on the same cores and share any
background load alike; each figure is the median over `--rounds` timed batches after one warm-up batch.

CPU rows are fp32: ours as loaded (NCHW) and in channels-last memory format. With CUDA, a GPU block adds rudalle fp32
against ours fp32 and ours bf16 channels-last. `--json` prints one JSON object with the images/s and the ratios.
This file imports only torch at the top: the reference python runs it as the worker (`--worker`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

SEED = 0


def _batch(batch: int, size: int, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    return torch.rand(batch, 3, size, size, generator=generator).to(device)  # (B, 3, size, size) in [0, 1)


def _timed(encode: Callable[[], object], device: str) -> float:
    """Seconds for one call of `encode`, waiting for the GPU where there is one."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    encode()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


# rudalle side (runs under the reference python) ----------------------------------------------------------------
def run_worker(args: argparse.Namespace) -> None:
    """Build rudalle's VQGAN, then answer each 'run' line on stdin with one batch's seconds on stdout."""
    import contextlib
    import io

    from rudalle.vae import get_vae

    with contextlib.redirect_stdout(io.StringIO()):  # get_vae prints; stdout is our answer channel
        vae = get_vae(pretrained=False).to(args.device)
    images = _batch(args.batch, args.size, args.device)

    def encode() -> None:
        with torch.no_grad():
            vae.get_codebook_indices(images, disable_gumbel_softmax=True)

    encode()  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        print(f"{_timed(encode, args.device):.6f}", flush=True)


class RudalleWorker:
    """The reference-env worker process, timed one batch at a time."""

    def __init__(self, python: str, args: argparse.Namespace, device: str) -> None:
        command = [python, os.path.abspath(__file__), "--worker", "--device", device, "--batch", str(args.batch),
                   "--size", str(args.size)] + (["--threads", str(args.threads)] if args.threads else [])
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the rudalle worker failed to start: {' '.join(command)}")

    def time_batch(self) -> float:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


# our side ----------------------------------------------------------------------------------------------------------
def our_encoders(device: str, images: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Named encode calls of rudolph_ft's VQGAN: fp32 as loaded and channels-last; bf16 channels-last on CUDA."""
    from rudolph_ft.config import VQGAN_PRESETS
    from rudolph_ft.model.vqgan import VQGAN

    def build(dtype: torch.dtype, channels_last: bool):
        vqgan = VQGAN(VQGAN_PRESETS["sber-gumbel-f8"]).to(device=device, dtype=dtype).eval()
        return vqgan.to(memory_format=torch.channels_last) if channels_last else vqgan

    fp32, fp32_cl = build(torch.float32, False), build(torch.float32, True)
    encoders = {"ours fp32": lambda: fp32.encode(images), "ours fp32 channels-last": lambda: fp32_cl.encode(images)}
    if device == "cuda":
        bf16_cl = build(torch.bfloat16, True)
        encoders["ours bf16 channels-last"] = lambda: bf16_cl.encode(images)
    return encoders


def bench_device(device: str, args: argparse.Namespace, python: str | None) -> dict[str, float]:
    """images/s per variant on one device, the rudalle worker and ours taking turns round by round."""
    images = _batch(args.batch, args.size, device)
    encoders = our_encoders(device, images)
    worker = RudalleWorker(python, args, device) if python else None
    for encode in encoders.values():
        encode()  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in (["rudalle fp32"] if worker else []) + list(encoders)}
    try:
        for _ in range(args.rounds):
            if worker:
                seconds["rudalle fp32"].append(worker.time_batch())
            for name, encode in encoders.items():
                seconds[name].append(_timed(encode, device))
    finally:
        if worker:
            worker.close()
    return {name: args.batch / statistics.median(times) for name, times in seconds.items()}


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> dict:
    """The JSON summary: images/s and ratios to rudalle, per device."""
    summary = {"batch": args.batch, "size": args.size, "rounds": args.rounds, "threads": torch.get_num_threads(),
               "images_per_s": results, "ratios": {}}
    for device, speeds in results.items():
        if "rudalle fp32" in speeds:
            summary["ratios"][device] = {name: speed / speeds["rudalle fp32"] for name, speed in speeds.items()
                                         if name != "rudalle fp32"}
    return summary


def print_table(summary: dict) -> None:
    print(f"VQGAN encode (argmax codes), batch {summary['batch']} x {summary['size']} px, "
          f"median of {summary['rounds']} rounds, {summary['threads']} CPU threads")
    print(f"{'device':<7} {'implementation':<26} {'images/s':>9} {'vs rudalle':>11}")
    for device, speeds in summary["images_per_s"].items():
        ratios = summary["ratios"].get(device, {})
        for name, speed in speeds.items():
            ratio = f"{ratios[name]:.2f}x" if name in ratios else "-"
            print(f"{device:<7} {name:<26} {speed:>9.2f} {ratio:>11}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--rounds", type=int, default=5, help="timed batches per implementation (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads on both sides")
    parser.add_argument("--ref-python", default=os.environ.get("RUDOLPH_REF_PYTHON"),
                        help="reference env python with rudalle (default: $RUDOLPH_REF_PYTHON); none: ours only")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return run_worker(args)
    if not args.ref_python:
        print("note: no reference python (--ref-python / RUDOLPH_REF_PYTHON): timing ours only", file=sys.stderr)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    summary = report({device: bench_device(device, args, args.ref_python) for device in devices}, args)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary)


if __name__ == "__main__":
    main()
