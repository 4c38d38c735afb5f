"""Seeded VQGAN weights that the reference env and our tests both regenerate, instead of storing them.

Imported by file path (no package, no rudolph_ft import) from `scripts/make_vqgan_fixtures.py` under the reference
python and from `tests/test_vqgan.py` under the project's. The numbers come from a counter-based hash (splitmix64 in
numpy), not from a library RNG, so they cannot drift with torch or numpy versions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(counters: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of uint64 counters (wrap-around arithmetic)."""
    z = counters * np.uint64(0x9E3779B97F4A7C15) & _MASK
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9) & _MASK
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB) & _MASK
    return z ^ (z >> np.uint64(31))


def _uniform(seed: int, start: int, count: int) -> np.ndarray:
    """`count` floats uniform in [-sqrt(3), sqrt(3)) (unit variance) at stream positions start, start+1, ..."""
    counters = np.arange(start, start + count, dtype=np.uint64) + np.uint64(seed) * np.uint64(1 << 40)
    bits = _splitmix64(counters) >> np.uint64(11)  # 53 random bits
    return (bits.astype(np.float64) / float(1 << 53) * 2.0 - 1.0) * math.sqrt(3.0)


def seeded_state_dict(shapes: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 tensors for every key of `shapes`, filled in sorted-key order from one seeded stream.

    Scales keep activations of a random VQGAN in a useful range: weights with a fan-in (convs, the codebook) get
    variance 1/fan_in, 1-d `weight`s (GroupNorm scales) 1 +- 0.1, everything else (biases) +- 0.1.
    """
    state, position = {}, 0
    for key in sorted(shapes):
        shape = tuple(int(n) for n in shapes[key])
        count = math.prod(shape)
        values = _uniform(seed, position, count).reshape(shape)
        position += count
        if key.endswith("weight") and len(shape) >= 2:
            values = values / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight"):
            values = 1.0 + 0.1 * values
        else:
            values = 0.1 * values
        state[key] = torch.from_numpy(values.astype(np.float32))
    return state
