"""Times as the project writes and reads them: UTC, ISO 8601.

The link, the stores and the console write `format_time` (microseconds and a Z:
'2024-05-01T12:00:00.123456Z'); other places write coarser forms with `iso`.  `parse_iso`
reads any ISO 8601 time back as UTC.
"""

from __future__ import annotations

import datetime as dt

UTC = dt.UTC


class TimeOutOfRange(ValueError):
    """An ISO 8601 time that lies outside the years 1 to 9999 once taken to UTC."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


def iso(t: dt.datetime | float, timespec: str = "microseconds", *, z: bool = True) -> str:
    """`t` (an aware datetime, or UNIX seconds) in UTC as ISO 8601 to `timespec`, ending in
    Z, or with `z` False in +00:00 (as watchlist files and the node's status write it)."""
    moment = dt.datetime.fromtimestamp(t, UTC) if isinstance(t, int | float) else t.astimezone(UTC)
    text = moment.isoformat(timespec=timespec)
    return text.replace("+00:00", "Z") if z else text


def format_time(t: dt.datetime) -> str:
    """ISO 8601 in UTC with microseconds and a Z: '2024-05-01T12:00:00.123456Z'."""
    return iso(t)


def parse_iso(text: str, default_zone: dt.tzinfo | None = UTC) -> dt.datetime:
    """ISO 8601 `text` as an aware datetime in UTC.

    A time written without a zone is in `default_zone` (with None it comes back naive, for
    a caller that refuses it).  ValueError when `text` is not ISO 8601, `TimeOutOfRange`
    when it lies outside the years 1 to 9999 in UTC ('9999-12-31T23:00-05:00').
    """
    t = dt.datetime.fromisoformat(text)
    if t.tzinfo is None:
        if default_zone is None:
            return t
        t = t.replace(tzinfo=default_zone)
    try:
        return t.astimezone(UTC)
    except OverflowError:
        raise TimeOutOfRange(f"{text!r} is out of range (years 1 to 9999 in UTC)") from None
