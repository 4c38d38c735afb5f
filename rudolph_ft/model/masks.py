"""RuDOLPH's sparse attention masks, built once per config with tensor ops (no Python loops over positions).

Every layer is causal; inside the image block a layer sees only part of the past, by layer index
(reference `SparseTransformer._get_layer_mask`): `(i - 1) % 4 == 0` column mask, the last layer a conv mask with
`last_kernel_size`, `(i - 3) % 4 == 0` a conv mask with `kernel_size`, every other layer the row mask.
"""

from __future__ import annotations

import torch

from ..config import RuDolphConfig

__all__ = ["MASK_KINDS", "layer_mask_kind", "build_masks"]

MASK_KINDS = ("row", "col", "conv", "last_conv")


def layer_mask_kind(layer_id: int, num_layers: int) -> int:
    """Index into `MASK_KINDS` of the mask used by layer `layer_id` (same order of tests as the reference)."""
    if (layer_id - 1) % 4 == 0:
        return 1
    if layer_id == num_layers - 1:
        return 3
    if (layer_id - 3) % 4 == 0:
        return 2
    return 0


def build_masks(config: RuDolphConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """The four layer masks, True where a query (row) may attend to a key (column).

    Returns:
        (4, S, S) bool tensor in `MASK_KINDS` order, S = `config.total_seq_length`.
    """
    l_len, dim, size = config.l_text_seq_length, config.image_tokens_per_dim, config.total_seq_length
    image_end = l_len + dim * dim
    pos = torch.arange(size, device=device)
    query, key = pos[:, None], pos[None, :]  # (S, 1), (1, S)
    causal = key <= query
    if not config.r_text_sees_l_text:
        causal = causal & ~((query >= image_end) & (key < l_len))
    both_image = (query >= l_len) & (query < image_end) & (key >= l_len) & (key < image_end)
    pixel_q, pixel_k = (query - l_len).clamp(min=0), (key - l_len).clamp(min=0)
    row_q, col_q, row_k, col_k = pixel_q // dim, pixel_q % dim, pixel_k // dim, pixel_k % dim
    distance = query - key
    image_rules = (
        distance <= dim,  # row: the previous `dim` image tokens (one image row) and itself
        distance % dim == 0,  # col: the same image column
        _conv_window(row_q, col_q, row_k, col_k, config.kernel_size),
        _conv_window(row_q, col_q, row_k, col_k, config.last_kernel_size),
    )
    return torch.stack([causal & (~both_image | rule) for rule in image_rules])


def _conv_window(row_q, col_q, row_k, col_k, kernel: int) -> torch.Tensor:
    shift = kernel // 2
    return ((row_q - row_k).abs() <= shift) & ((col_q - col_k).abs() <= shift)
