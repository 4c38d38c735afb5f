"""Training examples as tensors: image codes (encoded once) and tokenized captions, batched in a seeded order.

After preparation a step touches no pixels: `[left text zeros | image codes | right text]` is assembled from
in-memory tensors, in an order that depends only on (seed, epoch), so a resumed run sees the same batches.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

__all__ = ["Examples", "batch_order", "assemble_batch"]


@dataclass
class Examples:
    """Prepared examples of one split.

    Attributes:
        codes: (N, views, image_seq_length) image codes; view 0 = argmax, others Gumbel-sampled.
        captions: the N caption strings (right text).
        r_text: (N, r_text_seq_length) pre-tokenized captions ([bos] ids [eos] pad).
        meta: per-example metadata (dish name, nutrients, path, key).
    """

    codes: torch.Tensor
    captions: list[str]
    r_text: torch.Tensor
    meta: list[dict]

    def __len__(self) -> int:
        return len(self.captions)


def batch_order(num_examples: int, batch_size: int, seed: int, epoch: int, *,
                drop_last: bool = False) -> list[list[int]]:
    """The epoch's batches of example indices: a permutation drawn from (seed, epoch) alone."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_examples, generator=generator).tolist()
    batches = [order[i:i + batch_size] for i in range(0, num_examples, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def assemble_batch(examples: Examples, indices: list[int], *, l_text_seq_length: int, seed: int, step: int,
                   tokenizer=None, bpe_dropout: float = 0.0, text_rng: random.Random | None = None) -> torch.Tensor:
    """(B, S) input ids of the given examples: empty left text, one image-code view each, the caption.

    The view of each example is drawn from (seed, step); BPE dropout (when > 0) re-tokenizes the captions with
    `text_rng`, whose state a checkpoint saves.
    """
    index = torch.tensor(indices, dtype=torch.long)
    views = examples.codes.shape[1]
    if views > 1:
        generator = torch.Generator().manual_seed(seed * 7_919 + step)
        chosen = torch.randint(0, views, (len(indices),), generator=generator)
        codes = examples.codes[index, chosen]
    else:
        codes = examples.codes[index, 0]
    if bpe_dropout > 0 and tokenizer is not None:
        r_text = tokenizer.encode_batch([examples.captions[i] for i in indices], examples.r_text.shape[1],
                                        bpe_dropout=bpe_dropout, rng=text_rng)
    else:
        r_text = examples.r_text[index]
    left = torch.zeros(len(indices), l_text_seq_length, dtype=torch.long)
    return torch.cat([left, codes.long(), r_text.long()], dim=1)
