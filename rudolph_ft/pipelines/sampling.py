"""Token sampling for decoding: the reference's top-k / top-p filtering and a KV-cached decoding loop.

Each sampled token is drawn by inverse-CDF from one uniform number per (sequence, step), all drawn up front from a
local `torch.Generator`: the same seed gives the same tokens whatever the batch size, and early stopping never
shifts the random stream of the other sequences. With `top_k=1` sampling is greedy (the argmax).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["SamplingSettings", "filter_logits", "sample", "draw_uniforms", "decode_loop", "model_step"]


@dataclass(frozen=True)
class SamplingSettings:
    """How to turn logits into a token.

    Attributes:
        top_k: keep the k most likely tokens (0: all; 1: greedy).
        top_p: then keep the smallest most-likely set whose probability exceeds top_p (1.0: all).
        temperature: logits are divided by it first (> 0).
    """

    top_k: int = 0
    top_p: float = 1.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 keeps every token), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """`transformers.top_k_top_p_filtering` (4.38, what both references call): removed tokens become -inf.

    Top-k keeps every token at least as likely as the k-th (ties included); top-p then sorts ascending and removes
    the tokens whose cumulative probability is <= 1 - top_p, always keeping the most likely one.

    Args:
        logits: (R, V) scores.
    """
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        remove[..., -1:] = False
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return logits


def sample(logits: torch.Tensor, uniforms: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Draw one token per row by inverse CDF of the filtered distribution.

    Args:
        logits: (R, V) scores.
        uniforms: (R,) numbers in [0, 1), one per row.

    Returns:
        (R,) int64 token ids.
    """
    if settings.top_k == 1:  # greedy: skip the softmax (ties go to the lowest id, like the filtered draw would)
        return logits.argmax(dim=-1)
    filtered = filter_logits(logits.float() / settings.temperature, settings.top_k, settings.top_p)
    cdf = filtered.softmax(dim=-1).cumsum(dim=-1)  # (R, V)
    target = (uniforms.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(1)  # (R, 1), below the total mass
    # right=True: the first token whose cdf exceeds the target, so zero-probability tokens are never chosen
    index = torch.searchsorted(cdf, target, right=True).squeeze(1)
    return index.clamp_(max=logits.shape[-1] - 1)


def draw_uniforms(rows: int, steps: int, seed: int | None) -> torch.Tensor:
    """(rows, steps) uniforms from a local generator (`seed` None: a random seed); the global RNG is untouched."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return torch.rand(rows, steps, generator=generator)


def decode_loop(
    step: Callable[[torch.Tensor], torch.Tensor],
    first_logits: torch.Tensor,
    uniforms: torch.Tensor,
    settings: SamplingSettings,
    *,
    columns: int,
    end_from: int | None = None,
    eos_id: int | None = None,
    stop_at_eos: bool = True,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Sample `uniforms.shape[1]` tokens per row, feeding each back through `step`.

    Args:
        step: (R,) ids just sampled -> (R, V) logits of the next position (e.g. a KV-cached forward).
        first_logits: (R, V) logits of the first position to sample.
        uniforms: (R, steps) from `draw_uniforms`.
        columns: only logits[:, :columns] can be sampled.
        end_from: sampled ids >= end_from are replaced by `eos_id` (both references do this for non-text ids).
        eos_id: the end-of-text id (None: never stop).
        stop_at_eos: stop once every row has produced eos; later tokens of a finished row are pad (0).
        progress: called with the number of tokens sampled so far per row, after each step (e.g. a progress bar).

    Returns:
        (R, steps) int64 ids.
    """
    rows, steps = uniforms.shape
    tokens = torch.zeros(rows, steps, dtype=torch.long, device=first_logits.device)
    finished = torch.zeros(rows, dtype=torch.bool, device=first_logits.device)
    logits = first_logits
    for t in range(steps):
        ids = sample(logits[:, :columns], uniforms[:, t], settings)
        if end_from is not None:
            ids = ids.masked_fill(ids >= end_from, eos_id)
        if stop_at_eos and eos_id is not None:
            tokens[:, t] = ids.masked_fill(finished, 0)
            finished |= ids == eos_id
            if bool(finished.all()):
                break
        else:
            tokens[:, t] = ids
        if progress is not None:
            progress(t + 1)
        if t + 1 < steps:
            logits = step(ids)
    return tokens


def model_step(model, head: str, *, cache=None,
               prompt: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The `step` of `decode_loop` for a RuDOLPH model: new ids (R,) -> (R, V) `head` logits of the next position.

    With `cache` (holding the prompt) only the new token runs; with `prompt` ((R, T) ids) instead, the whole sequence
    re-runs at every step, as the reference does (slow; to check the cache against).
    """
    if cache is not None:
        return lambda ids: model(ids[:, None], cache=cache, head=head, last_only=True).logits[:, -1]
    state = {"ids": prompt}

    def rerun(ids: torch.Tensor) -> torch.Tensor:
        state["ids"] = torch.cat([state["ids"], ids[:, None]], dim=1)
        return model(state["ids"], head=head, last_only=True).logits[:, -1]

    return rerun
