"""Watchlist files: CSV and JSON Lines in and out, every bad row reported with file, line and field.

Reading is all or nothing: `read_entries` returns every entry of a file or raises
`WatchlistFileError` listing the problems; it never returns part of a file.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from edge.collector import csvsafe
from edge.core.watchlist.entry import Entry, FieldError, format_time, parse_entry
from edge.core.watchlist.wildcard import crowded

FORMATS = ("csv", "jsonl")
COLUMNS = (
    "plate", "country", "category", "priority", "reason", "valid_from", "valid_until",
    "agency", "added_by",
)  # fmt: skip
EXPORT_COLUMNS = ("id", "list", *COLUMNS)
_ALIASES = {"pattern": "plate"}
_KNOWN = frozenset(EXPORT_COLUMNS) | frozenset(_ALIASES)
_MAX_REPORTED = 20


class WatchlistFileError(ValueError):
    """A file could not be imported; `problems` are (line, field or None, message)."""

    def __init__(self, path: str, problems: list[tuple[int, str | None, str]]):
        self.path = path
        self.problems = problems
        lines = []
        for line, field, message in problems[:_MAX_REPORTED]:
            where = f"{path}:{line}" if line else path
            lines.append(f"{where}: field {field!r}: {message}" if field else f"{where}: {message}")
        if len(problems) > _MAX_REPORTED:
            lines.append(f"... and {len(problems) - _MAX_REPORTED} more problems")
        super().__init__("\n".join(lines))


def guess_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".txt"):
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise ValueError(f"{path}: cannot tell the format from the name; give --format csv|jsonl")


def _csv_rows(name: str, text: str) -> Iterator[tuple[int, dict[str, object]]]:
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)  # Excel in much of Europe writes ';'
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        yield from _csv_records(name, reader)
    except csv.Error as e:  # a cell past the size limit, a NUL, a stray quote at the end
        limit = csv.field_size_limit()  # 128 KiB unless someone raised it: no plate is longer
        problem = f"a field longer than {limit} characters" if "field limit" in str(e) else (
            f"not CSV: {e}")  # fmt: skip
        raise WatchlistFileError(name, [(reader.line_num, None, problem)]) from None


def _csv_records(name: str, reader: Any) -> Iterator[tuple[int, dict[str, object]]]:
    try:
        header = next(reader)
    except StopIteration:
        return
    columns = [_ALIASES.get(h, h) for h in (h.strip().lower().replace(" ", "_") for h in header)]
    unknown = [h for h in columns if h not in _KNOWN]
    if unknown:
        raise WatchlistFileError(
            name, [(1, h, f"unknown column (known: {', '.join(EXPORT_COLUMNS)})") for h in unknown]
        )
    if "plate" not in columns:
        raise WatchlistFileError(name, [(1, "plate", "no such column")])
    if len(set(columns)) != len(columns):
        raise WatchlistFileError(name, [(1, None, "a column is named twice")])
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            yield reader.line_num, {"__error__": f"{len(row)} fields, header has {len(columns)}"}
            continue
        # An export defused what a spreadsheet would run (edge.collector.csvsafe): undo it.
        yield reader.line_num, dict(zip(columns, map(csvsafe.restore_cell, row), strict=True))


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, object]]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield number, {"__error__": f"not JSON: {e.msg} at column {e.colno}"}
            continue
        if not isinstance(obj, dict):
            yield number, {"__error__": "not a JSON object"}
            continue
        obj = {_ALIASES.get(k, k): v for k, v in obj.items()}
        unknown = [k for k in obj if k not in _KNOWN]
        if unknown:
            yield number, {"__error__": f"unknown field {unknown[0]!r}"}
            continue
        yield number, obj


def parse_entries(
    name: str,
    text: str,
    fmt: str,
    list_name: str,
    defaults: Mapping[str, object] | None = None,
) -> list[Entry]:
    """Every entry in `text` (the content of file `name`), or `WatchlistFileError`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    rows = _csv_rows(name, text) if fmt == "csv" else _jsonl_rows(text)
    problems: list[tuple[int, str | None, str]] = []
    entries: list[Entry] = []
    seen: dict[tuple[str, str | None], int] = {}
    for line, raw in rows:
        if "__error__" in raw:
            problems.append((line, None, str(raw["__error__"])))
            continue
        raw.pop("id", None)  # ids belong to the store importing the file
        try:
            entry = parse_entry(raw, list_name=list_name, defaults=defaults)
        except FieldError as e:
            problems.append((line, e.field, e.message))
            continue
        key = (entry.pattern, entry.country)
        if key in seen:
            problems.append((line, "plate", f"{entry.pattern} repeats line {seen[key]}"))
            continue
        seen[key] = line
        entries.append(entry)
    # Too many partial plates under the same known characters would each be checked
    # on every read that holds them.
    starred = ((seen[(e.pattern, e.country)], e.pattern) for e in entries)
    problems.extend((line, "plate", message) for line, message in crowded(starred))
    if not problems and not entries:
        problems.append((0, None, "no entries"))
    if problems:
        raise WatchlistFileError(name, problems)
    return entries


def read_entries(
    path: str | Path,
    list_name: str,
    fmt: str | None = None,
    defaults: Mapping[str, object] | None = None,
) -> list[Entry]:
    """Every entry of the file at `path` (`-` for standard input), or `WatchlistFileError`."""
    name = str(path)
    fmt = fmt or guess_format(path)
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(path).read_bytes()
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise WatchlistFileError(name, [(line, None, "not UTF-8 text")]) from None
    return parse_entries(name, text, fmt, list_name, defaults)


def entry_record(entry: Entry) -> dict[str, object]:
    return {
        "id": entry.id,
        "list": entry.list,
        "plate": entry.pattern,
        "country": entry.country or "",
        "category": entry.category,
        "priority": entry.priority,
        "reason": entry.reason,
        "valid_from": format_time(entry.valid_from),
        "valid_until": format_time(entry.valid_until),
        "agency": entry.agency,
        "added_by": entry.added_by,
    }


def write_entries(out: IO[str], entries: Iterable[Entry], fmt: str, sep: str = ",") -> int:
    """Write `entries` to `out` as `fmt`; returns how many.  CSV (`sep` ',' or ';') has every
    cell quoted and nothing a spreadsheet would run (edge.collector.csvsafe); importing it
    undoes that."""
    n = 0
    if fmt == "csv":
        writer = csvsafe.writer(out, sep, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        for entry in entries:
            record = entry_record(entry)
            writer.writerow(record[k] for k in EXPORT_COLUMNS)
            n += 1
    elif fmt == "jsonl":
        for entry in entries:
            record = entry_record(entry)
            record = {k: (None if v == "" and k != "reason" else v) for k, v in record.items()}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    else:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return n
