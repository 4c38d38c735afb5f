"""Multitask tables: rows of (task, left_text, image, right_text), read and checked before any training.

A multitask table is a CSV or JSONL file (or a folder holding one, see `tables.TABLE_NAMES`) with the columns
`task`, `left_text`, `right_text` and, optionally, `image`: a path relative to `images_root` (default: the table's
folder). `task` names one of `rudolph_ft.tasks.TASKS`; image tasks (captioning, VQA, text recognition, generation)
need an image, text tasks (text QA, math QA) take none (they train on image codes 0, as the FBC2 baseline does);
every task but generation needs a right text (the answer). The food CSV of the article is not such a table: it stays
the captioning data of `data.path`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .tables import DataError, describe_columns, find_table, read_table

__all__ = ["TASK_COLUMNS", "TaskRow", "TaskTable", "is_task_table", "read_task_table"]

TASK_COLUMNS = ("task", "left_text", "image", "right_text")
_REQUIRED = ("task", "left_text", "right_text")


@dataclass(frozen=True)
class TaskRow:
    """One checked row: `image` is an absolute path, or None for a text task."""

    row: int  # 1-based record number, header not counted
    task: str
    left_text: str
    image: Path | None
    right_text: str


@dataclass
class TaskTable:
    """A checked multitask table: its rows, and the problems of the rows that could not be used."""

    path: Path
    rows: list[TaskRow]
    problems: list[str]

    def counts(self) -> dict[str, int]:
        """Rows per task, in the order of `TASKS`."""
        from ..tasks import TASKS

        counts = {name: sum(row.task == name for row in self.rows) for name in TASKS}
        return {name: count for name, count in counts.items() if count}

    def images(self) -> list[Path]:
        """The distinct image files the rows ask about, sorted (the order their codes are stored in)."""
        return sorted({row.image for row in self.rows if row.image is not None})

    def summary(self) -> str:
        per_task = ", ".join(f"{name} {count}" for name, count in self.counts().items()) or "none"
        lines = [f"{self.path}: multitask table, {len(self.rows)} usable row(s) ({per_task}), "
                 f"{len(self.problems)} problem(s)"]
        return "\n".join(lines + [f"  {problem}" for problem in self.problems])


def is_task_table(data: str | Path) -> bool:
    """Whether DATA's table has a `task` column (a multitask table rather than a food CSV)."""
    return "task" in read_table(find_table(data)).columns


def read_task_table(data: str | Path, images_root: str | Path | None = None, *, strict: bool = True,
                    allow_outside_root: bool = False) -> TaskTable:
    """Read and check a multitask table.

    Args:
        data: the table file, or a folder holding one.
        images_root: the folder image paths are relative to (default: the table's folder).
        strict: raise on any problem (training); False returns them in `TaskTable.problems` (`data check`).
        allow_outside_root: accept image paths that leave `images_root` (../, absolute, symlinks out), as the food
            table's `data.allow_outside_root`.

    Raises:
        DataError: the table cannot be read, lacks a column, or (strict) a row has a problem; the message names
            the file, the row and the field of each problem.
    """
    from ..tasks import TASKS

    path = find_table(data)
    table = read_table(path)
    missing = [name for name in _REQUIRED if name not in table.columns]
    if missing:
        raise DataError(f"{path} has no column(s) {', '.join(missing)}; its columns: {describe_columns(table.columns)}."
                        f" A multitask table has the columns {', '.join(TASK_COLUMNS)} (image optional)")
    root = Path(images_root) if images_root is not None else path.parent
    rows, problems = [], []
    for record in table.rows:
        where = f"{path}: row {record.row} (line {record.line})"
        if record.problem:
            problems.append(f"{where}: {record.problem}")
            continue
        values = {name: record.values.get(name, "").strip() for name in TASK_COLUMNS}
        problem = _row_problem(values, root, TASKS, allow_outside_root)
        if problem:
            problems.append(f"{where}, field {problem}")
            continue
        image = (root / values["image"]).absolute() if values["image"] else None
        rows.append(TaskRow(record.row, values["task"], values["left_text"], image, values["right_text"]))
    if problems and strict:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise DataError("; ".join(problems[:10]) + more + f". Check the table with `rudolph-ft data check {path}`")
    if not rows and strict:
        raise DataError(f"{path}: no rows; a multitask table needs at least one")
    return TaskTable(path, rows, problems)


def _row_problem(values: dict[str, str], root: Path, tasks: dict, allow_outside_root: bool) -> str | None:
    """What is wrong with one row, as "'field': why", or None."""
    name = values["task"]
    if name not in tasks:
        return f"'task': unknown task {name!r}; use one of {', '.join(tasks)}"
    task = tasks[name]
    if task.has_image and not values["image"]:
        return f"'image': task {name} needs an image (a path relative to {root})"
    if not task.has_image and values["image"]:
        return f"'image': task {name} is a text task and takes no image; leave the cell empty"
    if values["image"] and not (root / values["image"]).is_file():
        return f"'image': no file {root / values['image']}"
    if values["image"] and not allow_outside_root and not (root / values["image"]).resolve().is_relative_to(
            root.resolve()):
        return (f"'image': {values['image']} is outside the images root {root}; keep the images under it, or opt in "
                "with data.allow_outside_root: true")
    if task.right_token is not None and not values["right_text"]:
        return f"'right_text': task {name} needs an answer"
    if task.right_token is None and values["right_text"]:
        return f"'right_text': task {name} has no right text; leave the cell empty"
    return None
