"""Datasets, caption rules, data checks, the image-code cache and the demo data maker (RECIPE §1; `rudolph-ft data`).

DATA is a CSV/TSV/JSONL label table, or a folder holding `data.csv` / `labels.csv` / `data.jsonl` (first found);
image paths in it are relative to the table's folder unless an images root is given.
"""

from .cache import CACHE_ENV, CacheStats, CodeCache, default_cache_dir, gumbel_seed, vqgan_identity
from .captions import ARTICLE_TEMPLATE, CaptionError, CaptionRules
from .checks import DataReport, Exclusion, Issue, LabelConflict, Note, Record, check_data
from .config import ARTICLE_COLUMNS, NUTRIENT_COLUMNS, DataConfig, config_for, food_config
from .datasets import CaptionedImageDataset, FoodDataset, collate_images
from .images import PREPROCESSING_ID, ImageLoadError, file_sha256, load_image, preprocess_image, read_image
from .split import split_items
from .tables import DataError, find_table, read_table

__all__ = [
    "ARTICLE_COLUMNS",
    "CACHE_ENV",
    "ARTICLE_TEMPLATE",
    "NUTRIENT_COLUMNS",
    "PREPROCESSING_ID",
    "CacheStats",
    "CaptionError",
    "CaptionRules",
    "CaptionedImageDataset",
    "CodeCache",
    "DataConfig",
    "DataError",
    "DataReport",
    "Exclusion",
    "FoodDataset",
    "ImageLoadError",
    "Issue",
    "LabelConflict",
    "Note",
    "Record",
    "check_data",
    "collate_images",
    "config_for",
    "default_cache_dir",
    "file_sha256",
    "find_table",
    "food_config",
    "gumbel_seed",
    "load_image",
    "preprocess_image",
    "read_image",
    "read_table",
    "split_items",
    "vqgan_identity",
]
