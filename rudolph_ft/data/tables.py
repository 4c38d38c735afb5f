"""Reading the label table of a dataset: a CSV/TSV or JSONL file, or a folder holding one, as rows of strings."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TABLE_NAMES", "DataError", "Table", "TableRow", "describe_columns", "find_table", "read_table"]

# File names looked for, in this order, when DATA is a folder.
TABLE_NAMES = ("data.csv", "labels.csv", "data.jsonl", "labels.jsonl", "data.tsv", "labels.tsv")
# What a column name may look like to be quoted in a message (letters in any script, digits, a few signs).
_COLUMN_NAME = re.compile(r"[\w .,()/%#+*-]{0,64}")


class DataError(ValueError):
    """A dataset that cannot be read at all (no table, missing columns, bad configuration); the message says why."""


@dataclass
class TableRow:
    """One record of the table, all values as strings exactly as written (empty cells and JSON nulls are "")."""

    row: int  # 1-based record number, header not counted
    line: int  # line of the file where the record starts
    values: dict[str, str]
    problem: str | None = None  # why the record itself is malformed (wrong number of cells, bad JSON), if it is


@dataclass
class Table:
    """A whole label table."""

    path: Path
    columns: list[str]
    rows: list[TableRow]
    notes: list[str] = field(default_factory=list)  # how it was read, when that needed guessing


def find_table(data: str | Path) -> Path:
    """The label table of DATA: DATA itself when it is a file, else the first of `TABLE_NAMES` inside the folder.

    Raises:
        DataError: DATA does not exist or the folder holds none of the known table names.
    """
    data = Path(data)
    if data.is_file():
        return data
    if data.is_dir():
        for name in TABLE_NAMES:
            if (data / name).is_file():
                return data / name
        raise DataError(f"{data} is a folder without a label table; put the labels in one of: {', '.join(TABLE_NAMES)}")
    raise DataError(f"{data} does not exist; give a CSV/JSONL file or a folder containing {TABLE_NAMES[0]}")


def describe_columns(columns: Sequence[str]) -> str:
    """The column names for a message, or only their number when they do not look like column names.

    A file that is not a label table at all (a config, a key file) has a first line that must not be echoed.
    """
    if not columns:
        return "(none)"
    if _look_like_names(columns):
        return ", ".join(columns)
    return f"{len(columns)} cell(s) on the first line that do not look like column names (is it a label table?)"


def _look_like_names(columns: Sequence[str]) -> bool:
    return len(columns) <= 100 and all(_COLUMN_NAME.fullmatch(name) for name in columns)


def read_table(path: str | Path, *, columns: Sequence[str] | None = None) -> Table:
    """Read a CSV/TSV (delimiter sniffed, UTF-8 or cp1251) or a JSONL file into string rows.

    Args:
        path: the table file; `.jsonl`/`.ndjson` are read as JSON lines, anything else as delimited text.
        columns: names the table must provide. A CSV whose header has other names but exactly this many columns
            is renamed positionally, as the article does (`df.columns = [...]`); a note records it.

    Raises:
        DataError: the file cannot be read, is empty, or lacks required columns.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read the table {path}: {err.strerror or err}") from None
    notes: list[str] = []
    text = _decode_text(raw, path, notes)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        header, rows = _parse_jsonl(text)
    else:
        header, rows = _parse_csv(text, path, notes)
    if columns is not None:
        header, rows = _match_columns(header, rows, list(columns), path, notes)
    return Table(path, header, rows, notes)


def _decode_text(raw: bytes, path: Path, notes: list[str]) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        notes.append(f"{path.name} is not UTF-8; read it as Windows-1251 (Cyrillic Excel export)")
        return raw.decode("cp1251", errors="replace")


def _parse_csv(text: str, path: Path, notes: list[str]) -> tuple[list[str], list[TableRow]]:
    first_line = text.split("\n", 1)[0]
    if not first_line.strip():
        raise DataError(f"{path} is empty or starts with a blank line; its first line must be the column names")
    try:
        dialect = csv.Sniffer().sniff(first_line, delimiters=",;\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    if delimiter != ",":
        notes.append(f"{path.name}: columns separated by {delimiter!r}")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [name.strip() for name in next(reader)]
    rows: list[TableRow] = []
    line = reader.line_num + 1
    for cells in reader:
        if not any(cell.strip() for cell in cells):  # blank line
            line = reader.line_num + 1
            continue
        problem = None
        if len(cells) != len(header):
            problem = (
                f"has {len(cells)} cells but the header has {len(header)} (an unquoted {delimiter!r} inside a value? "
                'quote such values: "a, b")'
            )
        values = {name: (cells[i] if i < len(cells) else "") for i, name in enumerate(header)}
        rows.append(TableRow(len(rows) + 1, line, values, problem))
        line = reader.line_num + 1
    return header, rows


def _parse_jsonl(text: str) -> tuple[list[str], list[TableRow]]:
    header: list[str] = []
    rows: list[TableRow] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        problem, values = None, {}
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
            values = {str(key): _json_text(value) for key, value in record.items()}
        except ValueError as err:
            problem = f"is not a JSON object ({err}); each line must be one object like {{\"path\": ..., ...}}"
        header.extend(key for key in values if key not in header)
        rows.append(TableRow(len(rows) + 1, line_number, values, problem))
    for row in rows:  # a key missing on some lines reads as an empty value there
        row.values = {name: row.values.get(name, "") for name in header}
    return header, rows


def _json_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _match_columns(
    header: list[str], rows: list[TableRow], columns: list[str], path: Path, notes: list[str]
) -> tuple[list[str], list[TableRow]]:
    missing = [name for name in columns if name not in header]
    if not missing:
        return header, rows
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    if len(header) != len(columns) or jsonl or not _look_like_names(header):
        raise DataError(
            f"{path} lacks column(s) {', '.join(missing)}; it has: {describe_columns(header)}. "
            f"Expected the columns {', '.join(columns)}"
        )
    notes.append(f"{path.name}: header [{describe_columns(header)}] renamed by position to {columns}, "
                 "as the article does")
    for row in rows:
        row.values = dict(zip(columns, row.values.values(), strict=True))
    return list(columns), rows
