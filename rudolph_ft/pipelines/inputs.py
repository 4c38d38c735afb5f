"""Images in any of the forms users hold them (files, PIL images, tensors) -> the model's image codes."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..components import Components
from ..data.images import ImageLoadError, load_image, preprocess_image

__all__ = ["ImageInput", "to_pil", "open_images", "image_size", "image_tensor", "image_codes"]

#: A path to an image file, a PIL image, a (3, H, W) tensor (floats in [0, 1] or uint8) or an (H, W, 3) uint8 array.
ImageInput = str | os.PathLike | Image.Image | torch.Tensor | np.ndarray


def to_pil(image: ImageInput) -> Image.Image:
    """A PIL image of any `ImageInput` (files are read with `load_image`: upright RGB, clear `ImageLoadError`s)."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"an image tensor must be (3, H, W) or (1, H, W), got {tuple(image.shape)}")
        pixels = image.detach().cpu()
        if pixels.is_floating_point():
            pixels = (pixels.clamp(0, 1) * 255).round()
        array = pixels.to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"an image array must be (H, W) or (H, W, 3) uint8, got {image.shape} {image.dtype}")
        return Image.fromarray(image)
    raise TypeError(f"expected an image path, PIL image, tensor or array, got {type(image).__name__}")


def open_images(paths: Sequence[str | os.PathLike]) -> tuple[list[tuple[str, Image.Image]], list[ImageLoadError]]:
    """Read image files, keeping going past unreadable ones.

    Returns:
        ([(path, image)] of the readable files in order, [ImageLoadError] of the others, each naming its file).
    """
    images, errors = [], []
    for path in paths:
        try:
            images.append((str(path), load_image(path)))
        except ImageLoadError as error:
            errors.append(error)
    return images, errors


def image_size(components: Components) -> int:
    """Pixel side of the square images the model sees (`image_tokens_per_dim` x the VQGAN's downsampling)."""
    return components.vqgan.image_size(components.model.config.image_tokens_per_dim)


def image_tensor(image: ImageInput, size: int) -> torch.Tensor:
    """(3, size, size) floats in [0, 1]: centre square crop + bilinear resize (the recipe's preprocessing).

    A float tensor that already has the size is used as it is.
    """
    if isinstance(image, torch.Tensor) and image.is_floating_point() and tuple(image.shape) == (3, size, size):
        return image.detach().float().cpu()
    return preprocess_image(to_pil(image), size)


@torch.inference_mode()
def image_codes(components: Components, images: Sequence[ImageInput], batch_size: int = 16) -> torch.Tensor:
    """VQGAN codes of images (argmax codes, deterministic: rudalle's `disable_gumbel_softmax=True`).

    Args:
        components: a `Components` (model, tokenizer, vqgan).
        images: `ImageInput`s.
        batch_size: images per VQGAN call.

    Returns:
        (len(images), image_tokens_per_dim ** 2) int64 codes on the model's device.

    Raises:
        ImageLoadError: a file cannot be read (the message names it).
        ValueError: the VQGAN's codebook does not fit the model's image vocabulary.
    """
    config, vqgan = components.model.config, components.vqgan
    if vqgan.num_codes > config.image_vocab_size:
        raise ValueError(f"the VQGAN has {vqgan.num_codes} codes but the model's image vocabulary holds "
                         f"{config.image_vocab_size}: load the VQGAN the model was trained with (--vqgan)")
    size = image_size(components)
    codes = []
    for start in range(0, len(images), batch_size):
        pixels = torch.stack([image_tensor(image, size) for image in images[start:start + batch_size]])
        codes.append(vqgan.encode(pixels))
    if not codes:
        return torch.zeros(0, config.image_seq_length, dtype=torch.long, device=components.device)
    return torch.cat(codes).to(components.device)
