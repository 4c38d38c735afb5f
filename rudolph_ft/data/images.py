"""Image preprocessing shared by training and inference (Pillow + torch, no torchvision)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["preprocess_image"]


def preprocess_image(image: Image.Image, size: int) -> torch.Tensor:
    """The recipe's preprocessing: RGB, centre square crop, bilinear resize, float tensor in [0, 1].

    Equals the article's `T.RandomResizedCrop(size, scale=(1., 1.), ratio=(1., 1.))` + `T.ToTensor()`
    (with scale and ratio fixed at 1 that transform always falls back to the centred largest square).

    Args:
        image: a PIL image of any mode.
        size: output side in pixels (`image_tokens_per_dim * 8` for RuDOLPH).

    Returns:
        (3, size, size) float32 tensor in [0, 1].
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
