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
from rudolph_ft.train.prepare import dihedral, fit_kmeans_quantizer


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


def fit_vq_autoencoder(vqgan, images: torch.Tensor, *, steps: int = 300, batch_size: int = 32, lr: float = 2e-3,
                       commitment: float = 0.1, restart_every: int = 25, seed: int = 0) -> dict:
    """Train a random-weight VQGAN as a VQ autoencoder on `images` (B, 3, S, S): the codes become what the photos'
    reconstruction needs (mostly colour and shape), where a random encoder's codes hash local patches.

    The codebook lives where `fit_kmeans_quantizer` puts it (centroids c_k of the `quant_conv` features, the code
    projection's weight c_k and bias -|c_k|^2 / 2: argmax = nearest), starts as those k-means centroids, and is
    learned with the encoder, `quant_conv`, `post_quant_conv` and decoder by the VQ-VAE loss: pixel MSE through the
    straight-through quantizer + codebook term + `commitment` x commitment term (low: the encoder is not pulled onto
    a few codes). Every `restart_every` steps the codes no batch used since the last restart move onto random features
    of the current batch (dead-code restart), so the whole codebook stays in use. Random dihedral views of the photos
    (rotations and flips) augment the batches. The decoder reads the same codebook (`quantize.embed` = c_k, which
    needs `embed_dim == z_channels`, as in the tiny preset), so decoded codes are reconstructions.

    Returns:
        {"steps", "mse" (pixel MSE in [-1, 1] over the last 20 steps), "codes_used" (of n_embed, on `images`)}.
    """
    cfg = vqgan.config
    if cfg.embed_dim != cfg.z_channels:
        raise ValueError(f"--vqvae needs embed_dim == z_channels (the decoder reads the codebook), this VQGAN "
                         f"has {cfg.embed_dim} and {cfg.z_channels}")
    fit_kmeans_quantizer(vqgan, images, seed=seed)
    device = vqgan.quantize.proj.weight.device
    codebook = torch.nn.Parameter(vqgan.quantize.proj.weight[:, :, 0, 0].detach().clone().float())  # (K, z)
    modules = (vqgan.encoder, vqgan.quant_conv, vqgan.post_quant_conv, vqgan.decoder)
    params = [codebook] + [p for module in modules for p in module.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    used = torch.zeros(len(codebook), dtype=torch.bool)
    losses: list[float] = []
    was_training = vqgan.training
    vqgan.train().requires_grad_(True)
    with torch.enable_grad(), torch.inference_mode(False):
        for step in range(steps):
            index = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
            view = int(torch.randint(8, (1,), generator=generator))
            x = dihedral(images[index], view).to(device) * 2 - 1
            z = vqgan.quant_conv(vqgan.encoder(x))  # (B, z, h, w)
            flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            nearest = torch.cdist(flat.detach(), codebook.detach()).argmin(1)
            chosen = codebook[nearest]
            quantized = flat + (chosen - flat).detach()  # straight through to the encoder
            grid = quantized.reshape(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
            recon = vqgan.decoder(vqgan.post_quant_conv(grid))
            mse = torch.nn.functional.mse_loss(recon, x)
            loss = (mse + torch.nn.functional.mse_loss(chosen, flat.detach())
                    + commitment * torch.nn.functional.mse_loss(flat, chosen.detach()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(mse.item())
            used[nearest.cpu()] = True
            if (step + 1) % restart_every == 0 and not bool(used.all()):
                dead = (~used).nonzero().flatten()
                pick = torch.randint(len(flat), (len(dead),), generator=generator)
                with torch.no_grad():
                    codebook[dead.to(device)] = flat.detach()[pick.to(device)].float()
                used.zero_()
    vqgan.train(was_training).requires_grad_(False)
    with torch.no_grad():
        vqgan.quantize.proj.weight.copy_(codebook[:, :, None, None].to(vqgan.quantize.proj.weight))
        vqgan.quantize.proj.bias.copy_((-codebook.square().sum(1) / 2).to(vqgan.quantize.proj.bias))
        vqgan.quantize.embed.weight.copy_(codebook.to(vqgan.quantize.embed.weight))
    codes = torch.cat([vqgan.encode(images[i:i + 64].to(device)).flatten() for i in range(0, len(images), 64)])
    tail = losses[-20:]
    return {"steps": steps, "mse": sum(tail) / max(len(tail), 1), "codes_used": int(codes.unique().numel())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="data sets (folders with data.csv)")
    parser.add_argument("--vqgan", default="tiny", help="VQGAN preset or folder")
    parser.add_argument("--seed", type=int, default=0, help="weight seed of a random-weight preset")
    parser.add_argument("--size", type=int, default=64, help="image side the VQGAN encodes")
    parser.add_argument("--kmeans", action="store_true", help="also probe a k-means quantizer of the VQGAN's "
                        "encoder features fitted on the set's photos (labels unused)")
    parser.add_argument("--vqvae", type=int, default=0, metavar="STEPS", help="also probe the VQGAN trained as a VQ "
                        "autoencoder on the set's photos for STEPS steps (`fit_vq_autoencoder`; labels unused)")
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
        if args.vqvae:
            trained = load_vqgan(args.vqgan, seed=args.seed)
            fit = fit_vq_autoencoder(trained, images, steps=args.vqvae)
            probes.append((f"bag of codes, VQ autoencoder ({args.vqvae} steps, pixel MSE {fit['mse']:.3f})",
                           np.sqrt(bag_of_codes(trained, images))))
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
