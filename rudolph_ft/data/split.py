"""Deterministic train/validation split by hashing: a row's side depends only on its own key and the seed.

Appending rows never moves an existing row to the other side, and no random state is involved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["split_fraction", "split_items"]

T = TypeVar("T")


def split_fraction(key: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) fixed by `(seed, key)`: the first 8 bytes of SHA-256 of `"{seed}:{key}"`."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_items(
    items: Sequence[T], key: Callable[[T], str], val_fraction: float, seed: int = 0
) -> tuple[list[T], list[T]]:
    """Split items into (train, validation) by hashing each item's key.

    Items with equal keys (e.g. photos of one dish, when the key is a dish id) always land on the same side.
    About `val_fraction` of the distinct keys go to validation; when that rounds to none although
    `val_fraction > 0` and there are at least two keys, the key with the smallest hash goes there, so a small
    dataset still gets a validation set. Order inside each side follows `items`.

    Args:
        items: anything, e.g. `Record`s.
        key: the item's split key (an image path, a dish id, ...).
        val_fraction: in [0, 1).
        seed: changes which keys go to validation.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return list(items), []
    fractions = {name: split_fraction(name, seed) for name in dict.fromkeys(key(item) for item in items)}
    val_keys = {name for name, value in fractions.items() if value < val_fraction}
    if not val_keys and len(fractions) >= 2:
        val_keys = {min(fractions, key=fractions.__getitem__)}
    train = [item for item in items if key(item) not in val_keys]
    val = [item for item in items if key(item) in val_keys]
    return train, val
