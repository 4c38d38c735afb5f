"""Checking a dataset row by row: which rows are kept, which are excluded and why (`rudolph-ft data check`)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .captions import CaptionError
from .config import DataConfig
from .images import LOAD_ERROR_TEXT, ImageLoadError, LoadedImage, error_text, read_image
from .tables import DataError, TableRow, describe_columns, find_table, read_table

__all__ = ["Issue", "Exclusion", "Note", "Record", "LabelConflict", "DataReport", "check_data", "REASON_TEXT"]

# Every reason a row can be excluded for, in the order reports list them.
REASON_TEXT = {
    "bad_row": "malformed row",
    "outside_root": "outside the images root",
    **LOAD_ERROR_TEXT,
    "nan_value": "empty or NaN number",
    "non_numeric": "non-numeric value",
    "negative_value": "negative number",
    "empty_value": "empty value",
    "caption_too_short": "caption too short",
    "caption_too_long": "caption too long",
    "duplicate_image": "duplicate image",
}
_NAN_WORDS = {"", "nan", "na", "n/a", "none", "null", "-"}
_OUTSIDE_HINT = ("keep the images under the images root (or point --images-root at the folder holding them), "
                 "or opt in with --allow-outside-root / `data.allow_outside_root: true`")


@dataclass(frozen=True)
class Issue:
    """One reason to exclude a row."""

    code: str  # a key of REASON_TEXT
    message: str  # what exactly is wrong, naming the column or file


@dataclass
class Exclusion:
    """An excluded row and all its issues."""

    row: int
    line: int
    image: str  # the image path as written in the table
    issues: list[Issue]


@dataclass(frozen=True)
class Note:
    """A fact worth knowing that does not exclude a row (16-bit image, animated GIF, table read as cp1251, ...)."""

    message: str
    row: int | None = None  # None: about the whole table
    image: str = ""


@dataclass(frozen=True)
class Record:
    """A kept row: everything a dataset needs to produce its sample, without its pixels.

    Attributes:
        row: 1-based record number in the table (header not counted).
        line: the table line the record starts on.
        image: the image path as written in the table.
        image_path: the resolved image file.
        caption: the final caption (rules applied).
        meta: the row's other columns: numeric columns as floats, the rest as strings.
        sha256: the image file's content hash when the check read the images, else None.
    """

    row: int
    line: int
    image: str
    image_path: Path
    caption: str
    meta: dict[str, Any]
    sha256: str | None = None

    @property
    def key(self) -> str:
        """A stable name for the sample: image path plus content hash (path alone when not hashed)."""
        return f"{self.image}#{self.sha256[:16]}" if self.sha256 else self.image


@dataclass(frozen=True)
class LabelConflict:
    """A dropped duplicate whose label differs from the kept row's: one of the two labels is probably wrong.

    Attributes:
        row, image, label: the dropped row, its image path as written, its label.
        kept_row, kept_image, kept_label: the same for the row that is kept (the first one).
        field: what differs: the label column's name (the dish), or "caption".
    """

    row: int
    image: str
    label: str
    kept_row: int
    kept_image: str
    kept_label: str
    field: str


@dataclass
class DataReport:
    """The outcome of `check_data`: kept rows as `Record`s, excluded rows with reasons, and notes."""

    config: DataConfig
    table: Path
    images_root: Path
    total_rows: int
    kept: list[Record]
    excluded: list[Exclusion]
    notes: list[Note] = field(default_factory=list)
    images_read: bool = True  # False: images only checked to exist and be non-empty
    label_conflicts: list[LabelConflict] = field(default_factory=list)  # duplicates whose labels differ

    @property
    def ok(self) -> bool:
        """True when no row was excluded."""
        return not self.excluded

    def reason_counts(self) -> Counter[str]:
        """Excluded rows per reason code (a row with two reasons counts under both)."""
        return Counter(code for item in self.excluded for code in dict.fromkeys(i.code for i in item.issues))

    def summary(self, max_rows: int | None = None) -> str:
        """A human-readable report: counts, then each excluded row with its reasons, then notes."""
        lines = [
            f"data: {self.table} (images under {self.images_root})",
            f"rows: {self.total_rows}, kept: {len(self.kept)}, excluded: {len(self.excluded)}",
        ]
        if not self.images_read:
            lines.append("images were only checked to exist (not decoded, duplicates by path only)")
        if self.label_conflicts:
            lines.append(f"WARNING: {len(self.label_conflicts)} duplicate image(s) carry a different label than the "
                         "row kept; only the first row's label is used, check which one is right:")
            lines += [f"  row {c.row} {c.field} {c.label!r} ({c.image}) vs kept row {c.kept_row} {c.field} "
                      f"{c.kept_label!r} ({c.kept_image})" for c in self.label_conflicts[:max_rows]]
        if self.excluded:
            counts = ", ".join(f"{REASON_TEXT.get(c, c)}: {n}" for c, n in _ordered(self.reason_counts()))
            lines += [f"excluded by reason: {counts}", "excluded rows:"]
            for item in self.excluded[:max_rows]:
                for issue in item.issues:
                    lines.append(f"  row {item.row} (line {item.line}) {item.image or '-'}: "
                                 f"{REASON_TEXT.get(issue.code, issue.code)}: {issue.message}")
            if max_rows is not None and len(self.excluded) > max_rows:
                lines.append(f"  ... and {len(self.excluded) - max_rows} more excluded rows")
        if self.notes:
            lines.append("notes:")
            lines += [f"  {_note_place(note)}{note.message}" for note in self.notes[:max_rows]]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (`rudolph-ft data check --json`)."""
        return {
            "table": str(self.table),
            "images_root": str(self.images_root),
            "rows": self.total_rows,
            "kept": len(self.kept),
            "excluded": len(self.excluded),
            "images_read": self.images_read,
            "reasons": dict(_ordered(self.reason_counts())),
            "excluded_rows": [
                {"row": e.row, "line": e.line, "image": e.image,
                 "issues": [{"code": i.code, "message": i.message} for i in e.issues]}
                for e in self.excluded
            ],
            "notes": [{"row": n.row, "image": n.image, "message": n.message} for n in self.notes],
            "duplicate_label_conflicts": [dataclasses.asdict(conflict) for conflict in self.label_conflicts],
        }


def check_data(
    config: DataConfig, *, read_images: bool = True, progress: bool = False, workers: int | None = None
) -> DataReport:
    """Check every row of a dataset once: table values, caption rules, image files, duplicates.

    Args:
        config: the dataset (table, columns, caption rules).
        read_images: read, hash and decode every image (finds corrupt/truncated files and duplicates by content).
            False only checks that each file exists and is not empty (fast; duplicates by path).
        progress: show a tqdm progress bar (on stderr).
        workers: threads reading images (Pillow decodes without the GIL); default min(8, CPU count).

    Returns:
        A `DataReport`; `report.kept` are the rows a dataset may use.

    Raises:
        DataError: the table cannot be read or lacks a column the configuration needs.
    """
    table_path = find_table(config.path)
    table = read_table(table_path, columns=config.columns)
    missing = [name for name in config.needed_columns() if name not in table.columns]
    if missing:
        raise DataError(f"{table_path} has no column(s) {', '.join(missing)}; its columns: "
                        f"{describe_columns(table.columns)}."
                        " Fix the header or the dataset configuration (image column, caption template, ...)")
    root = config.resolved_images_root(table_path)
    notes = [Note(message) for message in table.notes]
    kept, excluded = [], []
    for row, record, issues, row_notes in _check_rows(table.rows, config, root, read_images, progress, workers):
        notes += row_notes
        if issues:
            excluded.append(Exclusion(row.row, row.line, row.values.get(config.image_column, ""), issues))
        else:
            kept.append(record)
    conflicts: list[LabelConflict] = []
    if config.drop_duplicates:
        kept = _drop_duplicates(kept, excluded, conflicts, by_content=read_images, label_column=config.label_column)
    excluded.sort(key=lambda item: item.row)
    return DataReport(config, table_path, root, len(table.rows), kept, excluded, notes, read_images, conflicts)


def _check_rows(
    rows: list[TableRow], config: DataConfig, root: Path, read_images: bool, progress: bool, workers: int | None
) -> Iterator[tuple[TableRow, Record | None, list[Issue], list[Note]]]:
    workers = workers or min(8, os.cpu_count() or 1)
    bar = tqdm(total=len(rows), desc="checking data", unit="row", disable=not progress, leave=False)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(lambda row: _check_row(row, config, root, read_images), rows):
            bar.update()
            yield result
    bar.close()


def _check_row(
    row: TableRow, config: DataConfig, root: Path, read_images: bool
) -> tuple[TableRow, Record | None, list[Issue], list[Note]]:
    issues: list[Issue] = []
    if row.problem:
        issues.append(Issue("bad_row", row.problem))
    meta: dict[str, Any] = {name: value for name, value in row.values.items() if name != config.image_column}
    for name in config.numeric_columns:
        meta[name], issue = _parse_number(row.values[name], name)
        if issue:
            issues.append(issue)
    for name in config.required_columns:
        if not row.values[name].strip():
            issues.append(Issue("empty_value", f"column {name!r} is empty"))
    caption = ""
    try:
        caption = config.caption.render(row.values)
        problem = config.caption.length_problem(caption)
        if problem:
            issues.append(Issue(problem[0], f"{problem[1]}: {caption!r}"))
    except (CaptionError, ValueError) as err:
        issues.append(Issue("bad_row", f"caption could not be made: {err}"))
    image = row.values[config.image_column].strip()
    image_path = root / image
    sha256, notes = None, []
    if not image:
        issues.append(Issue("missing_file", f"column {config.image_column!r} is empty"))
    elif not config.allow_outside_root and (outside := _outside_root(image, image_path, root)):
        issues.append(outside)  # refused before the file is touched: not opened, hashed or decoded
    else:
        loaded, issue = _check_image(image_path, config.image_size, read_images)
        if issue:
            issues.append(issue)
        elif loaded is not None:
            sha256 = loaded.sha256
            notes = [Note(message, row.row, image) for message in loaded.notes]
            if min(loaded.size) < config.image_size:
                width, height = loaded.size
                notes.append(Note(f"{width}x{height} px is smaller than {config.image_size} px: it will be upscaled",
                                  row.row, image))
    record = None if issues else Record(row.row, row.line, image, image_path, caption, meta, sha256)
    return row, record, issues, notes


def _outside_root(image: str, image_path: Path, root: Path) -> Issue | None:
    """An issue when the image path leaves the images root (`../`, an absolute path, a symlink out), else None.

    Only the path is resolved (lstat/readlink of its components); the file itself is never opened.
    """
    try:
        real_root, real_path = root.resolve(), image_path.resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        return Issue("unreadable_file", f"{image}: the path cannot be resolved ({error_text(err)}); fix its links")
    if real_path.is_relative_to(real_root):
        return None
    target = "" if str(real_path) == image else f" (it resolves to {real_path})"
    return Issue("outside_root", f"{image}{target} is outside the images root {real_root}; {_OUTSIDE_HINT}")


def _check_image(path: Path, image_size: int, read_images: bool) -> tuple[LoadedImage | None, Issue | None]:
    try:
        if read_images:
            return read_image(path, target_size=image_size), None
        if not path.is_file():
            raise ImageLoadError(path, "missing_file", "no such file; check the image path and the images root")
        if path.stat().st_size == 0:
            raise ImageLoadError(path, "zero_byte_file", "the file is empty (0 bytes); re-export or re-download it")
        return None, None
    except ImageLoadError as err:
        return None, Issue(err.reason, f"{err.path}: {err.detail}")
    except Exception as err:  # noqa: BLE001 - one strange file must not stop the check of all others
        return None, Issue("corrupt_image",
                           f"{path}: unexpected {type(err).__name__} while reading it: {error_text(err)}")


def _parse_number(text: str, column: str) -> tuple[float | None, Issue | None]:
    stripped = text.strip()
    if stripped.lower() in _NAN_WORDS:
        return None, Issue("nan_value", f"column {column!r} is {'empty' if not stripped else repr(stripped)}")
    try:
        value = float(stripped)
    except ValueError:
        hint = "; use a dot as the decimal separator" if re.fullmatch(r"[+-]?\d+,\d+", stripped) else ""
        return None, Issue("non_numeric", f"column {column!r} is {stripped!r}, not a number{hint}")
    if math.isnan(value):
        return None, Issue("nan_value", f"column {column!r} is NaN")
    if math.isinf(value):
        return None, Issue("non_numeric", f"column {column!r} is {stripped!r}, not a finite number")
    if value < 0:
        return None, Issue("negative_value", f"column {column!r} is {stripped}, a negative amount")
    return value, None


def _drop_duplicates(
    kept: list[Record], excluded: list[Exclusion], conflicts: list[LabelConflict], *, by_content: bool,
    label_column: str | None,
) -> list[Record]:
    """Keep the first row of each image (by content hash, or by resolved path when images were not read).

    Each dropped row is excluded with its label; one whose label differs from the kept row's is also a conflict.
    """
    first: dict[Any, Record] = {}
    unique = []
    for record in kept:
        identity = record.sha256 if by_content and record.sha256 else record.image_path.resolve()
        if identity not in first:
            first[identity] = record
            unique.append(record)
            continue
        original = first[identity]
        how = "the same image content" if by_content else "the same file"
        what, label, kept_label = _labels(record, original, label_column)
        if _normal(label) == _normal(kept_label):
            message = f"{how} as row {original.row} ({original.image}), same {what} {label!r}; only the first is kept"
        else:
            conflicts.append(LabelConflict(record.row, record.image, label, original.row, original.image, kept_label,
                                           what))
            message = (f"{how} as row {original.row} ({original.image}) but a different {what}: {label!r} here, "
                       f"{kept_label!r} there; only the first is kept: check which label is right")
        excluded.append(Exclusion(record.row, record.line, record.image, [Issue("duplicate_image", message)]))
    return unique


def _labels(record: Record, original: Record, label_column: str | None) -> tuple[str, str, str]:
    """(what is compared, the record's label, the original's): the label column (dish), or the caption when the
    labels agree but the captions do not (same dish, other nutrients) or there is no label column."""
    if label_column:
        label, kept_label = str(record.meta.get(label_column, "")), str(original.meta.get(label_column, ""))
        if _normal(label) != _normal(kept_label) or record.caption == original.caption:
            return label_column, label, kept_label
    return "caption", record.caption, original.caption


def _normal(label: str) -> str:
    return " ".join(label.casefold().split())


def _ordered(counts: Counter[str]) -> list[tuple[str, int]]:
    order = list(REASON_TEXT)
    return sorted(counts.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))


def _note_place(note: Note) -> str:
    return f"row {note.row} {note.image}: " if note.row is not None else ""
