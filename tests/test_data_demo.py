"""The synthetic demo dataset: deterministic, distinct dishes, visible portions, labels that follow the portion."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rudolph_ft.data import check_data, food_config
from rudolph_ft.data.demo import DISHES, demo_sample, make_demo

DEMO = Path(__file__).parents[1] / "data" / "demo"


def _rows(table: Path) -> list[dict[str, str]]:
    with open(table, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    first = make_demo(tmp_path / "a", n=12, seed=3, size=48)
    second = make_demo(tmp_path / "b", n=12, seed=3, size=48)
    other = make_demo(tmp_path / "c", n=12, seed=4, size=48)
    assert first.read_bytes() == second.read_bytes() != other.read_bytes()
    for row in _rows(first):
        assert (first.parent / row["path"]).read_bytes() == (second.parent / row["path"]).read_bytes()
    assert list(first.parent.joinpath("images").iterdir()) and len(_rows(first)) == 12


def test_rerun_with_fewer_images_removes_stale_ones(tmp_path):
    make_demo(tmp_path, n=5, seed=0, size=32)
    make_demo(tmp_path, n=3, seed=0, size=32)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["0000_borscht.jpg", "0001_shawarma.jpg",
                                                                       "0002_salad.jpg"]


def test_labels_follow_the_portion_within_each_dish():
    samples = [demo_sample(i, seed=0, size=32) for i in range(80)]  # drawing at 32 px keeps this fast
    assert len({d.name for d in DISHES}) >= 8
    for dish in DISHES:
        ours = [s for s in samples if s.dish is dish]
        amounts = np.array([s.amount for s in ours])
        kcal = np.array([float(s.nutrients["kkal"]) for s in ours])
        assert np.corrcoef(amounts, kcal)[0, 1] > 0.99, dish.name
        assert kcal.max() > 1.2 * kcal.min(), dish.name  # the dish alone does not tell the kcal
        for s in ours:
            assert s.nutrients["belok"] == f"{dish.per_unit[0] * s.amount:.1f}"
            assert "." not in s.nutrients["kkal"]


@pytest.mark.parametrize("dish_index", range(len(DISHES)))
def test_bigger_portion_covers_more_of_the_plate(dish_index):
    dish = DISHES[dish_index]
    low, high = dish.amounts

    def food_pixels(amount: float) -> int:
        plate = np.asarray(demo_sample(dish_index, 0, 64, amount=0).image, dtype=np.int16)
        food = np.asarray(demo_sample(dish_index, 0, 64, amount=amount).image, dtype=np.int16)
        return int((np.abs(food - plate).sum(axis=2) > 60).sum())

    small, large = food_pixels(low), food_pixels(high)
    assert large > 1.25 * small > 0, (dish.name, small, large)


def test_committed_demo_set_is_complete_small_and_clean():
    table = DEMO / "data.csv"
    rows = _rows(table)
    assert len(rows) == 300 and list(rows[0]) == ["index", "belok", "fats", "uglevod", "kkal", "name", "path"]
    assert len({row["name"] for row in rows}) == len(DISHES)
    total = sum(path.stat().st_size for path in DEMO.rglob("*") if path.is_file())
    assert total <= 10 * 2**20
    report = check_data(food_config(DEMO))
    assert report.ok and len(report.kept) == 300 and not report.notes
    assert "--n 300 --seed 0 --size 128" in (DEMO / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("index", [0, 7, 299])
def test_committed_images_match_the_generator(index):
    row = _rows(DEMO / "data.csv")[index]
    sample = demo_sample(index, seed=0, size=128)
    assert row["kkal"] == sample.nutrients["kkal"] and row["name"] == sample.dish.name
    stored = np.asarray(Image.open(DEMO / row["path"]).convert("RGB"), dtype=np.float32)
    drawn = np.asarray(sample.image, dtype=np.float32)
    assert np.abs(stored - drawn).mean() < 4  # JPEG loss only
