"""The synthetic demo dataset: deterministic, distinct dishes, visible portions, labels that follow the portion."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rudolph_ft.cli import app
from rudolph_ft.data import check_data, food_config
from rudolph_ft.data.demo import BOWL_DISHES, DISHES, demo_sample, make_demo

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


# ---- the second style, `bowls`: other dishes drawn another way (a held-out check of the training setup) ----------


def test_bowls_style_from_the_command_line_is_a_valid_deterministic_set(tmp_path):
    for name in ("a", "b"):
        done = CliRunner().invoke(app, ["data", "demo", "--out", str(tmp_path / name), "--n", "10", "--size", "32",
                                        "--style", "bowls"])
        assert done.exit_code == 0, done.output
    first, second = tmp_path / "a" / "data.csv", tmp_path / "b" / "data.csv"
    assert first.read_bytes() == second.read_bytes()
    rows = _rows(first)
    assert list(rows[0]) == ["index", "belok", "fats", "uglevod", "kkal", "name", "path"]
    assert [row["name"] for row in rows[:8]] == [dish.name for dish in BOWL_DISHES]
    assert not {row["name"] for row in rows} & {dish.name for dish in DISHES}  # other dishes than the default's
    for row in rows:
        assert (first.parent / row["path"]).read_bytes() == (second.parent / row["path"]).read_bytes()
    report = check_data(food_config(tmp_path / "a"))
    assert report.ok and len(report.kept) == 10 and not report.excluded  # (notes: 32 px photos get upscaled)
    assert "--style bowls" in (tmp_path / "a" / "README.md").read_text(encoding="utf-8")


def test_unknown_style_is_refused_naming_the_styles(tmp_path):
    done = CliRunner().invoke(app, ["data", "demo", "--out", str(tmp_path), "--n", "2", "--style", "nope"])
    assert done.exit_code == 2 and "closeup, bowls" in done.output
    with pytest.raises(ValueError, match="closeup, bowls"):
        demo_sample(0, style="nope")


def test_default_style_is_the_closeup_style(tmp_path):
    default = make_demo(tmp_path / "a", n=3, seed=0, size=32)
    closeup = make_demo(tmp_path / "b", n=3, seed=0, size=32, style="closeup")
    assert default.read_bytes() == closeup.read_bytes()


def test_bowls_labels_follow_a_wide_portion_range():
    samples = [demo_sample(i, seed=0, size=16, style="bowls") for i in range(64)]
    amounts = np.array([s.amount for s in samples])
    assert amounts.min() >= 0.5 and amounts.max() <= 1.6 and np.ptp(amounts) > 0.8
    for dish in BOWL_DISHES:
        ours = [s for s in samples if s.dish is dish]
        kcal = np.array([float(s.nutrients["kkal"]) for s in ours])
        assert np.corrcoef([s.amount for s in ours], kcal)[0, 1] > 0.99, dish.name
        protein, fat, carbs, per_unit_kcal = dish.per_unit
        assert abs(4 * protein + 9 * fat + 4 * carbs - per_unit_kcal) < 0.12 * per_unit_kcal, dish.name


@pytest.mark.parametrize("dish_index", range(len(BOWL_DISHES)))
def test_bowls_food_area_grows_with_the_portion(dish_index):
    def food_pixels(amount: float) -> int:
        empty = np.asarray(demo_sample(dish_index, 0, 64, amount=0, style="bowls").image, dtype=np.int16)
        food = np.asarray(demo_sample(dish_index, 0, 64, amount=amount, style="bowls").image, dtype=np.int16)
        return int((np.abs(food - empty).sum(axis=2) > 60).sum())

    small, large = food_pixels(0.5), food_pixels(1.6)
    assert large > 2 * small > 0, (BOWL_DISHES[dish_index].name, small, large)
