"""FoodDataset / CaptionedImageDataset items, the stable key, the split, and failing loudly on a changed file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from rudolph_ft.data import (
    CaptionedImageDataset,
    CaptionRules,
    DataConfig,
    FoodDataset,
    ImageLoadError,
    collate_images,
    file_sha256,
)

N5K = Path(__file__).parent / "assets" / "data" / "nutrition5k"


@pytest.fixture
def food(tmp_path) -> Path:
    """A writable copy of the Nutrition5k sample folder."""
    return Path(shutil.copytree(N5K, tmp_path / "n5k"))


def test_food_dataset_items(food):
    dataset = FoodDataset(food / "data.csv", image_size=64)
    assert len(dataset) == 6 and len(dataset.report.excluded) == 1
    item = dataset[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["caption"] == "блюдо: chicken; белков: 25.7; жиров: 3.0; углеводов: 0.0; ккал: 137;"
    assert item["meta"]["kkal"] == 137.0 and item["meta"]["name"] == "chicken"
    sha = file_sha256(food / "dish_1550704750/camera_A_frame_001.jpeg")
    assert item["image_sha256"] == sha and item["key"] == f"dish_1550704750/camera_A_frame_001.jpeg#{sha[:16]}"
    assert item["row"] == 1 and item["path"] == "dish_1550704750/camera_A_frame_001.jpeg"
    assert "6 items" in repr(dataset) and "1 rows excluded" in repr(dataset)


def test_describe_reads_no_pixels_and_matches_the_item(food):
    dataset = FoodDataset(food, image_size=32, read_images=False)
    described = dataset.describe(4)
    item = dataset[4]
    assert "image" not in described
    assert {key: item[key] for key in described} == described
    assert dataset.captions[4] == item["caption"]


def test_depth_map_row_gives_a_grey_image(food):
    dataset = FoodDataset(food, image_size=32)
    depth = dataset[5]
    assert depth["path"].endswith("depth_raw.png")
    assert torch.equal(depth["image"][0], depth["image"][1])


def test_changed_file_raises_instead_of_substituting(food):
    dataset = FoodDataset(food, image_size=32)
    (food / "dish_1550705370/camera_B_frame_002.jpeg").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="row 3 .*changed since"):
        dataset[2]


def test_dataloader_batches(food):
    dataset = FoodDataset(food, image_size=32)
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate_images)))
    assert batch["image"].shape == (4, 3, 32, 32) and len(batch["caption"]) == 4
    default = next(iter(DataLoader(dataset, batch_size=4)))  # torch's default collate works as well
    assert default["image"].shape == (4, 3, 32, 32) and default["meta"]["kkal"].shape == (4,)


def test_generic_dataset_from_jsonl_with_caption_column(food):
    lines = [{"file": "dish_1550704750/camera_A_frame_001.jpeg", "text": "Курица на тарелке"},
             {"file": "dish_1559845399/rgb.png", "text": "Картофель, мандарины и клубника"}]
    (food / "captions.jsonl").write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n",
                                         encoding="utf-8")
    config = DataConfig(path=str(food / "captions.jsonl"), image_column="file", caption=CaptionRules(column="text"),
                        image_size=48)
    dataset = CaptionedImageDataset(config)
    assert dataset.captions == ["курица на тарелке", "картофель, мандарины и клубника"]
    assert dataset[1]["image"].shape == (3, 48, 48) and dataset[1]["meta"] == {"text": lines[1]["text"]}


def test_split_is_deterministic_disjoint_and_grouped(food):
    dataset = FoodDataset(food, read_images=False)
    train, val = dataset.split(0.5, seed=1)
    assert len(train) + len(val) == len(dataset) and len(val) >= 1
    assert not {r.row for r in train.records} & {r.row for r in val.records}
    again = dataset.split(0.5, seed=1)
    assert [r.row for r in again[1].records] == [r.row for r in val.records]
    train_dishes, val_dishes = FoodDataset(food, read_images=False, val_fraction=0.3, split_by="name").split()
    assert val_dishes.records  # every dish lies wholly on one side
    assert {r.meta["name"] for r in train_dishes.records}.isdisjoint({r.meta["name"] for r in val_dishes.records})
    assert isinstance(val, FoodDataset) and val.report is dataset.report
