"""Checking a dataset row by row: which rows are kept, which are excluded and why (`rudolph-ft data check`)."""

from __future__ import annotations

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
from .images import LOAD_ERROR_TEXT, ImageLoadError, LoadedImage, read_image
from .tables import DataError, TableRow, find_table, read_table

__all__ = ["Issue", "Exclusion", "Note", "Record", "DataReport", "check_data", "REASON_TEXT"]

# Every reason a row can be excluded for, in the order reports list them.
REASON_TEXT = {
    "bad_row": "malformed row",
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
        raise DataError(f"{table_path} has no column(s) {', '.join(missing)}; its columns: {', '.join(table.columns)}."
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
    if config.drop_duplicates:
        kept = _drop_duplicates(kept, excluded, by_content=read_images)
    excluded.sort(key=lambda item: item.row)
    return DataReport(config, table_path, root, len(table.rows), kept, excluded, notes, read_images)


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
        return None, Issue("corrupt_image", f"{path}: unexpected {type(err).__name__} while reading it: {err}")


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


def _drop_duplicates(kept: list[Record], excluded: list[Exclusion], *, by_content: bool) -> list[Record]:
    """Keep the first row of each image (by content hash, or by resolved path when images were not read)."""
    first: dict[Any, Record] = {}
    unique = []
    for record in kept:
        identity = record.sha256 if by_content and record.sha256 else record.image_path.resolve()
        if identity in first:
            original = first[identity]
            how = "the same image content" if by_content else "the same file"
            excluded.append(Exclusion(record.row, record.line, record.image, [Issue(
                "duplicate_image", f"{how} as row {original.row} ({original.image}); only the first one is kept")]))
        else:
            first[identity] = record
            unique.append(record)
    return unique


def _ordered(counts: Counter[str]) -> list[tuple[str, int]]:
    order = list(REASON_TEXT)
    return sorted(counts.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))


def _note_place(note: Note) -> str:
    return f"row {note.row} {note.image}: " if note.row is not None else ""
