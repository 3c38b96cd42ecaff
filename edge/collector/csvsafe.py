"""CSV that a spreadsheet opens as data: every cell quoted, nothing it could take for a formula.

One helper for every CSV this project writes (the console's hit export, `anpr-collector
watchlist export`).  Text a spreadsheet would run (a cell starting with = + - @, a tab or a
carriage return) gets a leading apostrophe, the spreadsheets' own mark for "this is text".
The same is done after a `,` `;` tab or line break inside a cell: a spreadsheet set to
split on `;` (as in much of Europe) may open a `,` file with its quotes misread, and then
`x;=cmd()` inside one cell becomes a cell of its own starting with `=`.  Numbers are left as
numbers (a negative latitude is no formula).  `restore_cell` undoes exactly what
`safe_cell` did, so an exported watchlist imports back unchanged.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import IO

SEPARATORS = (",", ";")
_TRIGGER = "=+\\-@\t\r"  # what makes a spreadsheet read a cell as a formula
# A cell's start, or just after a separator a misreading spreadsheet may split on (spaces
# after it skipped, as some do), then any apostrophes (ours, or the text's own), then a trigger.
_AT = r"(?:^|(?<=[,;\t\r\n]))( *)"
_DANGER = re.compile(rf"{_AT}('*[{_TRIGGER}])")
_DEFUSED = re.compile(rf"{_AT}'('*[{_TRIGGER}])")


def safe_cell(value: object) -> str | int | float:
    """`value` as a cell: None empty, numbers as they are, text defused."""
    if value is None:
        return ""
    if isinstance(value, int | float):
        return value
    return _DANGER.sub(r"\1'\2", str(value))


def restore_cell(text: str) -> str:
    """The text that `safe_cell` turned into `text` (an apostrophe it added taken away)."""
    if "'" not in text:
        return text
    return _DEFUSED.sub(r"\1\2", text)


def check_separator(sep: str) -> str:
    if sep not in SEPARATORS:
        raise ValueError(f"separator {sep!r}: use ',' or ';'")
    return sep


def writer(out: IO[str], sep: str = ",", lineterminator: str = "\r\n") -> _Writer:
    """A CSV writer on `out` that quotes every cell and defuses each (`sep`: ',' or ';')."""
    return _Writer(out, check_separator(sep), lineterminator)


class _Writer:
    def __init__(self, out: IO[str], sep: str, lineterminator: str):
        self._w = csv.writer(out, delimiter=sep, quoting=csv.QUOTE_ALL,
                             lineterminator=lineterminator)  # fmt: skip

    def writerow(self, row: Iterable[object]) -> None:
        self._w.writerow([safe_cell(v) for v in row])
