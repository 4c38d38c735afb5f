"""Text to image: sample image codes after a left-text prompt (KV cache), decode them with the VQGAN, grid them.

The reference `generate_codebooks` (rc4; rc10 `ruDolphApi.generate_codebooks`) puts the prompt in the left text and
samples the image codes one by one from the image part of the output layer under the image attention masks;
`ruDolphApi.dream` then decodes them and reranks by `self_reranking_by_text`. Codes are always sampled among the
VQGAN's codes (the image special tokens of the v2 checkpoints are left out, as rc10 does).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..components import Components
from ..model import RuDolph
from .prompts import Prompter
from .rerank import RankedImage, rerank_by_text
from .sampling import SamplingSettings, decode_loop, draw_uniforms, model_step
from .scoring import in_eval_mode, prefix_cache

__all__ = ["GeneratedImages", "generate_images", "sample_image_codes", "image_grid", "to_pil_images"]


@dataclass
class GeneratedImages:
    """Images drawn for a text, best first when reranked.

    Attributes:
        images: PIL images.
        codes: (n, image_seq_length) their image codes.
        ranking: the `rerank_by_text` result of each image (same order as `images`), or empty when not reranked.
    """

    images: list[Image.Image]
    codes: torch.Tensor
    ranking: list[RankedImage] = field(default_factory=list)

    def grid(self, columns: int | None = None) -> Image.Image:
        return image_grid(self.images, columns)

    def save_grid(self, path: str | os.PathLike, columns: int | None = None) -> Path:
        """Write the images as one PNG grid; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.grid(columns).save(path)
        return path


@torch.inference_mode()
def sample_image_codes(model: RuDolph, left: torch.Tensor, n: int, settings: SamplingSettings, *, prompter: Prompter,
                       seed: int | None = None, batch_size: int = 8, use_cache: bool = True) -> torch.Tensor:
    """`n` image code grids sampled after one left text (the model-level core of `generate_images`).

    Args:
        model: a `RuDolph` in eval mode.
        left: (l_text_seq_length,) encoded prompt.
        n: images; settings: top-k / top-p / temperature (top_k=1: greedy).
        prompter: which image columns may be sampled.
        seed: local generator seed (None: random); image j always uses the same random numbers.
        batch_size: images decoded together.
        use_cache: False re-runs the whole sequence at every step (to check the cache).

    Returns:
        (n, image_seq_length) int64 codes.
    """
    cfg = model.config
    device = next(model.parameters()).device
    uniforms = draw_uniforms(n, cfg.image_seq_length, seed)
    left = left.to(device)[None]
    columns = min(prompter.image_columns, cfg.image_vocab_size)
    if use_cache:  # the prompt runs once
        shared, first_logits = prefix_cache(model, left, head="image")
    chunks = []
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        if use_cache:
            step = model_step(model, "image", cache=shared.repeat_interleave(rows))
            first = first_logits.expand(rows, -1)
        else:
            step = model_step(model, "image", prompt=left.expand(rows, -1))
            first = model(left.expand(rows, -1), head="image", last_only=True).logits[:, -1]
        chunks.append(decode_loop(step, first, uniforms[start:start + rows], settings,
                                  columns=columns))
    return torch.cat(chunks).cpu()


def to_pil_images(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) floats in [0, 1] -> RGB PIL images."""
    array = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(item)) for item in array]


def image_grid(images: Sequence[Image.Image], columns: int | None = None, padding: int = 2) -> Image.Image:
    """Images (of one size) side by side in rows of `columns` (default: about square), on a white background."""
    if not images:
        raise ValueError("no images to put in a grid")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * (width + padding) + padding, rows * (height + padding) + padding), "white")
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        grid.paste(image.convert("RGB"), (padding + column * (width + padding), padding + row * (height + padding)))
    return grid


@in_eval_mode
def generate_images(
    components: Components,
    text: str,
    n: int = 4,
    *,
    top_k: int = 768,
    top_p: float = 0.99,
    temperature: float = 1.0,
    seed: int | None = 42,
    batch_size: int = 8,
    rerank: bool = False,
    style: str = "rc4",
) -> GeneratedImages:
    """Draw images for a text: sample image codes with the image head after the prompt, decode with the VQGAN.

    Args:
        components: model, tokenizer and VQGAN.
        text: the prompt (lower-cased), e.g. "борщ со сметаной".
        n: images to draw.
        top_k, top_p, temperature: sampling (defaults: rc10's image settings); top_k=1 is greedy.
        seed: the same seed gives the same images (None: random).
        batch_size: images decoded together.
        rerank: order the images best first by `rerank_by_text` (`GeneratedImages.ranking` holds the scores).
        style: "rc4" or "rc10" prompts (see `prompts`).
    """
    model = components.model
    prompter = Prompter(model.config, components.tokenizer, style)
    settings = SamplingSettings(top_k=top_k, top_p=top_p, temperature=temperature)
    if components.vqgan.num_codes < model.config.image_vocab_size:
        raise ValueError(f"the VQGAN decodes {components.vqgan.num_codes} codes but the model samples among "
                         f"{model.config.image_vocab_size}: load the VQGAN the model was trained with (--vqgan)")
    codes = sample_image_codes(model, prompter.left_prompt(text), n, settings, prompter=prompter, seed=seed,
                               batch_size=batch_size)
    ranking: list[RankedImage] = []
    if rerank:
        ranking = rerank_by_text(components, text, codes, style=style, batch_size=batch_size)
        codes = codes[[r.index for r in ranking]]
    with torch.inference_mode():
        pixels = torch.cat([components.vqgan.decode(codes[i:i + batch_size]) for i in range(0, n, batch_size)])
    return GeneratedImages(to_pil_images(pixels), codes, ranking)
