"""The collector's master store: lists, entries, and the numbered change log edges follow."""

from __future__ import annotations

import json

import pytest

from edge.collector.watchlist.master import UPSERT_BATCH, WatchlistStore
from edge.core.watchlist.entry import Entry, ListPolicy


def entry(pattern, list_name="stolen", **kw):
    kw.setdefault("agency", "PL-KGP")
    kw.setdefault("category", "stolen_vehicle")
    kw.setdefault("added_by", "jk")
    return Entry(0, pattern, list_name, **kw)


def log_of(store, name=None):
    bodies = [json.loads(b) for _, _, b in store.changes_after(0, 10_000)]
    return [(b["list"], b["seq"], b["op"]) for b in bodies if name in (None, b["list"])]


@pytest.fixture
def store(tmp_path):
    s = WatchlistStore(tmp_path / "w.db")
    yield s
    s.close()


def test_import_creates_the_list_and_logs_numbered_updates(store):
    r = store.import_entries("stolen", [entry("AB123CD"), entry("XY?99?", country="DE")])
    assert (r.added, r.changed, r.unchanged, r.removed) == (2, 0, 0, 0)
    assert log_of(store) == [("stolen", 1, "policy"), ("stolen", 2, "upsert")]
    info = store.lists(counts=True)["stolen"]
    assert (info.seq, info.active, info.entries) == (2, True, 2)
    body = json.loads(store.changes_after(1)[0][2])
    assert body["epoch"] == store.epoch and body["v"] == 1
    assert body["entries"][0][:2] == [1, "AB123CD"]


def test_reimport_changes_only_what_changed(store):
    store.import_entries("stolen", [entry("AB123CD"), entry("XY12345")])
    r = store.import_entries("stolen", [entry("AB123CD"), entry("XY12345", reason="new")])
    assert (r.added, r.changed, r.unchanged) == (0, 1, 1)
    assert [e.id for e in store.entries("stolen")] == [1, 2]  # ids kept
    r = store.import_entries("stolen", [entry("XY12345", reason="new")], replace_all=True)
    assert (r.unchanged, r.removed) == (1, 1)
    assert log_of(store)[-2:] == [("stolen", 3, "upsert"), ("stolen", 4, "delete")]
    assert [e.pattern for e in store.entries("stolen")] == ["XY12345"]


def test_same_plate_other_country_is_another_entry(store):
    store.import_entries("stolen", [entry("AB123CD", country="PL"), entry("AB123CD")])
    assert len(store.find("stolen", "AB123CD")) == 2
    assert [e.country for e in store.find("stolen", "AB123CD", "PL")] == ["PL"]


def test_big_imports_are_split_into_several_updates(store):
    store.import_entries("big", [entry(f"AB{i:05d}", "big") for i in range(2 * UPSERT_BATCH + 5)])
    assert [op for _, _, op in log_of(store)] == ["policy", "upsert", "upsert", "upsert"]


def test_an_import_that_fails_leaves_nothing(store, monkeypatch):
    store.import_entries("stolen", [entry("AB123CD")])
    before = (list(store.entries("stolen")), store.changes_after(0), store.lists())
    calls = []

    def failing(*a, **kw):
        calls.append(a)
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_emit", failing)
    with pytest.raises(RuntimeError):
        store.import_entries("stolen", [entry("NEW1111")], replace_all=True)
    monkeypatch.undo()
    assert calls
    assert (list(store.entries("stolen")), store.changes_after(0), store.lists()) == before
    with pytest.raises(ValueError, match="is for list"):
        store.import_entries("stolen", [entry("X1234", "other")])


def test_policy_changes(store):
    store.import_entries("a", [entry("AB123CD", "a")], policy=ListPolicy("a", "exact"))
    assert store.lists()["a"].policy.match == "exact"
    store.set_policy(ListPolicy("a", "fuzzy", 0.5))
    store.set_policy(ListPolicy("a", "fuzzy", 0.5))  # no change, no update
    assert log_of(store, "a") == [("a", 1, "policy"), ("a", 2, "upsert"), ("a", 3, "policy")]


def test_add_to_an_unknown_list_needs_create(store):
    with pytest.raises(KeyError, match="no list"):
        store.add(entry("AB123CD", "nope"))
    assert store.add(entry("AB123CD", "nope"), create=True).id == 1


def test_expire(store):
    store.import_entries("stolen", [entry("AB123CD", valid_from=100.0)])
    (e,) = store.expire([1], at=50.0)
    assert e.valid_until == 50.0 and e.valid_from == 50.0  # never in force
    assert store.get(1) == e
    assert log_of(store)[-1] == ("stolen", 3, "upsert")
    with pytest.raises(KeyError):
        store.expire([99])


def test_drop_and_make_again(store):
    store.import_entries("case", [entry("AB123CD", "case")])
    store.drop_list("case")
    info = store.lists(counts=True)["case"]
    assert (info.active, info.entries, info.seq) == (False, 0, 3)
    with pytest.raises(KeyError):
        store.drop_list("case")
    store.import_entries("case", [entry("XY999", "case")])
    assert log_of(store, "case")[-2:] == [("case", 4, "policy"), ("case", 5, "upsert")]
    assert store.lists()["case"].active


def test_catch_up_possible_while_the_log_holds_it(store):
    store.import_entries("stolen", [entry("AB123CD")])
    store.import_entries("stolen", [entry("XY12345")])
    assert store.can_catch_up("stolen", 0) and store.can_catch_up("stolen", 3)
    assert not store.can_catch_up("stolen", 4) and not store.can_catch_up("nope", 0)
    assert store.list_changes("stolen", 1, 10) == [b for _, _, b in store.changes_after(1)]
    store.purge(retention_s=-1)
    assert not store.can_catch_up("stolen", 1)
    assert store.can_catch_up("stolen", 2)  # the last update is always kept


def test_purge_removes_long_expired_entries(store):
    store.import_entries("stolen", [entry("AB123CD", valid_until=1000.0), entry("XY12345")])
    assert store.purge(now=1000.0 + 3600, retention_s=7200) == (0, 0)
    entries, _ = store.purge(now=1000.0 + 3 * 3600, retention_s=7200)
    assert entries == 1
    assert [e.pattern for e in store.entries("stolen")] == ["XY12345"]
    assert log_of(store)[-1] == ("stolen", 3, "delete")


def test_epoch_survives_reopening(tmp_path):
    a = WatchlistStore(tmp_path / "w.db")
    b = WatchlistStore(tmp_path / "w.db")
    c = WatchlistStore(tmp_path / "other.db")
    assert a.epoch == b.epoch != c.epoch
    for s in (a, b, c):
        s.close()
