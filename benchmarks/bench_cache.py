"""Epoch time with the image-code cache vs encoding every batch every epoch (the article's loop), on the CPU.

    python benchmarks/bench_cache.py [--n 256] [--full-n 64] [--epochs 2] [--quick] [--json]

The data are the first `--n` of the 300 demo photos in `data/demo/` (checked once, outside the timings). An epoch
walks the images in batches of `--batch` and ends with every batch's image codes in hand:
- baseline (the article's way): load + preprocess each batch's images, then `VQGAN.encode` them, every epoch;
- cache: epoch 1 builds the cache (`CodeCache.codes_for` on an empty folder: load + encode + write each image once);
  every later epoch is what a *new run* pays: a fresh `CodeCache` reading every entry from disk, then the batches
  sliced from the codes tensor. (Within one run the trainer keeps that tensor in memory, which is cheaper still.)
Baseline and cache epochs alternate, so background load hits both alike.

Two VQGANs: the `tiny` preset at 64 px (8 x 8 codes) and the full-size `sber-gumbel-f8` architecture (69M
parameters, random weights) at 128 px (16 x 16 codes, RuDOLPH-350M's input). The full-size encoder takes about
0.5-1 s per 128 px image on one CPU core, so its default is `--full-n 64` images to keep the run under ~5 minutes;
pass `--full-n 256` for the full-size epoch over 256 images (about 4 minutes per encoding epoch). Both sides run with
`--threads` torch threads (default 1: steadier timings on a small shared machine). The target is a ratio >= 5 from the
second epoch on. `--json` prints one JSON object with the epoch times and ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from rudolph_ft.config import VQGAN_PRESETS
from rudolph_ft.data import CodeCache, FoodDataset, collate_images
from rudolph_ft.model.vqgan import VQGAN, load_vqgan

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
TARGET = 5.0


def demo_subset(size: int, n: int) -> FoodDataset:
    """The first `n` demo photos at `size` px (the check reads each image once, here, outside the timings)."""
    dataset = FoodDataset(DEMO, image_size=size)
    if n > len(dataset):
        raise SystemExit(f"--n {n} is more than the {len(dataset)} demo images in {DEMO}")
    return FoodDataset.from_records(dataset.config, dataset.records[:n], dataset.report)


def baseline_epoch(dataset: FoodDataset, vqgan: VQGAN, batch: int) -> float:
    """Seconds for the article's epoch: every batch is loaded, preprocessed and encoded."""
    start = time.perf_counter()
    for images in DataLoader(dataset, batch_size=batch, collate_fn=collate_images):
        vqgan.encode(images["image"])  # (B, h*w)
    return time.perf_counter() - start


def cache_epoch(dataset: FoodDataset, vqgan: VQGAN, batch: int, directory: Path) -> tuple[float, str]:
    """Seconds for an epoch served by a fresh `CodeCache` on `directory` (a new run), and its stats line."""
    start = time.perf_counter()
    cache = CodeCache(directory, vqgan, image_size=dataset.config.image_size, batch_size=batch)
    codes = cache.codes_for(dataset, progress=False)  # (N, 1, h*w)
    for first in range(0, len(codes), batch):
        codes[first:first + batch, 0]  # noqa: B018 - the batch a training step would take
    return time.perf_counter() - start, str(cache.stats)


def bench_model(name: str, vqgan: VQGAN, size: int, n: int, args: argparse.Namespace) -> dict:
    """Alternate baseline and cache epochs of one VQGAN; the epoch times and the ratios."""
    dataset = demo_subset(size, n)
    vqgan.encode(dataset[0]["image"][None])  # warm-up (first-call allocations), outside the timings
    baseline, cached = [], []
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as directory:
        for epoch in range(1, args.epochs + 1):
            baseline.append(baseline_epoch(dataset, vqgan, args.batch))
            seconds, stats = cache_epoch(dataset, vqgan, args.batch, Path(directory))
            cached.append(seconds)
            if not args.json:
                print(f"  {name} epoch {epoch}: baseline {baseline[-1]:8.3f} s   cache {cached[-1]:8.3f} s   "
                      f"({stats})", file=sys.stderr, flush=True)
    later = (statistics.median(baseline[1:]) / statistics.median(cached[1:])) if args.epochs > 1 else None
    return {
        "images": n, "image_size": size, "codes_per_image": vqgan.image_tokens_per_dim(size) ** 2,
        "baseline_epoch_s": baseline, "cache_epoch_s": cached,
        "ratio_epoch1": baseline[0] / cached[0], "ratio_epoch2plus": later,
    }


def print_table(summary: dict) -> None:
    print(f"epoch over the demo photos, batch {summary['batch']}, {summary['threads']} torch thread(s), CPU")
    print(f"{'VQGAN':<16} {'images':>6} {'px':>4} {'epoch':>6} {'baseline s':>11} {'cache s':>9} {'ratio':>8}")
    for name, result in summary["models"].items():
        pairs = zip(result["baseline_epoch_s"], result["cache_epoch_s"], strict=True)
        for epoch, (baseline, cached) in enumerate(pairs, start=1):
            print(f"{name:<16} {result['images']:>6} {result['image_size']:>4} {epoch:>6} {baseline:>11.3f} "
                  f"{cached:>9.3f} {baseline / cached:>7.1f}x")
        if result["ratio_epoch2plus"] is not None:
            print(f"{name:<16} epoch 2+ ratio (medians): {result['ratio_epoch2plus']:.1f}x (target >= {TARGET:g}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="demo images (tiny VQGAN; and full-size unless --full-n)")
    parser.add_argument("--full-n", type=int, default=64, help="demo images for the full-size VQGAN")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per side (>= 2 for the epoch 2+ ratio)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    parser.add_argument("--models", default="tiny,full", help="comma-separated: tiny, full")
    parser.add_argument("--quick", action="store_true", help="32 images (8 full-size), 2 epochs: a smoke run")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    if args.quick:
        args.n, args.full_n, args.epochs = 32, 8, 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    builders = {
        "tiny": lambda: ("tiny", load_vqgan("tiny"), 64, args.n),
        "full": lambda: ("sber-gumbel-f8", VQGAN(VQGAN_PRESETS["sber-gumbel-f8"]).eval(), 128, args.full_n),
    }
    models = {}
    for key in args.models.split(","):
        if key not in builders:
            raise SystemExit(f"unknown model {key!r} in --models; choose from {', '.join(builders)}")
        name, vqgan, size, n = builders[key]()
        models[name] = bench_model(name, vqgan, size, n, args)
    ratios = [m["ratio_epoch2plus"] for m in models.values() if m["ratio_epoch2plus"] is not None]
    summary = {"batch": args.batch, "threads": args.threads, "epochs": args.epochs, "target_ratio": TARGET,
               "meets_target": bool(ratios) and min(ratios) >= TARGET, "models": models}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary)


if __name__ == "__main__":
    main()
