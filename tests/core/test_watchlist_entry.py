"""Watchlist entries: patterns, fields and times as people write them."""

from __future__ import annotations

import datetime as dt

import pytest

from edge.core.watchlist.entry import (
    Entry,
    FieldError,
    ListPolicy,
    parse_entry,
    parse_pattern,
    parse_time,
)


def row(**kw):
    base = {
        "plate": "AB 123 CD",
        "category": "stolen vehicle",
        "agency": "PL-KGP",
        "added_by": "jk",
    }
    base.update(kw)
    return base


def test_pattern_normalised_like_reads():
    assert parse_pattern("ab-123 cd") == "AB123CD"
    assert parse_pattern("АВ 123 СК") == "AB123CK"  # Cyrillic look-alikes
    assert parse_pattern("ab?12?") == "AB?12?"
    assert parse_pattern("* 12-34") == "*1234"
    assert parse_pattern("ab**12") == "AB*12"


@pytest.mark.parametrize("raw", ["", "A", "?", "*1", "A?B", "*", "ABCDEFGHIJKLM", "!!"])
def test_bad_patterns(raw):
    with pytest.raises(FieldError) as e:
        parse_pattern(raw)
    assert e.value.field == "plate"


def test_parse_entry_fields():
    e = parse_entry(
        row(country="pl", priority="2", reason=" witness ", valid_until="2030-01-31"),
        list_name="stolen-pl",
    )
    assert e.pattern == "AB123CD"
    assert e.country == "PL"
    assert e.category == "stolen_vehicle"
    assert e.priority == 2
    assert e.reason == "witness"
    assert e.list == "stolen-pl"
    # a bare date for valid_until covers that whole day (UTC)
    assert e.valid_until == dt.datetime(2030, 2, 1, tzinfo=dt.UTC).timestamp()
    assert e.active(e.valid_until - 1) and not e.active(e.valid_until)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"priority": "high"}, "priority"),
        ({"priority": 0}, "priority"),
        ({"country": "POL"}, "country"),
        ({"category": ""}, "category"),
        ({"agency": ""}, "agency"),
        ({"valid_from": "yesterday"}, "valid_from"),
        ({"valid_from": "2030-01-02", "valid_until": "2030-01-01"}, "valid_until"),
        ({"list": "other"}, "list"),
        ({"plate": None}, "plate"),
        ({"reason": "a\x00b"}, "reason"),
    ],
)
def test_parse_entry_names_the_bad_field(change, field):
    with pytest.raises(FieldError) as e:
        parse_entry(row(**change), list_name="stolen-pl")
    assert e.value.field == field
    assert field in str(e.value)


def test_defaults_fill_empty_fields():
    e = parse_entry(row(agency=""), list_name="x", defaults={"agency": "DE-BKA"})
    assert e.agency == "DE-BKA"


def test_times():
    assert parse_time("2030-01-01T12:00:00Z", "t") == parse_time("2030-01-01T13:00:00+01:00", "t")
    assert parse_time("2030-01-01T12:00:00", "t") == parse_time("2030-01-01T12:00:00Z", "t")
    assert parse_time(1900000000, "t") == 1900000000.0
    assert parse_time("", "t") is None
    with pytest.raises(FieldError):
        parse_time(float("nan"), "t")


def test_list_policy_checks():
    assert ListPolicy("a").fuzzy_limit == 1.0
    assert ListPolicy("a", match="exact").fuzzy_limit == 0.0
    with pytest.raises(FieldError, match="max_distance"):
        ListPolicy("a", max_distance=2.0)
    with pytest.raises(FieldError, match="list"):
        ListPolicy("Bad Name")


def test_entry_is_wildcard():
    assert Entry(1, "AB?12?", "l", "a", "c").is_wildcard
    assert not Entry(1, "AB123", "l", "a", "c").is_wildcard
