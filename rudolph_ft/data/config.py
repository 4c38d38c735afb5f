"""The configuration of a captioned-image dataset (table, columns, caption rules), and the article's schema."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tasks import FOOD_SCHEMA
from .captions import ARTICLE_TEMPLATE, CaptionRules

__all__ = ["ARTICLE_COLUMNS", "NUTRIENT_COLUMNS", "DataConfig", "food_config", "config_for"]

# The article's CSV schema (`rudolph_ft.tasks.FOOD_SCHEMA`): index, protein g, fat g, carbohydrates g, kcal, dish
# name, image path relative to the image root (`index, belok, fats, uglevod, kkal, name, path`).
ARTICLE_COLUMNS = FOOD_SCHEMA.columns
NUTRIENT_COLUMNS = FOOD_SCHEMA.nutrient_columns


@dataclass(frozen=True)
class DataConfig:
    """Where a captioned-image dataset lives and how its rows become (image, caption) pairs.

    Attributes:
        path: the label table (CSV/TSV/JSONL), or a folder holding `data.csv`/`labels.csv`/`data.jsonl`.
        images_root: folder the image paths are relative to; default: the table's folder.
        image_column: the column holding each row's image path.
        caption: how the caption is made and which lengths are kept (`CaptionRules`).
        columns: the table's expected column names; a CSV with other header names but as many columns is
            renamed by position (the article's CSV). None: use the header as is.
        numeric_columns: columns that must hold finite, non-negative numbers (nutrients); returned as floats.
        required_columns: columns that must not be empty (the dish name).
        label_column: the column that names a row's class (the dish), for per-class counts.
        drop_duplicates: exclude rows whose image bytes repeat an earlier kept row's.
        allow_outside_root: use image paths that leave the images root (`../`, absolute paths, symlinks out).
            False: such rows are excluded as "outside the images root" without the file being opened.
        image_size: side of the square image tensor (`image_tokens_per_dim * 8`: 128 for 350M).
        val_fraction: share of rows for validation in `split()`; 0 keeps everything for training.
        split_seed: seed of the hash-based split (same seed + same rows -> same split).
        split_by: column whose value keeps rows together in one split (e.g. a dish id); default the image path.
    """

    path: str
    images_root: str | None = None
    image_column: str = "path"
    caption: CaptionRules = field(default_factory=CaptionRules)
    columns: tuple[str, ...] | None = None
    numeric_columns: tuple[str, ...] = ()
    required_columns: tuple[str, ...] = ()
    label_column: str | None = None
    drop_duplicates: bool = True
    allow_outside_root: bool = False
    image_size: int = 128
    val_fraction: float = 0.0
    split_seed: int = 0
    split_by: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")

    def needed_columns(self) -> tuple[str, ...]:
        """Every column the configuration reads, each once."""
        names = [self.image_column, *self.caption.fields(), *self.numeric_columns, *self.required_columns]
        names += [name for name in (self.label_column, self.split_by) if name]
        return tuple(dict.fromkeys(names))

    def resolved_images_root(self, table_path: Path) -> Path:
        """The folder image paths are relative to."""
        return Path(self.images_root) if self.images_root else table_path.parent

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for YAML/JSON next to a checkpoint)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """Build from plain values (`caption` may be a dict of `CaptionRules` fields; lists become tuples).

        Raises:
            ValueError: an unknown field name, listing the known ones.
        """
        values = dict(values)
        for klass, known_values in ((cls, values), (CaptionRules, values.get("caption") or {})):
            known = {f.name for f in dataclasses.fields(klass)}
            unknown = sorted(set(known_values) - known)
            if unknown:
                raise ValueError(f"unknown {klass.__name__} field(s) {unknown}; known: {sorted(known)}")
        if isinstance(values.get("caption"), dict):
            values["caption"] = CaptionRules(**values["caption"])
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
        return cls(**values)


def food_config(path: str | Path, images_root: str | Path | None = None, **overrides: Any) -> DataConfig:
    """The article's dataset: columns `index, belok, fats, uglevod, kkal, name, path`, its caption template and rules.

    Args:
        path: the CSV (or a folder with `data.csv`/`labels.csv`).
        images_root: folder the `path` column is relative to; default the CSV's folder.
        **overrides: any other `DataConfig` field (e.g. `image_size=64`, `val_fraction=0.1`).
    """
    values: dict[str, Any] = dict(
        path=str(path),
        images_root=None if images_root is None else str(images_root),
        image_column=FOOD_SCHEMA.image_column,
        caption=CaptionRules(template=ARTICLE_TEMPLATE),
        columns=ARTICLE_COLUMNS,
        numeric_columns=NUTRIENT_COLUMNS,
        required_columns=(FOOD_SCHEMA.dish_column,),
        label_column=FOOD_SCHEMA.dish_column,
    )
    values.update(overrides)
    return DataConfig(**values)


def config_for(
    path: str | Path,
    images_root: str | Path | None = None,
    *,
    template: str | None = None,
    caption_column: str | None = None,
    image_column: str | None = None,
    numeric_columns: tuple[str, ...] = (),
    required_columns: tuple[str, ...] = (),
    label_column: str | None = None,
    **overrides: Any,
) -> DataConfig:
    """The configuration the `rudolph-ft data` commands use: the article's schema unless a column option is given.

    Args:
        path: the table or its folder.
        images_root: folder image paths are relative to.
        template: caption template over any columns (default: the article's template).
        caption_column: take captions verbatim from this column instead.
        image_column: the image path column (default "path").
        numeric_columns: columns that must hold non-negative numbers.
        required_columns: columns that must not be empty.
        label_column: the class column for per-class counts.
        **overrides: other `DataConfig` fields (e.g. `image_size`).

    Returns:
        `food_config(path, images_root)` when none of the column options is given, else a generic `DataConfig`.
    """
    options = (template, caption_column, image_column, numeric_columns, required_columns, label_column)
    if not any(options):
        return food_config(path, images_root, **overrides)
    return DataConfig(
        path=str(path),
        images_root=None if images_root is None else str(images_root),
        image_column=image_column or "path",
        caption=CaptionRules(template=template or ARTICLE_TEMPLATE, column=caption_column),
        numeric_columns=tuple(numeric_columns),
        required_columns=tuple(required_columns),
        label_column=label_column,
        **overrides,
    )
