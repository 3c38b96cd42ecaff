"""Watchlist files in and out: CSV and JSON Lines, all or nothing, errors by line and field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from edge.collector.watchlist.files import (
    WatchlistFileError,
    parse_entries,
    read_entries,
    write_entries,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "watchlist.example.csv"
HEADER = "plate,country,category,priority,reason,valid_until,agency,added_by\n"


def test_the_example_file_reads():
    entries = read_entries(EXAMPLE, "demo")
    assert [e.pattern for e in entries] == ["WX12345", "KR5OO1A", "BXY999", "LV?12?", "*7781"]
    assert entries[1].priority == 1 and entries[1].valid_until is not None
    assert {e.list for e in entries} == {"demo"}


def test_csv_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "stolen.csv"
    path.write_text(
        HEADER
        + "AB123CD,PL,stolen_vehicle,1,ok,,PL-KGP,jk\n"
        + "AB?,PL,stolen_vehicle,1,too short,,PL-KGP,jk\n"
        + "XY99999,PL,stolen_vehicle,urgent,bad priority,,PL-KGP,jk\n"
        + "ZZ11111,POL,stolen_vehicle,1,bad country,,PL-KGP,jk\n"
        + "QQ22222,PL,stolen_vehicle,1,bad date,31/12/2025,PL-KGP,jk\n"
        + "AB 123 CD,PL,stolen_vehicle,1,a repeat,,PL-KGP,jk\n"
        + "only,three,fields\n"
    )
    with pytest.raises(WatchlistFileError) as e:
        read_entries(path, "stolen")
    text = str(e.value)
    assert f"{path}:3: field 'plate'" in text
    assert f"{path}:4: field 'priority'" in text
    assert f"{path}:5: field 'country'" in text
    assert f"{path}:6: field 'valid_until'" in text
    assert f"{path}:7: field 'plate': AB123CD repeats line 2" in text
    assert f"{path}:8: 3 fields, header has 8" in text
    assert [p[0] for p in e.value.problems] == [3, 4, 5, 6, 7, 8]


def test_unknown_column_is_an_error():
    with pytest.raises(WatchlistFileError, match="f.csv:1: field 'valid_untill': unknown column"):
        parse_entries("f.csv", "plate,valid_untill\nAB123CD,2025-01-01\n", "csv", "l")
    with pytest.raises(WatchlistFileError, match="'plate': no such column"):
        parse_entries("f.csv", "category,agency\nx,y\n", "csv", "l")


def test_semicolons_bom_and_defaults():
    text = "\ufeffPlate;Category;Reason\nAB123CD;Stolen vehicle;x, y\n"
    entries = parse_entries(
        "f.csv", text.encode("utf-8").decode("utf-8-sig"), "csv", "l",
        {"agency": "PL-KGP", "added_by": "jk"},
    )  # fmt: skip
    assert entries[0].category == "stolen_vehicle" and entries[0].reason == "x, y"


def test_jsonl_errors(tmp_path):
    path = tmp_path / "alerts.jsonl"
    good = {"plate": "AB123CD", "category": "alert", "agency": "PL", "added_by": "jk"}
    path.write_text(
        json.dumps(good) + "\n\n"
        + "{not json\n"
        + json.dumps([1, 2]) + "\n"
        + json.dumps({**good, "plate": "XY1", "priority": 12}) + "\n"
        + json.dumps({**good, "plate": "XY2", "colour": "red"}) + "\n"
    )  # fmt: skip
    with pytest.raises(WatchlistFileError) as e:
        read_entries(path, "alerts")
    assert [p[:2] for p in e.value.problems] == [
        (3, None),
        (4, None),
        (5, "priority"),
        (6, None),
    ]
    assert "unknown field 'colour'" in str(e.value)


def test_empty_and_binary_files(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text(HEADER)
    with pytest.raises(WatchlistFileError, match="no entries"):
        read_entries(empty, "l")
    binary = tmp_path / "b.csv"
    binary.write_bytes(HEADER.encode() + b"AB\xff\xfe\n")
    with pytest.raises(WatchlistFileError, match=r"b.csv:2: not UTF-8"):
        read_entries(binary, "l")


def test_too_many_problems_are_summarised():
    rows = "".join(f"?{i},c,a,b\n" for i in range(30))
    with pytest.raises(WatchlistFileError) as e:
        parse_entries("f.csv", "plate,category,agency,added_by\n" + rows, "csv", "l")
    assert "and 10 more problems" in str(e.value)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_then_import_gives_the_same_entries(fmt):
    entries = read_entries(EXAMPLE, "demo")
    out = io.StringIO()
    assert write_entries(out, entries, fmt) == len(entries)
    again = parse_entries(f"x.{fmt}", out.getvalue(), fmt, "demo")
    assert again == entries
