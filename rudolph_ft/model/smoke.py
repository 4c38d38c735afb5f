"""A quick end-to-end check of a model: one loss + backward step and cached decoding on random tokens."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from ..config import MODEL_PRESETS
from .loading import load_model
from .rudolph import KVCache


def smoke_test(model_name: str = "tiny", batch_size: int = 2, seed: int = 0) -> Iterator[str]:
    """Yields report lines; raises if anything is off (non-finite loss, cache/full mismatch)."""
    torch.manual_seed(seed)
    pretrained = not (model_name in MODEL_PRESETS and MODEL_PRESETS[model_name].hub is None)
    model = load_model(model_name, pretrained=pretrained)
    cfg = model.config
    yield f"model {cfg.name or model_name}: {model.num_parameters():,} parameters, sequence " \
          f"{cfg.l_text_seq_length} + {cfg.image_seq_length} + {cfg.r_text_seq_length} tokens"
    image = torch.randint(0, cfg.image_vocab_size, (batch_size, cfg.image_seq_length))
    text = torch.randint(4, cfg.vocab_size, (batch_size, cfg.r_text_seq_length))
    text[:, 0] = 2
    ids = torch.cat([torch.zeros(batch_size, cfg.l_text_seq_length, dtype=torch.long), image, text], dim=1)
    model.train()
    start = time.perf_counter()
    out = model(ids, loss_weights=(0.01, 1, 7))
    out.loss.backward()
    if not torch.isfinite(out.loss):
        raise RuntimeError(f"non-finite loss {out.loss.item()}")
    yield f"train step: loss {out.loss.item():.4f} (left {out.l_text_loss.item():.4f}, image " \
          f"{out.image_loss.item():.4f}, right {out.r_text_loss.item():.4f}) in {time.perf_counter() - start:.2f} s"
    model.eval()
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache(cfg, batch_size)
        prefix = cfg.l_text_seq_length + cfg.image_seq_length
        pieces = [model(ids[:, :prefix], cache=cache).logits]
        pieces += [model(ids[:, i:i + 1], cache=cache).logits for i in range(prefix, cfg.total_seq_length)]
    error = (torch.cat(pieces, dim=1) - full).abs().max().item()
    if error > 1e-4:
        raise RuntimeError(f"cached decoding differs from the full forward by {error:.2e}")
    yield f"cached decoding of {cfg.r_text_seq_length} tokens equals the full forward (max |diff| {error:.1e})"
    yield "ok"
