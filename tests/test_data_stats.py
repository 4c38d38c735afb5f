"""Dataset statistics: numbers, plots, and a word cloud whose font has Cyrillic glyphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib import ft2font
from PIL import Image

from rudolph_ft.data import check_data, food_config
from rudolph_ft.data.stats import describe_data, font_path, write_stats

N5K = Path(__file__).parent / "assets" / "data" / "nutrition5k"


def test_describe_counts_kept_rows():
    stats = describe_data(check_data(food_config(N5K), read_images=False))
    assert (stats["rows"], stats["kept"], stats["excluded"]) == (7, 6, 1)
    assert stats["per_label"] == {"chicken": 2, "beef": 2, "potatoes, mandarins, strawberries": 2}
    assert stats["numeric"]["kkal"] == {"min": 107.0, "mean": 122.333, "median": 123.0, "max": 137.0}
    assert stats["caption_chars"]["max"] < 100


def test_write_stats_makes_pngs_and_json(tmp_path):
    stats = write_stats(check_data(food_config(N5K), read_images=False), tmp_path / "stats")
    names = sorted(Path(path).name for path in stats["files"])
    assert names == ["caption_lengths.png", "label_counts.png", "numeric.png", "wordcloud.png"]
    for path in stats["files"]:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 300
    saved = json.loads((tmp_path / "stats" / "stats.json").read_text(encoding="utf-8"))
    assert saved["per_label"]["beef"] == 2 and saved["files"] == stats["files"]
    cloud = np.asarray(Image.open(tmp_path / "stats" / "wordcloud.png").convert("L"))
    assert (cloud < 200).mean() > 0.02  # words were drawn


def test_word_cloud_font_has_cyrillic():
    font = ft2font.FT2Font(font_path())
    assert "DejaVu" in font.family_name
    assert all(font.get_char_index(ord(letter)) for letter in "блюдоборщшаурмаЁё")
