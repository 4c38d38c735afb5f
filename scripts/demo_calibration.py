"""How far can a small model get on a demo style from 270 photos, by what it sees? A calibration for issue 15.

    python scripts/demo_calibration.py --style bowls --input pixels          # a small CNN on the 64 px photos
    python scripts/demo_calibration.py --style bowls --input colours         # on the 16x16 mean colours
    python scripts/demo_calibration.py --style bowls --input codes --tokenizer palette [--fixed-embeddings]

Trains on photos 0..269 of the style drawn with seed 0 (what `rudolph-ft data demo` writes) and scores 300 photos
drawn with seed 1: dish accuracy and kcal MAE against the always-the-training-mean answer. One network with a dish
head and a kcal regression head (standardised kcal, MSE), AdamW, random dihedral views, 16 photos a step. `codes`
feeds the 16x16 image codes of a 128 px photo (the tokenizer named: `tiny` the random tiny VQGAN, `tiny-kmeans` with
its code projection fitted by k-means, `palette` the palette tokenizer fitted to the training photos) through a
learned embedding per code, or with `--fixed-embeddings` through each code's standardised colours (palette only).
It is no RuDOLPH: it says what the inputs make learnable, separate from the transformer and its caption format.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from rudolph_ft.data.demo import demo_sample
from rudolph_ft.data.images import preprocess_image
from rudolph_ft.model.vqgan import load_vqgan
from rudolph_ft.train.prepare import dihedral, fit_kmeans_quantizer


def photos(style: str, seed: int, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, 128, 128) photos in [0, 1], dish index, kcal of photos 0..count-1 drawn with `seed`."""
    samples = [demo_sample(i, seed=seed, style=style, size=128) for i in range(count)]
    dishes = sorted({s.dish.slug for s in samples})
    return (torch.stack([preprocess_image(s.image, 128) for s in samples]),
            torch.tensor([dishes.index(s.dish.slug) for s in samples]),
            torch.tensor([float(s.nutrients["kkal"]) for s in samples]))


def _conv(channels: int, pools: int) -> list[nn.Module]:
    """4 convolutions of 64 channels, the first `pools` of them followed by a 2x2 max-pool."""
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(channels if i == 0 else 64, 64, 3, padding=1), nn.ReLU()]
        layers += [nn.MaxPool2d(2)] if i < pools else []
    return layers


class Net(nn.Module):
    """Input -> 4 convolutions (64 channels) -> global average -> dish logits and a standardised kcal."""

    def __init__(self, dishes: int, channels: int, pools: int, embedding: nn.Embedding | None = None) -> None:
        super().__init__()
        self.embedding = embedding
        self.body = nn.Sequential(*_conv(channels, pools), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(64, dishes + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:  # (B, h, w) codes -> (B, C, h, w)
            x = self.embedding(x).permute(0, 3, 1, 2)
        return self.body(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", default="bowls")
    parser.add_argument("--input", choices=["pixels", "colours", "codes"], default="pixels")
    parser.add_argument("--tokenizer", choices=["tiny", "tiny-kmeans", "palette"], default="palette")
    parser.add_argument("--fixed-embeddings", action="store_true")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    train_x, train_dish, train_kcal = photos(args.style, 0, 270)
    test_x, test_dish, test_kcal = photos(args.style, 1, 300)
    dishes = int(train_dish.max()) + 1

    if args.input == "pixels":
        prepare = lambda x: torch.nn.functional.interpolate(x, size=64, mode="area") * 2 - 1  # noqa: E731
        net = Net(dishes, 3, pools=3)
    elif args.input == "colours":
        prepare = lambda x: torch.nn.functional.avg_pool2d(x, 8) * 2 - 1  # noqa: E731
        net = Net(dishes, 3, pools=0)
    else:
        tokenizer = load_vqgan("palette" if args.tokenizer == "palette" else "tiny", seed=None if
                               args.tokenizer == "palette" else 0)
        if args.tokenizer != "tiny":
            fit_kmeans_quantizer(tokenizer, train_x, seed=args.seed)
        embedding = nn.Embedding(tokenizer.num_codes, 64)
        if args.fixed_embeddings:
            features = tokenizer.centroid_features()  # AttributeError for a VQGAN: palette only
            with torch.no_grad():
                embedding.weight.copy_(features @ torch.linalg.qr(torch.randn(64, features.shape[1])).Q.T)
            embedding.requires_grad_(False)

        def prepare(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([tokenizer.encode(x[i:i + 50]) for i in range(0, len(x), 50)]).reshape(len(x), 16, 16)
        net = Net(dishes, 64, pools=1, embedding=embedding)

    views_x = torch.stack([prepare(dihedral(train_x, view)) for view in range(8)], 1)  # (N, 8, ...)
    test_in = prepare(test_x)
    mean, std = train_kcal.mean(), train_kcal.std()
    baseline = (mean - test_kcal).abs().mean().item()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], 2e-3, weight_decay=1e-2)
    start = time.time()
    for epoch in range(args.epochs):
        order = torch.randperm(len(views_x))
        for first in range(0, len(order), 16):
            index = order[first:first + 16]
            out = net(views_x[index, torch.randint(8, (len(index),))])
            loss = (nn.functional.cross_entropy(out[:, :dishes], train_dish[index])
                    + nn.functional.mse_loss(out[:, dishes], (train_kcal[index] - mean) / std))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if (epoch + 1) % 25 == 0 or epoch + 1 == args.epochs:
            with torch.no_grad():
                out = net(test_in)
            accuracy = (out[:, :dishes].argmax(1) == test_dish).float().mean().item()
            mae = (out[:, dishes] * std + mean - test_kcal).abs().mean().item()
            print(f"epoch {epoch + 1}: dish accuracy {accuracy:.3f}, kcal MAE {mae:.1f} = {mae / baseline:.2f}x the "
                  f"mean's {baseline:.1f} ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
