"""A watchlist file uploaded in the console: its own bytes, read in the encoding the admin says.

The page sends the file as it is (base64 in JSON), so that nothing is decoded on the
way: UTF-8 unless the admin chooses one of ENCODINGS, and a file that is not in it is
refused with the line and byte that show it, never read with a guess.  Text already
decoded by a caller is taken too, but not when it holds U+FFFD, what a reader that
guessed wrong leaves behind.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from edge.collector.watchlist.files import FORMATS, parse_entries
from edge.core.watchlist.entry import Entry

# The spreadsheets of the region's offices save CSV in these.
ENCODINGS = ("utf-8", "windows-1250", "windows-1252", "windows-1257", "iso-8859-1",
             "iso-8859-2", "iso-8859-13", "iso-8859-15")  # fmt: skip


class UploadError(ValueError):
    """The request does not say what to import as it should (the message says why)."""


class FileRefused(Exception):
    """The file itself cannot be read: `line` and `message` say where and why."""

    def __init__(self, filename: str, line: int, message: str):
        super().__init__(message)
        self.filename, self.line, self.message = filename, line, message


@dataclass(frozen=True)
class Upload:
    filename: str
    replace: bool
    entries: list[Entry]


def text_field(body: dict[str, Any], key: str, limit: int = 1000) -> str:
    """`body[key]` as text of at most `limit` characters ("" when absent)."""
    value = body.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise UploadError(f"{key} must be text")
    value = str(value)
    if len(value) > limit:
        raise UploadError(f"{key} longer than {limit} characters")
    return value


def read_upload(raw: bytes, list_name: str, added_by: str) -> Upload:
    """The entries of the file in a request's body `raw`; raises UploadError, FileRefused or
    edge.collector.watchlist.files.WatchlistFileError (every bad row)."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UploadError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise UploadError("the body must be a JSON object")
    fmt = text_field(body, "format", 8) or "csv"
    if fmt not in FORMATS:
        raise UploadError(f"format must be one of {', '.join(FORMATS)}")
    filename = text_field(body, "filename", 200) or "upload"
    encoding = (text_field(body, "encoding", 20) or "utf-8").lower()
    if encoding not in ENCODINGS:
        raise UploadError(f"encoding must be one of {', '.join(ENCODINGS)}")
    if body.get("data") is not None:  # the file's bytes, as the page sends them
        if not isinstance(body["data"], str):
            raise UploadError("data must be the file in base64")
        try:
            data = base64.b64decode(body["data"], validate=True)
        except (binascii.Error, ValueError):
            raise UploadError("data is not base64") from None
        text = decode(data, encoding, filename)
    else:
        text = text_field(body, "text", len(raw))
        if "\ufffd" in text:
            line = text[: text.index("\ufffd")].count("\n") + 1
            raise FileRefused(filename, line, "holds U+FFFD, a character lost in reading a "
                              "file that is not UTF-8: upload the file itself, with its "
                              "encoding")  # fmt: skip
    defaults = {"added_by": added_by}
    agency = text_field(body, "agency", 100)
    if agency:
        defaults["agency"] = agency
    entries = parse_entries(filename, text, fmt, list_name, defaults)
    return Upload(filename, bool(body.get("replace")), entries)


def decode(data: bytes, encoding: str, filename: str) -> str:
    """The file's text in `encoding` (UTF-8: a byte-order mark dropped), or FileRefused."""
    try:
        return data.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        hint = ("save it as UTF-8, or choose its encoding (a spreadsheet's CSV is often "
                "windows-1252, windows-1250 or windows-1257)") if encoding == "utf-8" else (
                "choose the encoding it was saved in")  # fmt: skip
        raise FileRefused(filename, line, f"not {encoding} text (byte 0x{data[e.start]:02x} "
                          f"on line {line}): {hint}") from None  # fmt: skip
