"""A colour-palette image tokenizer for from-scratch CPU demos: each 8x8 patch -> the nearest of `n_embed` colour
patterns, fitted by k-means to the training photos.

A random-weight VQGAN (the `tiny` preset) gives codes that hash local patches: its encoder normalises every channel
over the photo (GroupNorm), so the same food colour lands on unrelated codes under another table colour or light, and
a model trained on a few hundred photos has to learn each code's meaning from scratch. A palette code is what the
patch looks like: the mean colours of its `cells` x `cells` sub-squares (2 x 2 by default: 12 numbers), quantised to
the nearest centroid. Codes of similar colours are neighbours in that space, and `centroid_features` hands the model
that neighbourhood (`rudolph_ft.train` initialises the image-token embeddings from it).

The class has the interface the rest of the package uses of `VQGAN` (`encode`, `encode_logits`, `decode`, `config`,
`num_codes`, `image_tokens_per_dim`, `image_size`, `save_vqgan` / `load_vqgan`); decoding paints each patch with its
code's sub-square colours (a blocky picture: the tokenizer has no neural decoder). Unfitted, the centroids are an
even grid of plain colours (8 levels per channel for 512 codes), so encoding works before `fit`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PaletteConfig

__all__ = ["PaletteTokenizer", "kmeans"]


def kmeans(points: torch.Tensor, count: int, *, iterations: int = 25, seed: int = 0) -> torch.Tensor:
    """(count, D) k-means centroids of `points` (N, D): Lloyd's iterations from `count` distinct random points (every
    point, then repeats, when there are fewer); an empty cluster restarts on a random point."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randperm(len(points), generator=generator)[:count]
    if len(start) < count:
        start = torch.cat([start, torch.randint(len(points), (count - len(start),), generator=generator)])
    centroids = points[start].clone()
    for _ in range(iterations):
        nearest = _nearest(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, nearest, points)
        sizes = torch.bincount(nearest, minlength=count)
        restart = points[torch.randint(len(points), (count,), generator=generator)]
        centroids = torch.where((sizes == 0)[:, None], restart, sums / sizes.clamp(min=1)[:, None])
    return centroids


def _nearest(points: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    return torch.cat([torch.cdist(points[i:i + chunk], centroids).argmin(1) for i in range(0, len(points), chunk)])


def _plain_colour_grid(config: PaletteConfig) -> torch.Tensor:
    """(n_embed, feature_size) plain colours (every sub-square alike) spread evenly over the RGB cube."""
    levels = max(2, math.ceil(config.n_embed ** (1 / 3)))
    axis = (torch.arange(levels, dtype=torch.float32) + 0.5) / levels
    grid = torch.cartesian_prod(axis, axis, axis)[: config.n_embed]  # (<= n_embed, 3)
    if len(grid) < config.n_embed:
        grid = torch.cat([grid, grid[: config.n_embed - len(grid)]])
    return grid.repeat_interleave(config.cells * config.cells, dim=1)  # (n_embed, 3 * cells * cells), colour-major


class PaletteTokenizer(nn.Module):
    """Images in [0, 1] <-> grids of palette codes (see the module docstring). Frozen; `fit` sets the palette."""

    def __init__(self, config: PaletteConfig | None = None) -> None:
        super().__init__()
        self.config = config or PaletteConfig()
        self.register_buffer("centroids", _plain_colour_grid(self.config))  # (n_embed, feature_size)

    # the VQGAN interface ---------------------------------------------------------------------------------------------
    @property
    def downsampling(self) -> int:
        return self.config.downsampling

    @property
    def num_codes(self) -> int:
        return self.config.n_embed

    @property
    def encoder_device(self) -> torch.device:
        return self.centroids.device

    def encoding_modules(self) -> tuple[nn.Module, ...]:
        return (self,)

    def image_tokens_per_dim(self, image_size: int) -> int:
        if image_size % self.downsampling:
            raise ValueError(f"image size {image_size} px is not a multiple of the downsampling {self.downsampling}")
        return image_size // self.downsampling

    def image_size(self, image_tokens_per_dim: int) -> int:
        return image_tokens_per_dim * self.downsampling

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, h*w, feature_size) mean colours of each patch's cells x cells sub-squares, row-major over patches."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        size, cells = self.downsampling, self.config.cells
        height, width = images.shape[-2:]
        if height % size or width % size:
            raise ValueError(f"image size {height}x{width} px is not a multiple of the downsampling {size}")
        means = F.avg_pool2d(images.to(self.centroids), size // cells)  # (B, 3, h*cells, w*cells)
        b, _, h, w = means.shape[0], 3, height // size, width // size
        means = means.reshape(b, 3, h, cells, w, cells).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, 3, cells, cells)
        return means.reshape(b, h * w, self.config.feature_size)

    @torch.inference_mode()
    def encode_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, n_embed, h, w) minus half the squared distance of each patch to each centroid (argmax: nearest)."""
        features = self.patch_features(images)  # (B, n, F)
        logits = features @ self.centroids.T - self.centroids.square().sum(1) / 2  # + |f|^2/2, the same per patch
        height, width = images.shape[-2] // self.downsampling, images.shape[-1] // self.downsampling
        return logits.transpose(1, 2).reshape(len(images), self.num_codes, height, width)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, *, gumbel: bool = False, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, h*w) int64 codes, row-major: the nearest centroid of each patch. Palette codes have no Gumbel
        sampling (`gumbel=True` is an error: use `vqgan.augment=shift` or `dihedral` views)."""
        if gumbel:
            raise ValueError("the palette tokenizer has no Gumbel codes: use vqgan.augment=shift or dihedral")
        features = self.patch_features(images)
        return torch.stack([_nearest(f, self.centroids) for f in features])

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, 3, 8h, 8h) images in [0, 1]: each patch painted with its code's sub-square colours."""
        side = math.isqrt(codes.shape[1])
        if side * side != codes.shape[1]:
            raise ValueError(f"codes of a square grid expected, got {codes.shape[1]} per image")
        cells = self.config.cells
        colours = self.centroids[codes.long()].reshape(len(codes), side, side, 3, cells, cells)
        grid = colours.permute(0, 3, 1, 4, 2, 5).reshape(len(codes), 3, side * cells, side * cells)
        return F.interpolate(grid, scale_factor=self.downsampling // cells, mode="nearest").clamp(0, 1).float()

    # fitting ---------------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def fit(self, images: torch.Tensor, *, iterations: int = 25, seed: int = 0, batch_size: int = 64) -> None:
        """Set the palette to k-means centroids of the patches of `images` (B, 3, S, S) in [0, 1]."""
        points = torch.cat([self.patch_features(images[i:i + batch_size]).reshape(-1, self.config.feature_size)
                            for i in range(0, len(images), batch_size)]).float().cpu()
        self.centroids.copy_(kmeans(points, self.num_codes, iterations=iterations, seed=seed).to(self.centroids))

    def centroid_features(self) -> torch.Tensor:
        """(n_embed, feature_size) each code's colours, standardised per feature: what the model's image-token
        embeddings start from (`rudolph_ft.train.prepare.init_image_embeddings`)."""
        features = self.centroids.float()
        return (features - features.mean(0)) / features.std(0).clamp(min=1e-6)
