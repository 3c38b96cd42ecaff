"""Matching reads against entries: exact, fuzzy, wildcard, countries, expiry, overlay swaps."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import numpy as np
import pytest

from edge.core.watchlist.distance import CONFUSION_COST, FOLD_MAP, weighted_distance
from edge.core.watchlist.entry import Entry, ListPolicy
from edge.core.watchlist.index import MIN_FUZZY_LEN, CompactIndex
from edge.core.watchlist.matcher import Matcher

NOW = 1_900_000_000.0


def entry(eid, pattern, list_name="stolen", **kw):
    kw.setdefault("agency", "PL-KGP")
    kw.setdefault("category", "stolen_vehicle")
    return Entry(eid, pattern, list_name, **kw)


def found(matcher, text, **kw):
    return [(h.entry.id, h.kind, h.distance) for h in matcher.match(text, now=NOW, **kw)]


@pytest.fixture
def lists():
    return [
        ListPolicy("stolen", "fuzzy", 1.0),
        ListPolicy("exact", "exact"),
        ListPolicy("case", "fuzzy", 0.5),
    ]


def test_exact_fuzzy_wildcard(lists):
    m = Matcher(
        [
            entry(1, "AB123CD"),
            entry(2, "KR5OO1", "exact"),
            entry(3, "AB?12?", "case"),
            entry(4, "*9876", "case"),
            entry(5, "WX12*", "exact"),
        ],
        lists,
    )
    assert found(m, "AB123CD") == [(1, "exact", 0.0)]
    assert found(m, "ab 123 cd") == [(1, "exact", 0.0)]  # reads are normalised too
    assert found(m, "A8123CD") == [(1, "fuzzy", 0.25)]
    assert found(m, "AB123C") == [(1, "fuzzy", 1.0)]
    assert found(m, "AB123CD", fuzzy=False) == [(1, "exact", 0.0)]
    assert found(m, "A8123CD", fuzzy=False) == []
    assert found(m, "KR5OO1") == [(2, "exact", 0.0)]
    assert found(m, "KR5001") == []  # exact-only list: no confusions
    assert found(m, "ABX12Y") == [(3, "wildcard", 0.0)]
    assert found(m, "A8X12Y") == [(3, "wildcard", CONFUSION_COST)]
    assert found(m, "ABX12YZ") == []
    assert found(m, "ZZZ9876") == [(4, "wildcard", 0.0)]
    assert found(m, "WX12345") == [(5, "wildcard", 0.0)]
    assert found(m, "VVX12345") == []
    assert found(m, "") == []


def test_fuzzy_distance_per_list(lists):
    m = Matcher([entry(1, "AB123CD", "case")], lists)  # case allows 0.5
    assert found(m, "A8123CD") == [(1, "fuzzy", 0.25)]
    assert found(m, "A8I23CD") == [(1, "fuzzy", 0.5)]
    assert found(m, "A8I2ZCD") == []  # three confusions: 0.75 > 0.5
    assert found(m, "AX123CD") == []


def test_country_counts_where_both_know_it(lists):
    m = Matcher([entry(1, "AB123CD", country="PL"), entry(2, "AB123CD", "exact")], lists)
    assert {h[0] for h in found(m, "AB123CD", country="PL")} == {1, 2}
    assert {h[0] for h in found(m, "AB123CD", country="DE")} == {2}
    assert {h[0] for h in found(m, "AB123CD")} == {1, 2}


def test_validity_is_checked_at_match_time(lists):
    m = Matcher(
        [
            entry(1, "AB123CD", valid_until=NOW + 60),
            entry(2, "AB?23CD", "case", valid_from=NOW + 60),
        ],
        lists,
    )
    assert found(m, "AB123CD") == [(1, "exact", 0.0)]
    assert m.match("AB123CD", now=NOW + 60) == [m.match("AB123CD", now=NOW + 60)[0]]
    assert [h.entry.id for h in m.match("AB123CD", now=NOW + 60)] == [2]
    assert [h.entry.id for h in m.match("AB123CD", now=NOW + 59.9)] == [1]


def test_hits_best_first_and_carry_the_entry(lists):
    m = Matcher(
        [
            entry(1, "AB123CD", priority=5, reason="stolen in Kraków"),
            entry(2, "AB123CD", "exact", priority=1),
            entry(3, "A8123CD", "case", priority=1),
            entry(4, "AB?23CD", "case", priority=9),
        ],
        lists,
    )
    hits = m.match("AB123CD", now=NOW)
    assert [(h.entry.id, h.kind) for h in hits] == [
        (2, "exact"),
        (1, "exact"),
        (4, "wildcard"),
        (3, "fuzzy"),
    ]
    assert hits[1].entry == entry(1, "AB123CD", priority=5, reason="stolen in Kraków")
    assert hits[0].text == "AB123CD"


def test_a_list_not_in_force_never_hits(lists):
    m = Matcher([entry(1, "AB123CD", "gone")], lists)
    assert found(m, "AB123CD") == []


def test_overlay_replaces_deletes_and_voids(lists):
    m = Matcher([entry(1, "AB123CD"), entry(2, "XY999", "exact")], lists)
    m.apply([entry(1, "AB123CE"), entry(3, "QQ111", "exact")])
    assert found(m, "AB123CD") == [(1, "fuzzy", 1.0)]  # the base's old pattern is shadowed
    assert found(m, "AB123CE") == [(1, "exact", 0.0)]
    assert found(m, "QQ111") == [(3, "exact", 0.0)]
    m.apply(deletes=[3, 2])
    assert found(m, "QQ111") == [] and found(m, "XY999") == []
    m.apply([entry(4, "LL123", "exact")], void=["stolen"])
    assert found(m, "AB123CE") == []
    assert found(m, "LL123") == [(4, "exact", 0.0)]
    assert m.count() == 1
    # a rebase built after all of that keeps nothing stale
    m.rebase(CompactIndex.from_entries([entry(4, "LL123", "exact")]), m.version)
    assert m.overlay_size == 0 and m.count() == 1
    assert found(m, "LL123") == [(4, "exact", 0.0)]


def test_rebase_keeps_changes_made_after_its_snapshot(lists):
    m = Matcher([entry(1, "AB123CD")], lists)
    v = m.apply([entry(2, "XY999AA")])
    base = CompactIndex.from_entries([entry(1, "AB123CD"), entry(2, "XY999AA")])
    m.apply([entry(3, "ZZ777BB")])  # lands while the new base is being built
    m.rebase(base, v)
    assert m.overlay_size == 1
    assert {h.entry.id for h in m.match("ZZ777BB", now=NOW)} == {3}
    assert {h.entry.id for h in m.match("XY999AA", now=NOW)} == {2}


def test_policy_change_and_list_drop_take_effect(lists):
    m = Matcher([entry(1, "AB123CD")], lists)
    exact = {p.name: p for p in lists} | {"stolen": ListPolicy("stolen", "exact")}
    m.apply(lists=exact)
    assert found(m, "A8123CD") == []
    m.apply(lists={n: p for n, p in exact.items() if n != "stolen"}, void=["stolen"])
    assert found(m, "AB123CD") == []


def test_swaps_do_not_disturb_concurrent_matches(lists):
    m = Matcher([entry(i, f"AB{i:05d}") for i in range(1, 2000)], lists)
    errors = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            hits = m.match("AB00042", now=NOW)
            if not hits or hits[0].entry.id != 42:
                errors.append(hits)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(50):
        m.apply([entry(10_000 + i, f"ZZ{i:05d}")])
    stop.set()
    for t in threads:
        t.join()
    assert not errors


# --------------------------------------------------------------------------- against a reference


def _fold(c):
    return FOLD_MAP.get(c, c)


def _segment_cost(pattern, text, fuzzy):
    cost = 0.0
    for p, t in zip(pattern, text, strict=True):
        if p == "?" or p == t:
            continue
        if fuzzy and _fold(p) == _fold(t):
            cost += CONFUSION_COST
        else:
            return None
    return cost


_SYMBOLS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789?*"


def _folded_counts(text):
    counts = np.zeros(len(_SYMBOLS), np.int32)
    for c in text:
        counts[_SYMBOLS.index(_fold(c))] += 1
    return counts


def _maybe_close(table, text):
    """Entries not ruled out by a quick proof: each edit other than a confusion changes at
    most one character of the folded texts' multiset difference, and costs 1."""
    read = _folded_counts(text)
    apart = np.maximum(np.maximum(table - read, 0).sum(1), np.maximum(read - table, 0).sum(1))
    return apart < 2


def reference(entries, table, policies, text, country, now):
    """Every hit, the slow and obvious way (one '*' at most per pattern)."""
    out = set()
    close = _maybe_close(table, text)
    for e, maybe in zip(entries, close, strict=True):
        p = policies.get(e.list)
        if p is None or not e.active(now):
            continue
        if e.country and country and e.country != country:
            continue
        limit = p.fuzzy_limit
        if "*" in e.pattern:
            head, tail = e.pattern.split("*")
            if len(text) < len(head) + len(tail):
                continue
            a = _segment_cost(head, text[: len(head)], limit > 0)
            b = _segment_cost(tail, text[len(text) - len(tail) :], limit > 0)
            if a is not None and b is not None and a + b <= limit:
                out.add((e.id, "wildcard", a + b))
        elif "?" in e.pattern:
            if len(text) == len(e.pattern):
                c = _segment_cost(e.pattern, text, limit > 0)
                if c is not None and c <= limit:
                    out.add((e.id, "wildcard", c))
        elif not maybe:
            continue
        else:
            d = weighted_distance(text, e.pattern)
            if d == 0:
                out.add((e.id, "exact", 0.0))
            elif d <= limit and min(len(text), len(e.pattern)) >= MIN_FUZZY_LEN:
                out.add((e.id, "fuzzy", d))
    return out


def _mutate(rng, plate):
    chars = list(plate)
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        i = rng.randrange(len(chars))
        op = rng.random()
        confusable = [c for c in FOLD_MAP if _fold(c) == _fold(chars[i])]
        if op < 0.5 and len(confusable) > 1:
            chars[i] = rng.choice(confusable)
        elif op < 0.7:
            chars[i] = rng.choice("ABCXYZ0123")
        elif op < 0.85 and len(chars) > 3:
            del chars[i]
        else:
            chars.insert(i, rng.choice("AB80S5"))
    return "".join(chars)


def test_agrees_with_a_brute_force_reference():
    rng = random.Random(4)
    alphabet = "AB8O0DSZ2I1X5G6KM"
    policies = {
        "fz": ListPolicy("fz", "fuzzy", 1.0),
        "fz2": ListPolicy("fz2", "fuzzy", 1.75),
        "ex": ListPolicy("ex", "exact"),
    }
    entries = []
    for i in range(1, 1500):
        plate = "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 8)))
        r = rng.random()
        if r < 0.08:
            k = rng.randrange(len(plate))
            plate = plate[:k] + "?" + plate[k + 1 :]
        elif r < 0.12 and len(plate) >= 4:
            k = rng.randint(0, len(plate))
            plate = (
                (plate[:k] + "*" + plate[k + 1 :]) if sum(c != "*" for c in plate) > 3 else plate
            )
        if sum(c not in "?*" for c in plate) < 3 and ("?" in plate or "*" in plate):
            continue
        entries.append(
            entry(
                i,
                plate,
                rng.choice(list(policies) + ["old"]),
                country=rng.choice([None, "PL", "DE"]),
                valid_until=rng.choice([None, None, NOW - 1, NOW + 10]),
            )
        )
    m = Matcher(entries, policies.values())
    table = np.array([_folded_counts(e.pattern) for e in entries])
    plain = [e for e in entries if not e.is_wildcard]
    wild = [e for e in entries if e.is_wildcard]
    kinds = Counter()
    for _ in range(2000):
        r = rng.random()
        if r < 0.6:
            base = rng.choice(plain).pattern
        elif r < 0.85:  # fill in a partial plate
            base = "".join(
                rng.choice(alphabet)
                if c == "?"
                else "".join(rng.choices(alphabet, k=2))
                if c == "*"
                else c
                for c in rng.choice(wild).pattern
            )
        else:
            base = "XX" + str(rng.random())[2:8]
        text = _mutate(rng, base)
        country = rng.choice([None, "PL", "DE"])
        got = {(h.entry.id, h.kind, h.distance) for h in m.match(text, country, NOW)}
        assert got == reference(entries, table, policies, text, country, NOW), text
        kinds.update(kind for _, kind, _ in got)
    assert min(kinds["exact"], kinds["fuzzy"], kinds["wildcard"]) > 30, kinds


def test_empty_matcher():
    assert Matcher().match("AB123CD") == []
    assert Matcher().count() == 0


def test_default_now_is_the_clock(lists):
    m = Matcher([entry(1, "AB123CD", valid_until=time.time() + 60)], lists)
    assert m.match("AB123CD")
    m = Matcher([entry(1, "AB123CD", valid_until=time.time() - 1)], lists)
    assert not m.match("AB123CD")
