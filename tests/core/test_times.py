"""One time-format module (`edge.core.times`): the same bytes as the formatters it replaced,
and a time past the calendar refused with an error rather than an OverflowError."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.collector.cli import parse_since
from edge.core.times import UTC, TimeOutOfRange, format_time, iso, parse_iso
from edge.core.watchlist.entry import FieldError, parse_time
from edge.core.watchlist.entry import format_time as entry_format_time

zones = st.builds(lambda m: dt.timezone(dt.timedelta(minutes=m)), st.integers(-14 * 60, 14 * 60))
moments = st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(9998, 1, 1),
                       timezones=zones)
seconds = st.floats(0, 253402300000) | st.integers(0, 253402300000)


@settings(max_examples=300, deadline=None)
@given(moments)
def test_format_time_is_the_links_old_one(t):
    assert format_time(t) == t.astimezone(dt.UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


@settings(max_examples=300, deadline=None)
@given(seconds)
def test_unix_seconds_as_the_console_and_the_watchlist_files_wrote_them(t):
    moment = dt.datetime.fromtimestamp(t, dt.UTC)
    # console accounts (audit, acknowledgements) and the sign-in refusal rows
    assert iso(t, "milliseconds") == moment.isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
    assert iso(t, "seconds") == moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    # watchlist files: +00:00, to the second where whole
    assert entry_format_time(t) == moment.isoformat(
        timespec="seconds" if t == int(t) else "milliseconds")


@settings(max_examples=300, deadline=None)
@given(moments)
def test_parse_iso_reads_back_what_format_time_wrote(t):
    back = parse_iso(format_time(t))
    assert back == t and back.tzinfo == UTC


def test_parse_iso_zones():
    assert parse_iso("2025-05-31T18:00:00") == dt.datetime(2025, 5, 31, 18, tzinfo=dt.UTC)
    assert parse_iso("2025-05-31T20:00:00+02:00") == dt.datetime(2025, 5, 31, 18, tzinfo=dt.UTC)
    assert parse_iso("2025-05-31T18:00:00Z").tzinfo == UTC
    assert parse_iso("2025-05-31T18:00:00", default_zone=None).tzinfo is None
    with pytest.raises(ValueError):
        parse_iso("yesterday")


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
def test_a_time_past_the_calendar_in_utc_is_a_clear_error(text):
    with pytest.raises(TimeOutOfRange, match="out of range"):
        parse_iso(text)
    with pytest.raises(argparse.ArgumentTypeError, match="out of range"):
        parse_since(text)  # an OverflowError traceback before


def test_watchlist_times_past_the_calendar_are_field_errors():
    with pytest.raises(FieldError, match="out of range"):
        parse_time("9999-12-31T23:00-05:00", "valid_until")
    with pytest.raises(FieldError, match="out of range"):
        parse_time("9999-12-31", "valid_until", end_of_day=True)  # OverflowError before
    assert parse_time("9999-12-31", "valid_from") == 253402214400.0
    assert parse_time("2025-05-31", "valid_until", end_of_day=True) == parse_time(
        "2025-06-01T00:00:00Z", "valid_until")
