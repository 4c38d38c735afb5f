"""Multitask rows for the demo set (`rudolph-ft data demo --tasks`): questions about each photo and about the
nutrition table, in the multitask table format (`tasks_data`).

- VQA, two rows per photo: «какое это блюдо?» (answer: the dish's name) and «сколько в нём ккал?» (the label's kcal).
- Text QA from the dishes' nutrition table (`Dish.per_unit` of the unit's grams), no image: «сколько белков в 100 г
  блюда «борщ»?» -> «7.5 г», for protein, fat, carbohydrates and kcal, per 100 g and per portions of 50-500 g.

A row's left text is its task's instruction and the question (`Task.left_text`), the left text the pipelines'
prompts have (`pipelines.tasks.answer`, `answer_text`), so a model trained on these rows is asked as it was taught.

Rows about a photo go to `tasks.jsonl` or, when `data.path`'s split (the image path as written, `val_fraction`,
`split_seed`: `split.split_fraction`) holds the photo out, to `tasks_val.jsonl`, so a run never trains on
questions about its validation photos; text QA portions are split by their question the same way.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from ..tasks import get_task
from .demo import STYLES, Dish
from .split import split_fraction

__all__ = ["TASKS_FILE", "TASKS_VAL_FILE", "VQA_QUESTIONS", "NUTRIENT_QUESTIONS", "demo_task_rows",
           "nutrition_rows", "score_vqa_answers", "write_demo_tasks"]

TASKS_FILE, TASKS_VAL_FILE = "tasks.jsonl", "tasks_val.jsonl"
VQA_QUESTIONS = {"dish": "какое это блюдо?", "kcal": "сколько в нём ккал?"}
# question word, index in Dish.per_unit, unit of the answer
NUTRIENT_QUESTIONS = (("белков", 0, "г"), ("жиров", 1, "г"), ("углеводов", 2, "г"), ("ккал", 3, "ккал"))
PORTIONS_G = tuple(range(50, 501, 50))
_GRAMS = re.compile(r"(\d+) g\b")


def unit_grams(dish: Dish) -> float:
    """The grams of one unit of a dish («portion of 300 g» -> 300; «two rolls, 300 g» -> 300)."""
    found = _GRAMS.findall(dish.unit)
    if not found:
        raise ValueError(f"dish {dish.slug}: no grams in its unit {dish.unit!r}")
    return float(found[-1])


def nutrition_rows(dishes: tuple[Dish, ...]) -> list[dict]:
    """Text QA rows: every nutrient of every dish per 100 g and per each of `PORTIONS_G` grams."""
    rows = []
    for dish in dishes:
        grams = unit_grams(dish)
        for word, index, unit in NUTRIENT_QUESTIONS:
            for portion in PORTIONS_G:
                value = dish.per_unit[index] * portion / grams
                answer = f"{round(value)} {unit}" if unit == "ккал" else f"{value:.1f} {unit}"
                question = f"сколько {word} в {portion} г блюда «{dish.name}»?"
                rows.append({"task": "textqa", "left_text": get_task("textqa").left_text(question),
                             "image": "", "right_text": answer})
    return rows


def demo_task_rows(table: str | Path, *, style: str = "closeup") -> list[dict]:
    """VQA rows about every photo of a demo `data.csv` (the article's columns), then the text QA rows."""
    table = Path(table)
    with open(table, encoding="utf-8", newline="") as handle:
        photos = list(csv.DictReader(handle))
    vqa, rows = get_task("vqa"), []
    for photo in photos:
        rows.append({"task": "vqa", "left_text": vqa.left_text(VQA_QUESTIONS["dish"]), "image": photo["path"],
                     "right_text": photo["name"]})
        rows.append({"task": "vqa", "left_text": vqa.left_text(VQA_QUESTIONS["kcal"]), "image": photo["path"],
                     "right_text": photo["kkal"]})
    return rows + nutrition_rows(STYLES[style])


def write_demo_tasks(table: str | Path, *, style: str = "closeup", val_fraction: float = 0.1,
                     split_seed: int = 0) -> tuple[Path, Path]:
    """Write `tasks.jsonl` and `tasks_val.jsonl` beside a demo `data.csv` (see the module's docstring).

    Returns:
        The two files written.
    """
    table = Path(table)
    train, val = [], []
    for row in demo_task_rows(table, style=style):
        key = row["image"] or row["left_text"]  # (a text row by its question: its portions land on both sides)
        (val if split_fraction(key, split_seed) < val_fraction else train).append(row)
    written = []
    for name, rows in ((TASKS_FILE, train), (TASKS_VAL_FILE, val)):
        path = table.parent / name
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        written.append(path)
    return written[0], written[1]


def score_vqa_answers(rows: list[dict], answers: list[str]) -> dict:
    """The demo's held-out VQA bar (issue 16): dish answers' accuracy, kcal answers' mean absolute error, and the
    MAE of always answering the mean true kcal (the baseline an answer must beat: MAE <= half of it).

    Args:
        rows: VQA rows of `demo_task_rows` (others are skipped); `answers`: the model's answer to each row.

    Returns:
        {"dish_accuracy", "dish_questions", "kcal_mae", "kcal_mean_baseline_mae", "kcal_questions",
        "kcal_unreadable"}; an answer without a number counts as 0 kcal (and in kcal_unreadable).
    """
    dish = [(row, answer) for row, answer in zip(rows, answers, strict=True)
            if row["task"] == "vqa" and row["left_text"].endswith(VQA_QUESTIONS["dish"])]
    kcal = [(float(row["right_text"]), answer) for row, answer in zip(rows, answers, strict=True)
            if row["task"] == "vqa" and row["left_text"].endswith(VQA_QUESTIONS["kcal"])]
    correct = sum(answer.strip().lower() == row["right_text"].strip().lower() for row, answer in dish)
    numbers = [re.search(r"\d+(?:[.,]\d+)?", answer) for _, answer in kcal]
    predicted = [float(found.group().replace(",", ".")) if found else 0.0 for found in numbers]
    truth = [value for value, _ in kcal]
    mean = sum(truth) / len(truth) if truth else 0.0
    return {"dish_accuracy": correct / len(dish) if dish else float("nan"), "dish_questions": len(dish),
            "kcal_mae": sum(abs(p - t) for p, t in zip(predicted, truth, strict=True)) / len(truth) if truth
            else float("nan"),
            "kcal_mean_baseline_mae": sum(abs(mean - t) for t in truth) / len(truth) if truth else float("nan"),
            "kcal_questions": len(truth), "kcal_unreadable": sum(found is None for found in numbers)}
