"""Deterministic weights for parity tests, shared by our tests and the reference-env fixture script.

Imports only torch, so `scripts/make_model_fixtures.py` can load it by path inside the reference env.
Each tensor of a state dict is filled from one seeded generator, in sorted key order: the reference's
`ruDolphModel` and our `RuDolph` (same names and shapes) end up with identical weights.
"""

import math

import torch

MASK_SUFFIX = "_mask"


def fill_state_dict(state_dict: dict, seed: int) -> dict:
    """New tensors for every non-mask entry: O(1) activations so every layer matters to the output."""
    generator = torch.Generator().manual_seed(seed)
    filled = {}
    for key in sorted(state_dict):
        tensor = state_dict[key]
        if key.endswith(MASK_SUFFIX):
            continue
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
        if "layernorm" in key or key.startswith("to_logits.0"):
            value = 1.0 + 0.1 * noise if key.endswith("weight") else 0.1 * noise
        elif key.endswith("bias"):
            value = 0.05 * noise
        elif "embeddings" in key:
            value = noise
        else:  # (out, in) projection: keep the output scale of its input
            value = noise / math.sqrt(tensor.shape[1])
        filled[key] = value.to(tensor.dtype)
    return filled


def make_inputs(l_len: int, per_dim: int, r_len: int, text_vocab: int, image_vocab: int, r_lengths, seed: int):
    """(B, S) ids: left texts partly empty (0 = special token), random image codes, right texts of the given
    lengths (bos 2 ... eos 3, then pad 0). Returns (input_ids, r_text_mask)."""
    generator = torch.Generator().manual_seed(seed)
    rows, masks = [], []
    for i, r_used in enumerate(r_lengths):
        left = torch.zeros(l_len, dtype=torch.long)
        n_left = (i * 3) % (l_len + 1)
        left[:n_left] = torch.randint(4, text_vocab, (n_left,), generator=generator)
        image = torch.randint(0, image_vocab, (per_dim * per_dim,), generator=generator)
        right = torch.zeros(r_len, dtype=torch.long)
        right[:r_used] = torch.randint(4, text_vocab, (r_used,), generator=generator)
        right[0], right[r_used - 1] = 2, 3
        rows.append(torch.cat([left, image, right]))
        masks.append((right != 0).long())
    return torch.stack(rows), torch.stack(masks)
