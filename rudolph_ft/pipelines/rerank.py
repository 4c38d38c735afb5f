"""Self-reranking: order captions by how well they explain an image, or images by how well they fit a text.

Scores are the reference's perplexities (`scoring`), lower is better:

- `rerank_by_image(captions, image)`: rc4 (`self_reranking_by_image`) runs `[caption | image | caption]` and
  returns the caption's left-text perplexity and the image's perplexity given the caption; the article sorts by the
  image perplexity. The right-text copy is never scored and cannot change the scored positions, so it is not run.
  rc10 runs `[<LT_T2I> caption | image]` and ranks by `0.05 * text + 0.95 * image` (normalised, see below).
- `rerank_by_text(text, images)`: rc4 (`self_reranking_by_text`) runs `[pads | image | text]` and returns the
  text's and the image's perplexities; rc10 uses task tokens and ranks by `0.95 * text + 0.05 * image`.

The rc10 combination normalises each perplexity as `(p - min) / (quantile(p, 0.5) - min)`; with `text_weight` 0 or 1
the score is the raw perplexity of the one segment that counts (same order, readable values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..components import Components
from ..model import RuDolph
from .inputs import ImageInput, image_codes
from .prompts import Prompter
from .scoring import image_segment, in_eval_mode, left_text_and_image, prefix_cache, right_text_perplexity

__all__ = ["RankedCaption", "RankedImage", "combine_perplexities", "rerank_by_image", "rerank_by_text",
           "score_captions", "score_codes"]

# default text weight per (task, style): the article sorts by the image perplexity; rc10's defaults otherwise
DEFAULT_TEXT_WEIGHT = {("image", "rc4"): 0.0, ("image", "rc10"): 0.05, ("text", "rc4"): 1.0, ("text", "rc10"): 0.95}


@dataclass
class RankedCaption:
    """A caption scored against an image (lower score = better)."""

    text: str
    score: float
    text_perplexity: float
    image_perplexity: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RankedImage:
    """An image scored against a text (lower score = better); `index` is its position in the input."""

    index: int
    score: float
    text_perplexity: float
    image_perplexity: float

    def to_dict(self) -> dict:
        return asdict(self)


def combine_perplexities(text: torch.Tensor, image: torch.Tensor, text_weight: float, q: float = 0.5) -> torch.Tensor:
    """rc10's ranking score `w * norm(text) + (1 - w) * norm(image)`, `norm(p) = (p - min) / (quantile(p, q) - min)`.

    `text_weight` 0 or 1 returns the raw image or text perplexity. A spread of 0 (one candidate, or all equal,
    where the reference divides by zero) counts as 1.
    """
    if text_weight == 0:
        return image.clone()
    if text_weight == 1:
        return text.clone()

    def norm(p: torch.Tensor) -> torch.Tensor:
        spread = p.quantile(q) - p.min()
        return (p - p.min()) / (spread if spread > 0 else 1.0)

    return norm(text) * text_weight + norm(image) * (1 - text_weight)


@torch.inference_mode()
def score_captions(model: RuDolph, prompter: Prompter, captions: Sequence[str], codes: torch.Tensor,
                   batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(text perplexities, image perplexities) of captions as left text before one image's codes (image_seq_length,)."""
    text_ppl, image_ppl = [], []
    for start in range(0, len(captions), batch_size):
        chunk = captions[start:start + batch_size]
        left = torch.stack([prompter.left_caption(c) for c in chunk]).to(codes.device)
        text, image = left_text_and_image(model, left, codes.expand(len(chunk), -1), prompter)
        text_ppl.append(text)
        image_ppl.append(image)
    return torch.cat(text_ppl).cpu(), torch.cat(image_ppl).cpu()


@torch.inference_mode()
def score_codes(model: RuDolph, prompter: Prompter, text: str, codes: torch.Tensor,
                batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(text perplexities, image perplexities) of one text as right text after each image's codes (N, n_codes)."""
    left = prompter.empty_left().to(codes.device)[None]
    right = prompter.right_text(text).to(codes.device)[None]
    shared, _ = prefix_cache(model, left)  # the left text is the same for every image: run it once
    text_ppl, image_ppl = [], []
    for start in range(0, codes.shape[0], batch_size):
        chunk = codes[start:start + batch_size]
        cache = shared.fork(torch.zeros(chunk.shape[0], dtype=torch.long))  # read, not copied, by every row
        image_ppl.append(image_segment(model, cache, chunk, prompter))
        text_ppl.append(right_text_perplexity(model, cache, right.expand(chunk.shape[0], -1), prompter))
    return torch.cat(text_ppl).cpu(), torch.cat(image_ppl).cpu()


@in_eval_mode
def rerank_by_image(components: Components, captions: Sequence[str], image: ImageInput | torch.Tensor, *,
                    style: str = "rc4", text_weight: float | None = None, batch_size: int = 16) -> list[RankedCaption]:
    """Order captions by how well they explain an image, best first.

    Args:
        components: model, tokenizer and VQGAN.
        captions: the candidates (e.g. from `generate_captions`).
        image: a path, PIL image or (3, H, W) tensor, or its (image_seq_length,) integer image codes.
        style: "rc4" (the article's `self_reranking_by_image`) or "rc10".
        text_weight: weight of the caption's own perplexity in the score (default: 0 for rc4, as the article
            sorts by the image perplexity; 0.05 for rc10).
        batch_size: captions per forward pass.
    """
    if not captions:
        return []
    prompter = Prompter(components.model.config, components.tokenizer, style)
    if isinstance(image, torch.Tensor) and image.ndim == 1 and not image.is_floating_point():
        codes = image.to(components.device)
    else:
        codes = image_codes(components, [image])[0]
    text_ppl, image_ppl = score_captions(components.model, prompter, list(captions), codes, batch_size)
    weight = DEFAULT_TEXT_WEIGHT["image", style] if text_weight is None else text_weight
    scores = combine_perplexities(text_ppl, image_ppl, weight)
    ranked = [RankedCaption(c, float(s), float(t), float(i))
              for c, s, t, i in zip(captions, scores, text_ppl, image_ppl, strict=True)]
    return sorted(ranked, key=lambda r: r.score)


@in_eval_mode
def rerank_by_text(components: Components, text: str, images: Sequence[ImageInput] | torch.Tensor, *,
                   style: str = "rc4", text_weight: float | None = None, batch_size: int = 16) -> list[RankedImage]:
    """Order images by how well they fit a text, best first.

    Args:
        components: model, tokenizer and VQGAN.
        text: the description.
        images: paths, PIL images or tensors, or a (N, image_seq_length) integer tensor of image codes.
        style: "rc4" (`self_reranking_by_text`) or "rc10" (`ruDolphApi.self_reranking_by_text`).
        text_weight: weight of the text's perplexity (default 1 for rc4, 0.95 for rc10).
        batch_size: images per forward pass.
    """
    model = components.model
    prompter = Prompter(model.config, components.tokenizer, style)
    if isinstance(images, torch.Tensor) and images.ndim == 2 and not images.is_floating_point():
        codes = images.to(components.device)
    else:
        codes = image_codes(components, list(images), batch_size)
    if codes.shape[0] == 0:
        return []
    text_ppl, image_ppl = score_codes(model, prompter, text, codes, batch_size)
    weight = DEFAULT_TEXT_WEIGHT["text", style] if text_weight is None else text_weight
    scores = combine_perplexities(text_ppl, image_ppl, weight)
    ranked = [RankedImage(i, float(s), float(t), float(p))
              for i, (s, t, p) in enumerate(zip(scores, text_ppl, image_ppl, strict=True))]
    return sorted(ranked, key=lambda r: r.score)
