"""Describing a checked dataset: counts per dish, caption lengths, nutrient distributions, a word cloud (PNG + JSON).

Plots use matplotlib's object API with the Agg canvas (no pyplot, no global backend switch) and DejaVu Sans, which
has Cyrillic; the word cloud uses the same font file.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from .checks import DataReport

__all__ = ["describe_data", "font_path", "write_stats"]


def describe_data(report: DataReport) -> dict[str, Any]:
    """Numbers about the kept rows of a checked dataset (JSON-ready).

    Returns:
        `rows`, `kept`, `excluded`, `per_label` (rows per `label_column` value, most common first),
        `caption_chars` (min/mean/max) and `numeric` (min/mean/median/max per numeric column).
    """
    kept = report.kept
    label = report.config.label_column
    lengths = [len(record.caption) for record in kept]
    numbers = {name: [float(r.meta[name]) for r in kept] for name in report.config.numeric_columns}
    return {
        "table": str(report.table),
        "rows": report.total_rows,
        "kept": len(kept),
        "excluded": len(report.excluded),
        "label_column": label,
        "per_label": dict(Counter(str(r.meta.get(label, "")) for r in kept).most_common()) if label else {},
        "caption_chars": _summary(lengths),
        "numeric": {name: _summary(values) for name, values in numbers.items()},
    }


def write_stats(report: DataReport, out: str | Path) -> dict[str, Any]:
    """Write `stats.json` and PNG plots of a checked dataset's kept rows into `out`.

    Files: `label_counts.png` (rows per dish), `caption_lengths.png` (histogram with the caption rule's bounds),
    `numeric.png` (one histogram per numeric column), `wordcloud.png` (caption words without the template's
    fixed words and numbers), `stats.json` (`describe_data` plus the file list).

    Returns:
        The `describe_data` dict with `files`: the written paths.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats = describe_data(report)
    files = []
    if stats["per_label"]:
        files.append(_plot_counts(stats["per_label"], stats["label_column"], out / "label_counts.png"))
    if report.kept:
        files.append(_plot_lengths(report, out / "caption_lengths.png"))
        if report.config.numeric_columns:
            files.append(_plot_numeric(report, out / "numeric.png"))
        cloud = _word_cloud(report, out / "wordcloud.png")
        if cloud:
            files.append(cloud)
    stats["files"] = [str(path) for path in files]
    (out / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return stats


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "mean": round(statistics.fmean(values), 3), "median": statistics.median(values),
            "max": max(values)}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    figure.set_facecolor("white")
    return figure


def font_path() -> str:
    """The DejaVu Sans font file matplotlib ships (it has Cyrillic); used for the word cloud."""
    from matplotlib import font_manager

    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=True)


def _plot_counts(per_label: dict[str, int], label: str, path: Path) -> Path:
    names = list(per_label)[:40][::-1]  # most common at the top
    figure = _figure(7, 0.5 + 0.28 * len(names))
    axes = figure.add_subplot()
    bars = axes.barh(names, [per_label[name] for name in names], color="#4C72B0")
    axes.bar_label(bars, padding=2, fontsize=8)
    axes.set_xlabel("rows")
    title = f"rows per {label}" + (f" (top 40 of {len(per_label)})" if len(per_label) > 40 else "")
    axes.set_title(title)
    figure.savefig(path)
    return path


def _plot_lengths(report: DataReport, path: Path) -> Path:
    lengths = [len(record.caption) for record in report.kept]
    figure = _figure(7, 3.5)
    axes = figure.add_subplot()
    axes.hist(lengths, bins=min(40, max(5, len(set(lengths)))), color="#55A868")
    rules = report.config.caption
    for bound in (rules.min_chars, rules.max_chars):
        if bound is not None:
            axes.axvline(bound, color="#C44E52", linestyle="--", linewidth=1)
    axes.set_xlabel("caption length, characters (dashed: the kept range's bounds, exclusive)")
    axes.set_ylabel("rows")
    axes.set_title(f"caption lengths ({len(lengths)} kept rows)")
    figure.savefig(path)
    return path


def _plot_numeric(report: DataReport, path: Path) -> Path:
    names = report.config.numeric_columns
    columns = min(2, len(names))
    rows = (len(names) + columns - 1) // columns
    figure = _figure(4 * columns, 2.8 * rows)
    for k, name in enumerate(names, start=1):
        axes = figure.add_subplot(rows, columns, k)
        axes.hist([float(r.meta[name]) for r in report.kept], bins=30, color="#8172B2")
        axes.set_title(name)
        axes.set_ylabel("rows")
    figure.suptitle("distributions of the numeric columns")
    figure.savefig(path)
    return path


def _word_cloud(report: DataReport, path: Path) -> Path | None:
    from wordcloud import WordCloud

    skip = report.config.caption.literal_words()
    words = Counter(
        word for record in report.kept for word in re.findall(r"[^\W\d_]+", record.caption.lower()) if word not in skip
    )
    if not words:
        return None
    cloud = WordCloud(font_path=font_path(), width=900, height=450, background_color="white", colormap="viridis",
                      prefer_horizontal=0.9, random_state=0, collocations=False)
    cloud.generate_from_frequencies(dict(words))
    cloud.to_file(str(path))
    return path
