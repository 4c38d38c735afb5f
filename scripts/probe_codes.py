"""How much dish and portion information do a VQGAN's image codes carry? A linear probe on bag-of-codes.

    python scripts/probe_codes.py data/demo /tmp/bowls --vqgan tiny --seed 0 --size 64

For each data set (a folder with the article's `data.csv`) every photo is preprocessed as training does
(`preprocess_image`), encoded to argmax codes, and summarised as a bag of codes (a histogram over the codebook,
position ignored). Five-fold cross-validated linear probes then predict the dish (multinomial logistic regression)
and the kcal (ridge regression on the bag of codes plus the true dish one-hot, so it measures the portion read from
the codes). The same probes on the photo's 8x8 mean colours (192 numbers) show what a plain picture summary gives.
Reported: dish accuracy, kcal MAE / the always-the-mean MAE, the codes used and their entropy.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rudolph_ft.data.images import preprocess_image
from rudolph_ft.model.vqgan import load_vqgan
from rudolph_ft.train.prepare import fit_kmeans_quantizer


def load_set(folder: Path, size: int) -> tuple[torch.Tensor, list[str], np.ndarray]:
    """(N, 3, size, size) photos, dish names, kcal of the data set in `folder`."""
    with open(folder / "data.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = torch.stack([preprocess_image(Image.open(folder / row["path"]), size) for row in rows])
    return images, [row["name"] for row in rows], np.array([float(row["kkal"]) for row in rows])


@torch.inference_mode()
def bag_of_codes(vqgan, images: torch.Tensor, batch: int = 50) -> np.ndarray:
    """(N, n_embed) share of each code among a photo's codes."""
    codes = torch.cat([vqgan.encode(images[i:i + batch]) for i in range(0, len(images), batch)])  # (N, h*w)
    bags = torch.zeros(len(codes), vqgan.config.n_embed)
    bags.scatter_add_(1, codes, torch.ones_like(codes, dtype=torch.float))
    return (bags / codes.shape[1]).numpy()


def smooth(images: torch.Tensor, pool: int) -> torch.Tensor:
    """Images averaged over pool x pool pixel blocks and scaled back up (bilinear): texture removed, colour kept."""
    if pool <= 1:
        return images
    small = torch.nn.functional.avg_pool2d(images, pool)
    return torch.nn.functional.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False)


def mean_colours(images: torch.Tensor, grid: int = 8) -> np.ndarray:
    """(N, 3 * grid * grid) mean colour of each cell of a grid x grid split: a plain summary of the picture."""
    return torch.nn.functional.adaptive_avg_pool2d(images, grid).flatten(1).numpy()


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression with an L2 penalty, full-batch L-BFGS: (weight, bias)."""
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def probe_dish(features: np.ndarray, labels: np.ndarray, folds: list[np.ndarray], l2: float) -> float:
    """Cross-validated accuracy of a multinomial logistic regression on standardised features."""
    correct = 0
    for test in folds:
        train = np.setdiff1d(np.arange(len(labels)), test)
        x_train, x_test = (torch.tensor(x, dtype=torch.float) for x in _standardise(features[train], features[test]))
        weight, bias = _fit_logistic(x_train, torch.tensor(labels[train]), int(labels.max()) + 1, l2)
        correct += int(((x_test @ weight + bias).argmax(1).numpy() == labels[test]).sum())
    return correct / len(labels)


def probe_kcal(features: np.ndarray, dish_onehot: np.ndarray, kcal: np.ndarray, folds: list[np.ndarray],
               ridge: float) -> float:
    """Cross-validated kcal MAE of ridge regression on [features, true dish] / the always-the-mean MAE."""
    errors, baseline = [], []
    for test in folds:
        train = np.setdiff1d(np.arange(len(kcal)), test)
        x_train, x_test = _standardise(features[train], features[test])
        x_train = np.hstack([x_train, dish_onehot[train]])
        x_test = np.hstack([x_test, dish_onehot[test]])
        mean = kcal[train].mean()
        weight = np.linalg.solve(x_train.T @ x_train + ridge * np.eye(x_train.shape[1]),
                                 x_train.T @ (kcal[train] - mean))
        errors.append(np.abs(x_test @ weight + mean - kcal[test]))
        baseline.append(np.abs(mean - kcal[test]))
    return float(np.concatenate(errors).mean() / np.concatenate(baseline).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="data sets (folders with data.csv)")
    parser.add_argument("--vqgan", default="tiny", help="VQGAN preset or folder")
    parser.add_argument("--seed", type=int, default=0, help="weight seed of a random-weight preset")
    parser.add_argument("--size", type=int, default=64, help="image side the VQGAN encodes")
    parser.add_argument("--kmeans", action="store_true", help="also probe a k-means quantizer of the VQGAN's "
                        "encoder features fitted on the set's photos (labels unused)")
    parser.add_argument("--smooth", type=int, nargs="*", default=[1], help="also probe codes of photos averaged over "
                        "N x N pixel blocks first (1: the photo as is)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vqgan = load_vqgan(args.vqgan, seed=args.seed)
    print("| data | features | dish accuracy | kcal MAE / mean (true dish given) | codes used | code entropy bits |")
    print("| --- | --- | --- | --- | --- | --- |")
    for folder in args.folders:
        images, names, kcal = load_set(folder, args.size)
        dishes = sorted(set(names))
        labels = np.array([dishes.index(name) for name in names])
        onehot = np.eye(len(dishes))[labels]
        folds = np.array_split(np.random.default_rng(0).permutation(len(labels)), 5)
        probes = [(f"bag of codes{f', smoothed {pool}px' if pool > 1 else ''}",
                   np.sqrt(bag_of_codes(vqgan, smooth(images, pool)))) for pool in args.smooth]  # sqrt: Hellinger
        if args.kmeans:
            fitted = load_vqgan(args.vqgan, seed=args.seed)
            fit_kmeans_quantizer(fitted, images)
            probes.append(("bag of codes, k-means quantizer", np.sqrt(bag_of_codes(fitted, images))))
        probes.append(("8x8 mean colours", mean_colours(images)))
        for what, features in probes:
            # the best of a few penalties: an optimistic probe (what a linear read-out can get at best)
            accuracy = max(probe_dish(features, labels, folds, l2) for l2 in (1e-3, 1e-2, 1e-1))
            ratio = min(probe_kcal(features, onehot, kcal, folds, ridge) for ridge in (1.0, 10.0, 100.0, 1000.0))
            extra = "- | -"
            if what.startswith("bag"):
                share = np.square(features).mean(0)
                entropy = -float((share[share > 0] * np.log2(share[share > 0])).sum())
                extra = f"{int((share > 0).sum())} | {entropy:.2f}"
            print(f"| {folder.name} | {what} | {accuracy:.2f} | {ratio:.2f} | {extra} |")
        dish_only = probe_kcal(np.zeros((len(kcal), 1)), onehot, kcal, folds, 1.0)
        print(f"| {folder.name} | dish only (no picture) | - | {dish_only:.2f} | - | - |")
    print(f"(log2 of the codebook: {math.log2(vqgan.config.n_embed):.0f} bits)")


if __name__ == "__main__":
    main()
