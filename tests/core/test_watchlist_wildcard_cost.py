"""Partial plates cannot make every read slow: what a read costs is counted, not timed.

A pattern with '*' is checked only by reads that hold its key (known characters at the
start, the end, both, or side by side inside).  Imports refuse one without such a key
("*A*B*C*") and a file crowding one key, so the patterns a read checks stay bounded.
"""

from __future__ import annotations

import random

import pytest

from edge.collector.watchlist.files import WatchlistFileError, parse_entries, read_entries
from edge.core.watchlist.distance import fold
from edge.core.watchlist.entry import FieldError, parse_pattern
from edge.core.watchlist.wildcard import MAX_PER_KEY, WildcardIndex, crowded, pattern_key

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
HEADER = "plate,category,agency,added_by\n"


def _csv(*plates: str) -> str:
    return HEADER + "".join(f"{p},stolen_vehicle,PL-KGP,test\n" for p in plates)


def _random_pattern(rng: random.Random) -> str:
    """A partial plate of any shape: known characters, '?' and '*' anywhere."""
    return "".join(
        rng.choice(ALPHABET) if r < 0.6 else "?" if r < 0.75 else "*"
        for r in (rng.random() for _ in range(rng.randint(4, 11)))
    )


def _accepted(raw: str) -> str | None:
    try:
        return parse_pattern(raw)
    except FieldError:
        return None


def _read(rng: random.Random) -> str:
    return "".join(rng.choices(ALPHABET, k=rng.randint(5, 9)))


@pytest.mark.parametrize("raw", ["*A*B*C*", "A*B*C", "A?B*1", "*AB*12*", "?A*BC?"])
def test_a_partial_plate_without_a_key_is_refused(raw):
    with pytest.raises(FieldError, match="side by side") as e:
        parse_pattern(raw)
    assert e.value.field == "plate"


@pytest.mark.parametrize("raw", ["AB1*", "*X12*", "AB*1", "A*12", "AB*12", "A?B*123", "*1234"])
def test_partial_plates_with_a_key_are_taken(raw):
    assert parse_pattern(raw)


def test_the_import_names_file_line_and_pattern_and_takes_nothing(tmp_path):
    path = tmp_path / "partials.csv"
    path.write_text(_csv("AB123CD", "WX1*", "*A*B*C*", "XY987ZZ"))
    with pytest.raises(WatchlistFileError) as e:
        read_entries(path, "stolen")
    assert f"{path}:4: field 'plate': '*A*B*C*'" in str(e.value)
    assert [line for line, _, _ in e.value.problems] == [4]


def test_every_pattern_an_import_takes_has_a_key():
    rng = random.Random(7)
    taken = {p for p in (_accepted(_random_pattern(rng)) for _ in range(20_000)) if p}
    starred = [p for p in taken if "*" in p]
    assert len(starred) > 2000
    for p in starred:
        assert pattern_key(p) is not None and pattern_key(p, folded=False) is not None, p
    index = WildcardIndex(enumerate(starred))
    assert index.examined("Q", "Q") == 0  # no pattern is checked by every read


def test_a_read_checks_few_of_twenty_thousand_partial_plates():
    rng = random.Random(11)
    starred: list[str] = []
    while len(starred) < 20_000:
        p = _accepted(_random_pattern(rng))
        if p and "*" in p:
            starred.append(p)
    index = WildcardIndex(enumerate(starred))
    reads = [_read(rng) for _ in range(1000)]
    # Reads that fill in listed patterns: those hold the keys and must find them.
    for p in rng.sample(starred, 200):
        reads.append("".join(rng.choice(ALPHABET) if c == "?" else "K7" if c == "*" else c
                             for c in p))  # fmt: skip
    work = [index.examined(t, fold(t)) for t in reads]
    exact_work = [index.examined(t, fold(t), confusions=False) for t in reads]
    for t, n in zip(reads, work, strict=True):
        assert n <= index.examined_at_most(len(t)), t
    assert max(work) <= 60 and max(exact_work) <= max(work)
    assert sum(work) / len(work) < 10


def test_the_same_number_of_old_unkeyed_patterns_is_checked_by_every_read():
    """What the rule prevents: patterns stored before it are still found, at full cost."""
    rng = random.Random(3)
    old = ["*{}*{}*{}*".format(*rng.choices(ALPHABET, k=3)) for _ in range(20_000)]
    index = WildcardIndex(enumerate(old))
    assert index.examined("XY12345", fold("XY12345")) == 20_000


def test_a_file_may_not_crowd_one_key():
    crowd = [f"WX1*{i}?" for i in range(MAX_PER_KEY + 1)]
    assert len({pattern_key(p) for p in crowd}) == 1
    assert parse_entries("ok.csv", _csv(*crowd[:MAX_PER_KEY]), "csv", "stolen")
    with pytest.raises(WatchlistFileError) as e:
        parse_entries("crowd.csv", _csv(*crowd), "csv", "stolen")
    (line, field, message), *more = e.value.problems
    assert not more and field == "plate" and line == MAX_PER_KEY + 2
    assert f"'WX1*{MAX_PER_KEY}?'" in message and "'WX1' at the start" in message
    assert "line 2 is the first" in message


def test_a_key_as_crowded_as_an_import_allows_costs_at_most_its_file():
    rng = random.Random(5)
    others: list[str] = []
    while len(others) < 5000:
        p = _accepted(_random_pattern(rng))
        if p and "*" in p:
            others.append(p)
    patterns = [f"WX1*{i}?" for i in range(MAX_PER_KEY)] + others
    assert not crowded(enumerate(patterns))  # an import would take them all
    index = WildcardIndex(enumerate(patterns))
    read = "WX1234567"
    n = index.examined(read, fold(read))
    assert MAX_PER_KEY <= n <= index.examined_at_most(len(read))
    # At most 2 + 2 + 5 look-ups at the ends and one per three characters inside, each
    # giving one key's patterns.
    assert index.examined_at_most(len(read)) <= (9 + len(read) - 2) * MAX_PER_KEY
