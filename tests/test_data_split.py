"""The hash-based train/validation split: deterministic, seed-dependent, stable when rows are appended."""

from __future__ import annotations

import pytest

from rudolph_ft.data.split import split_fraction, split_items


def test_fraction_is_uniform_and_seeded():
    values = [split_fraction(f"img{i}.jpg", seed=0) for i in range(2000)]
    assert all(0 <= v < 1 for v in values)
    assert 0.45 < sum(values) / len(values) < 0.55
    assert split_fraction("a.jpg", 0) == split_fraction("a.jpg", 0) != split_fraction("a.jpg", 1)


def test_split_size_and_seed():
    items = [f"img{i}.jpg" for i in range(1000)]
    train, val = split_items(items, str, 0.2, seed=0)
    assert 150 < len(val) < 250 and len(train) + len(val) == 1000
    assert split_items(items, str, 0.2, seed=1)[1] != val


def test_appending_rows_never_moves_old_rows():
    items = [f"img{i}.jpg" for i in range(300)]
    _, val = split_items(items, str, 0.1, seed=7)
    _, val_more = split_items(items + [f"new{i}.jpg" for i in range(200)], str, 0.1, seed=7)
    assert set(val) == {item for item in val_more if item.startswith("img")}


def test_groups_stay_together_and_small_sets_get_a_validation_item():
    items = [("dishA", 1), ("dishA", 2), ("dishB", 3), ("dishC", 4)]
    train, val = split_items(items, lambda item: item[0], 0.01, seed=0)
    assert len({dish for dish, _ in val}) == 1 and not {d for d, _ in train} & {d for d, _ in val}
    assert split_items(items, lambda item: item[0], 0.0) == (items, [])
    with pytest.raises(ValueError, match="val_fraction"):
        split_items(items, str, 1.0)
