"""Perplexities of text and image segments, as the reference pipelines compute them, with shared prefixes cached.

The reference scores a segment with `ce_to_ppl(F.cross_entropy(logits, labels, reduction='none'))`: the mean over
scored tokens of `exp(token cross-entropy)` (a mean of per-token perplexities, not `exp` of the mean
cross-entropy), where a token is scored when its cross-entropy is non-zero (text pads are label 0, ignored).
Each position predicts the next token of its own segment: left text 1..l-1, image codes 1..n-1, right text 1..r-1.

The reference passes rc4's `get_attention_mask`, which blanks the rows after a right text's first pad: those rows
only predict pads, which are never scored, and later rows cannot influence earlier ones, so the scores equal a
forward without that mask; here right texts are simply cut after their longest eos.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..model import KVCache, RuDolph
from .prompts import Prompter

__all__ = ["in_eval_mode", "token_perplexity", "prefix_cache", "image_segment", "right_text_perplexity",
           "left_text_and_image"]


def in_eval_mode(function):
    """Decorator for pipeline functions that take `components` first: run the model in eval mode (no dropout) and
    give it back in the mode it was in (a training loop may call a pipeline on the model it trains)."""

    @functools.wraps(function)
    def wrapped(components, *args, **kwargs):
        training = components.model.training
        components.model.eval()
        try:
            return function(components, *args, **kwargs)
        finally:
            components.model.train(training)

    return wrapped


def token_perplexity(logits: torch.Tensor, labels: torch.Tensor, ignore_pad: bool) -> torch.Tensor:
    """The reference's `ce_to_ppl`: mean over scored tokens of exp(cross-entropy).

    Args:
        logits: (B, T, V) predictions of `labels`; labels: (B, T).
        ignore_pad: labels 0 are not scored (text segments).

    Returns:
        (B,) float64 perplexities (nan for a row without scored tokens). The exponentials are taken in float64, so a
        token with cross-entropy above 88 gives a large number where the reference's float32 gives inf.
    """
    ce = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none",
                         ignore_index=0 if ignore_pad else -100)  # (B, T)
    scored = ce != 0  # exactly the reference's test
    return torch.where(scored, ce.double().exp(), 0.0).sum(1) / scored.sum(1)


def prefix_cache(model: RuDolph, ids: torch.Tensor, head: str = "text") -> tuple[KVCache, torch.Tensor]:
    """Run a prefix once, e.g. to share it among many continuations (`cache.repeat_interleave`).

    Args:
        ids: (P, T) prefix ids starting at position 0.
        head: output head of the returned logits ("text" or "image").

    Returns:
        (its cache, (P, V) `head` logits of the last prefix position).
    """
    cache = KVCache(model.config, ids.shape[0], device=ids.device, dtype=next(model.parameters()).dtype)
    return cache, model(ids, cache=cache, head=head, last_only=True).logits[:, -1]


def image_segment(model: RuDolph, cache: KVCache, codes: torch.Tensor, prompter: Prompter) -> torch.Tensor:
    """Feed image codes after a cached left text; returns their perplexity (predicting codes 1..n-1).

    Args:
        cache: holds exactly the left text of every row.
        codes: (B, image_seq_length).
    """
    logits = model(codes, cache=cache, head="image").logits  # (B, n, V_image)
    return token_perplexity(logits[:, :-1, :prompter.image_columns], codes[:, 1:], ignore_pad=False)


def right_text_perplexity(model: RuDolph, cache: KVCache, right: torch.Tensor, prompter: Prompter) -> torch.Tensor:
    """Perplexity of right texts after a cached `[left text | image]`.

    Only the positions up to the longest text's last token run: the rest would only predict pads.

    Args:
        cache: holds exactly `[left text | image]` of every row.
        right: (B, r_text_seq_length) encoded right texts (bos ... eos, pads).
    """
    used = int((right != 0).sum(1).max())  # tokens of the longest text
    run = max(used - 1, 1)
    logits = model(right[:, :run], cache=cache, head="text").logits  # (B, run, V_text)
    labels = right[:, 1:run + 1]
    return token_perplexity(logits[:, :labels.shape[1], :prompter.text_columns], labels, ignore_pad=True)


def left_text_and_image(model: RuDolph, left: torch.Tensor, codes: torch.Tensor,
                        prompter: Prompter) -> tuple[torch.Tensor, torch.Tensor]:
    """Perplexities of left texts and of the image codes that follow them (rerank by image).

    Args:
        left: (B, l_text_seq_length) encoded left texts; codes: (B, image_seq_length).

    Returns:
        ((B,) left-text perplexities, (B,) image perplexities).
    """
    cfg = model.config
    cache = KVCache(cfg, left.shape[0], device=left.device, dtype=next(model.parameters()).dtype,
                    max_length=cfg.l_text_seq_length + cfg.image_seq_length)
    text_logits = model(left, cache=cache, head="text").logits  # (B, l, V_text)
    text_ppl = token_perplexity(text_logits[:, :-1, :prompter.text_columns], left[:, 1:], ignore_pad=True)
    return text_ppl, image_segment(model, cache, codes, prompter)
