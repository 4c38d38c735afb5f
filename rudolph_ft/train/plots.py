"""Pictures of an evaluation report: the dish confusion matrix and predicted-vs-true kcal.

Drawn from the report `evaluate_predictions` returns (its `confusion`, `examples` and `baseline_answer`), with
matplotlib's object API on the Agg canvas (no pyplot, no global backend switch) and DejaVu Sans, which has Cyrillic.
"""

from __future__ import annotations

import math
from pathlib import Path

from .evaluate import NO_DISH
from .metrics import TASK_LOSS_PREFIX, VAL_TASK_LOSS_PREFIX

__all__ = ["write_eval_plots", "plot_confusion", "plot_kcal_scatter", "plot_task_losses", "EVAL_PLOTS",
           "TASK_LOSS_PREFIX", "VAL_TASK_LOSS_PREFIX"]

#: file names written beside an evaluation report
EVAL_PLOTS = ("confusion.png", "kcal_scatter.png")
MAX_CONFUSION_LABELS = 30  # more dishes than this: the most common ones, the rest folded into "(other)"
OTHER = "(other)"
MAX_COLOURED_DISHES = 20  # tab20's colours


def write_eval_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """Write `confusion.png` and `kcal_scatter.png` for an evaluation report into `out_dir`.

    Returns:
        The paths written (a picture with nothing to show, e.g. no kcal labels, is skipped).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_confusion(report, out_dir / EVAL_PLOTS[0]), plot_kcal_scatter(report, out_dir / EVAL_PLOTS[1])]
    return [path for path in written if path is not None]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    figure.set_facecolor("white")
    return figure


def _fold_rare(labels: list[str], counts: list[list[int]]) -> tuple[list[str], list[list[int]]]:
    """Keep the most common true dishes (and NO_DISH) and fold every other label into OTHER, rows and columns
    alike, so the diagonal stays the diagonal."""
    if len(labels) <= MAX_CONFUSION_LABELS:
        return labels, counts
    dishes = [i for i, name in enumerate(labels) if name != NO_DISH]
    by_count = sorted(dishes, key=lambda i: (-sum(counts[i]), labels[i]))
    kept = sorted(by_count[: MAX_CONFUSION_LABELS - 2], key=lambda i: labels[i])
    slot = {old: new for new, old in enumerate(kept)}
    other = len(kept)
    final = [labels[i] for i in kept] + [OTHER]
    if NO_DISH in labels:
        slot[labels.index(NO_DISH)] = len(final)
        final.append(NO_DISH)
    folded = [[0] * len(final) for _ in final]
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            folded[slot.get(i, other)][slot.get(j, other)] += count
    return final, folded


def plot_confusion(report: dict, path: str | Path) -> Path | None:
    """True dish (rows) x predicted dish (columns): the count in each cell over its row's share as colour.

    NO_DISH is a column only (no photo's true dish is "none").
    """
    confusion = report.get("confusion") or {}
    all_labels = list(confusion.get("labels", []))
    labels, counts = _fold_rare(all_labels, confusion.get("counts", []))
    rows = [name for name in labels if name != NO_DISH]  # NO_DISH, when present, is the last label
    counts = counts[: len(rows)]
    total = sum(map(sum, counts))
    if not total:
        return None
    row_sums = [sum(row) for row in counts]
    shares = [[c / s if s else 0.0 for c in row] for row, s in zip(counts, row_sums, strict=True)]
    height = 3.2 + 0.42 * len(rows)
    figure = _figure(height + 1.3 + 0.42 * (len(labels) - len(rows)), height)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fontsize = 7 if len(labels) > 15 else 9
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            if count:  # empty cells stay blank: the diagonal and the mistakes stand out
                axes.text(j, i, str(count), ha="center", va="center", fontsize=fontsize,
                          color="white" if shares[i][j] > 0.55 else "black")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=fontsize)
    axes.set_yticks(range(len(rows)), [f"{name} ({n})" for name, n in zip(rows, row_sums, strict=True)],
                    fontsize=fontsize)
    axes.set_xlabel("predicted dish")
    axes.set_ylabel("true dish (photos)")
    accuracy = sum(counts[i][i] for i in range(len(rows)) if rows[i] != OTHER) / total
    title = f"dishes on {total} photos: accuracy {accuracy:.2f}\nnumbers: photos; colour: share of the row's photos"
    if OTHER in labels:
        title += f"\nthe {len(rows) - 1} most common of {len(set(all_labels) - {NO_DISH})} dishes, the rest as {OTHER}"
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the row")
    figure.savefig(path)
    return Path(path)


def _kcal_points(report: dict) -> tuple[list[tuple[float, float, str, bool]], float | None]:
    """(true kcal, predicted kcal, true dish, parsed) per labelled example; a missing prediction counts as the
    baseline's mean, as in the report's MAE."""
    mean = (report.get("baseline_answer") or {}).get("kcal")
    points = []
    for example in report.get("examples", []):
        true, predicted = example["target"].get("kcal"), example["predicted"].get("kcal")
        if true is None or (predicted is None and mean is None):
            continue
        points.append((true, predicted if predicted is not None else mean, example["target"].get("dish") or "?",
                       predicted is not None))
    return points, mean


def plot_kcal_scatter(report: dict, path: str | Path) -> Path | None:
    """Predicted vs true kcal per photo, with the y = x line; MAE of the model and of the always-the-mean baseline.

    Up to MAX_COLOURED_DISHES dishes get a colour each (legend beside the plot); more are drawn in one colour.
    """
    points, mean = _kcal_points(report)
    if not points:
        return None
    dishes = sorted({dish for *_, dish, _ in points})
    coloured = len(dishes) <= MAX_COLOURED_DISHES
    figure = _figure(7.8 if coloured else 6.0, 5.6)
    axes = figure.add_subplot()
    low = min(min(t, p) for t, p, *_ in points)
    high = max(max(t, p) for t, p, *_ in points)
    pad = 0.05 * (high - low or 1.0)
    axes.plot([low - pad, high + pad], [low - pad, high + pad], color="#888888", linestyle="--", linewidth=1,
              label="y = x (exact)")
    if mean is not None:
        axes.axhline(mean, color="#C44E52", linestyle=":", linewidth=1, label=f"always the mean ({mean:.0f})")
    groups = [(d, [(t, p) for t, p, dish, parsed in points if dish == d and parsed]) for d in dishes] if coloured \
        else [("photo", [(t, p) for t, p, _, parsed in points if parsed])]
    for (label, group), colour in zip(groups, _palette(len(groups)), strict=True):
        if group:
            axes.scatter(*zip(*group, strict=True), s=28, alpha=0.8, color=colour, label=label)
    unparsed = [(t, p) for t, p, _, parsed in points if not parsed]
    if unparsed:
        axes.scatter(*zip(*unparsed, strict=True), s=36, marker="x", color="black",
                     label="no kcal in its captions\n(counted as the mean)")
    axes.set_xlim(low - pad, high + pad)
    axes.set_ylim(low - pad, high + pad)
    axes.set_aspect("equal")
    axes.set_xlabel("true kcal")
    axes.set_ylabel("predicted kcal")
    model_mae, baseline_mae = (report.get(k, {}).get("kcal_mae") for k in ("model", "baseline"))
    title = f"kcal on {len(points)} photos"
    if model_mae is not None:
        title += f"\nMAE {model_mae:.1f}" + (f", always the mean: {baseline_mae:.1f}" if baseline_mae is not None
                                             else "")
    axes.set_title(title, fontsize=10)
    if coloured:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)
    else:
        axes.legend(fontsize=8, loc="upper left")
    figure.savefig(path)
    return Path(path)


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(n)]


def plot_task_losses(rows: list[dict], path: str | Path) -> Path | None:
    """`task_losses.png`: each task's weighted training loss per step (a multitask run's `task_loss/<task>`
    metrics; a task absent from a step's batches has no point there) and, dashed in the same colour with a dot per
    evaluation, its loss on tasks.val_path (`val_task_loss/<task>`). None when no row has any."""
    prefixes = (TASK_LOSS_PREFIX, VAL_TASK_LOSS_PREFIX)
    tasks = sorted({key.removeprefix(prefix) for row in rows for key in row for prefix in prefixes
                    if key.startswith(prefix)})
    if not tasks:
        return None
    from matplotlib.ticker import FuncFormatter, NullFormatter

    figure = _figure(7, 4)
    ax = figure.add_subplot()
    validated = False
    for colour, task in zip(_palette(len(tasks)), tasks, strict=True):
        for prefix, style in ((TASK_LOSS_PREFIX, {"linewidth": 1}),
                              (VAL_TASK_LOSS_PREFIX, {"linewidth": 1.2, "linestyle": "--", "marker": "o",
                                                      "markersize": 3.5})):
            points = [(row["step"], row[prefix + task]) for row in rows if prefix + task in row]
            if not points:
                continue
            validated |= prefix == VAL_TASK_LOSS_PREFIX
            label = task if prefix == TASK_LOSS_PREFIX else f"{task} (validation)"
            ax.plot([s for s, _ in points], [v for _, v in points], label=label, color=colour, **style)
    ax.set_xlabel("step")
    ax.set_ylabel("weighted loss of the task's rows")
    ax.set_title("loss per task: training (solid), validation rows (dashed)" if validated else
                 "training loss per task", fontsize=10)
    values = [v for row in rows for key, v in row.items() if key.startswith(prefixes) and math.isfinite(v)]
    if values and min(values) > 0 and max(values) >= 10 * min(values):  # a log scale only where it spans a decade:
        ax.set_yscale("log")  # inside one, its few labels (6x10^0, 7x10^0) tell nothing
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.savefig(path)
    return Path(path)
