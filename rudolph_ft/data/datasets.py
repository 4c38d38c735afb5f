"""Captioned-image datasets for training: checked rows in, (image tensor, caption, metadata, stable key) items out.

Construction runs `check_data` once and keeps only the rows it accepts (`dataset.report` says what was excluded);
an image that fails later raises `ImageLoadError`, never a silent substitute. Tokenization happens in the trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .checks import DataReport, Record, check_data
from .config import DataConfig, food_config
from .images import ImageLoadError, file_sha256, preprocess_image, read_image
from .split import split_items

__all__ = ["CaptionedImageDataset", "FoodDataset", "collate_images"]


class CaptionedImageDataset(Dataset):
    """Images with captions from a CSV/JSONL table, as configured by a `DataConfig`.

    Each item is a dict:
        image: (3, S, S) float32 tensor in [0, 1] (S = `config.image_size`), from `load_image` + `preprocess_image`;
        caption: the caption string (template and rules applied, not tokenized);
        meta: the row's other columns (numeric columns as floats: nutrients; strings: dish name, ...);
        key: stable sample name `"{image path}#{sha256[:16]}"`; image_sha256: the image file's content hash;
        path: the image path as written in the table; row: its 1-based row number.
    `describe(i)` gives the same dict without `image`, reading no pixels (for a cache of image codes).

    Args:
        config: the dataset configuration.
        read_images: decode every image once while checking (finds broken files up front; see `check_data`).
        progress: show a progress bar while checking.
        report: an existing `check_data` report of this config, to skip the check.
    """

    def __init__(
        self, config: DataConfig, *, read_images: bool = True, progress: bool = False, report: DataReport | None = None
    ):
        self.config = config
        self.report = report if report is not None else check_data(config, read_images=read_images, progress=progress)
        self.records: list[Record] = list(self.report.kept)
        self._hashes: dict[int, str] = {}

    @classmethod
    def from_records(cls, config: DataConfig, records: list[Record], report: DataReport) -> CaptionedImageDataset:
        """A dataset over the given records (a subset of `report.kept`), without checking again."""
        dataset = cls.__new__(cls)
        CaptionedImageDataset.__init__(dataset, config, report=report)
        dataset.records = list(records)
        return dataset

    def __len__(self) -> int:
        return len(self.records)

    @property
    def captions(self) -> list[str]:
        """All captions, in item order."""
        return [record.caption for record in self.records]

    def record(self, index: int) -> Record:
        """The checked table row behind item `index`."""
        return self.records[index]

    def describe(self, index: int) -> dict[str, Any]:
        """Item `index` without its pixels (hashes the image file if the check did not)."""
        record = self.records[index]
        sha256 = record.sha256 or self._hashes.get(index)
        if sha256 is None:
            sha256 = self._hashes[index] = file_sha256(record.image_path)
        return self._item(record, sha256)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        try:
            loaded = read_image(record.image_path, target_size=self.config.image_size)
        except ImageLoadError as err:
            raise ImageLoadError(
                err.path, err.reason, f"{err.detail} (row {record.row} of {self.report.table}; it passed the check "
                "when the dataset was built, so the file changed since: run `rudolph-ft data check` again)",
            ) from None
        item = self._item(record, loaded.sha256)
        item["image"] = preprocess_image(loaded.image, self.config.image_size)
        return item

    def split(
        self, val_fraction: float | None = None, seed: int | None = None
    ) -> tuple[CaptionedImageDataset, CaptionedImageDataset]:
        """Deterministic (train, validation) datasets by hashing each row's split key (see `split_items`).

        The key is the `config.split_by` column when set (rows sharing it stay together), else the image path;
        so a row keeps its side when rows are appended to the table.

        Args:
            val_fraction: default `config.val_fraction`.
            seed: default `config.split_seed`.
        """
        fraction = self.config.val_fraction if val_fraction is None else val_fraction
        seed = self.config.split_seed if seed is None else seed
        split_by = self.config.split_by
        train, val = split_items(
            self.records, lambda r: str(r.meta.get(split_by, "")) if split_by else r.image, fraction, seed
        )
        return (self.from_records(self.config, train, self.report), self.from_records(self.config, val, self.report))

    @staticmethod
    def _item(record: Record, sha256: str) -> dict[str, Any]:
        return {
            "caption": record.caption,
            "meta": dict(record.meta),
            "key": f"{record.image}#{sha256[:16]}",
            "image_sha256": sha256,
            "path": record.image,
            "row": record.row,
        }

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} items from {self.report.table}, "
                f"{len(self.report.excluded)} rows excluded, image_size={self.config.image_size})")


class FoodDataset(CaptionedImageDataset):
    """The article's food dataset: CSV columns `index, belok, fats, uglevod, kkal, name, path` + an image folder.

    Captions are `блюдо: {name}; белков: {belok}; жиров: {fats}; углеводов: {uglevod}; ккал: {kkal};`, lower-cased,
    kept when 10 < length < 100; rows with a missing/broken image, bad nutrients or an empty name are excluded.
    `item["meta"]` holds `belok, fats, uglevod, kkal` as floats and `name`.

    Args:
        path: the CSV, or a folder with `data.csv`/`labels.csv`.
        images_root: folder the `path` column is relative to; default the CSV's folder.
        image_size: output side in pixels (128 for RuDOLPH-350M).
        read_images: decode every image once while checking.
        progress: show a progress bar while checking.
        **overrides: other `DataConfig` fields (`caption=CaptionRules(...)`, `val_fraction=0.1`, ...).
    """

    def __init__(
        self,
        path: str | Path,
        images_root: str | Path | None = None,
        *,
        image_size: int = 128,
        read_images: bool = True,
        progress: bool = False,
        **overrides: Any,
    ):
        config = food_config(path, images_root, image_size=image_size, **overrides)
        super().__init__(config, read_images=read_images, progress=progress)


def collate_images(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of items: `image` -> (B, 3, S, S) tensor, every other field -> a list (meta stays per item)."""
    batch: dict[str, Any] = {name: [item[name] for item in items] for name in items[0] if name != "image"}
    if "image" in items[0]:
        batch["image"] = torch.stack([item["image"] for item in items])
    return batch
