"""The hit store's reader (StoredHit, HitQuery, HitReader) and the master lists' reader."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import threading

import pytest
from helpers.link import make_hit

from edge.collector.console.data import HIT_FIELDS, ConsoleData
from edge.collector.hits import HIT_COLUMNS, HitQuery, HitReader, StoredHit
from edge.collector.readonly import ReadPool
from edge.collector.store import HitStore
from edge.collector.watchlist.master import WatchlistReader, WatchlistStore
from edge.core.watchlist.entry import Entry, ListPolicy

T0 = make_hit(0).seen_at


@pytest.fixture
def stored(tmp_path):
    """A hits database with hits 0..9: even ones on edge1/cam1, odd ones on edge2/cam2."""
    store = HitStore(tmp_path / "hits.db")
    hits = [make_hit(n, node=f"edge{1 + n % 2}", camera=f"cam{1 + n % 2}", priority=n,
                     scene=0 if n == 3 else 8192) for n in range(10)]  # fmt: skip
    store.commit(hits, received_at=dt.datetime.now(dt.UTC))
    yield store, hits
    store.close()


def test_a_stored_hit_has_every_column_of_the_table_in_its_order(stored):
    store, _ = stored
    table = [r[1] for r in store.db.execute("PRAGMA table_info(hits)")]
    assert table == list(HIT_COLUMNS)
    assert [f.name for f in dataclasses.fields(StoredHit)] == ["rowid", *table]


def test_a_stored_hit_is_what_the_row_holds_and_its_json_is_the_row(stored, tmp_path):
    store, hits = stored
    reader = HitReader(tmp_path / "hits.db")
    try:
        hit = reader.get(hits[4].hit_id)
    finally:
        reader.close()
    assert hit is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        hit.priority = 1  # type: ignore[misc]
    assert (hit.node, hit.camera, hit.plate_text, hit.plate_formatted, hit.country) == (
        "edge1", "cam1", "AB00004", "AB 00004", "DE")  # fmt: skip
    assert (hit.watchlist, hit.entry_id, hit.match_kind, hit.priority, hit.reason) == (
        "stolen", "e4", "exact", 4, "stolen car")  # fmt: skip
    assert (hit.lat, hit.lon, hit.road, hit.direction) == (52.52, 13.40, "A4 km 112", "eastbound")
    assert hit.seen_at == "2026-05-01T12:00:04.000000Z" and hit.version == hits[4].wire_version
    assert (hit.crop_bytes, hit.scene_bytes) == (len(hits[4].crop_jpeg), len(hits[4].scene_jpeg))
    # `tail --json` printed SELECT rowid, *, and `hits --json` SELECT *: the same, in order.
    store.db.conn.row_factory = sqlite3.Row
    row = store.db.conn.execute("SELECT rowid, * FROM hits WHERE hit_id = ?",
                                (hit.hit_id,)).fetchone()  # fmt: skip
    store.db.conn.row_factory = None
    assert json.dumps(hit.to_json()) == json.dumps(dict(row))
    assert list(hit.to_json(rowid=False)) == list(HIT_COLUMNS)


def test_the_reader_follows_searches_and_reads_pictures(stored, tmp_path):
    _, hits = stored
    reader = HitReader(tmp_path / "hits.db")
    try:
        reader.check()
        assert reader.last_rowid() == 10
        assert [h.rowid for h in reader.after(7)] == [8, 9, 10]
        assert [h.rowid for h in reader.after(0, limit=2)] == [1, 2]
        assert reader.after(10) == []
        recent = reader.recent(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), limit=3)
        assert [h.rowid for h in recent] == [10, 9, 8]  # the last stored first
        assert reader.recent(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)) == []

        def plates(query, limit=100, **kw):
            return [h.plate_text for h in reader.search(query, limit, **kw)]

        assert plates(HitQuery()) == [f"AB{n:05d}" for n in range(9, -1, -1)]
        assert plates(HitQuery(), 2, newest_first=False) == ["AB00000", "AB00001"]
        assert plates(HitQuery(plate="AB00003")) == ["AB00003"]
        assert plates(HitQuery(plate="AB0000?")) == []  # a plate, not a pattern
        assert plates(HitQuery(plate_pattern="AB0000[34]*")) == ["AB00004", "AB00003"]
        assert plates(HitQuery(plate_pattern="*7")) == ["AB00007"]
        t = T0 + dt.timedelta(seconds=3)
        assert plates(HitQuery(since=t, until=t + dt.timedelta(seconds=3))) == [
            "AB00005", "AB00004", "AB00003"]  # fmt: skip
        assert plates(HitQuery(node="edge2"), 2) == ["AB00009", "AB00007"]
        assert plates(HitQuery(node="edge2", camera="cam1")) == []
        assert plates(HitQuery(camera="cam1", since=t)) == ["AB00008", "AB00006", "AB00004"]
        assert plates(HitQuery(watchlist="stolen"), 1) == ["AB00009"]
        assert plates(HitQuery(watchlist="other")) == []
        assert reader.get("no-such-hit") is None
        assert reader.picture(hits[2].hit_id, "crop") == hits[2].crop_jpeg
        assert reader.picture(hits[2].hit_id, "scene") == hits[2].scene_jpeg
        assert reader.picture(hits[3].hit_id, "scene") is None  # sent without one
        assert reader.picture("no-such-hit", "crop") is None
    finally:
        reader.close()


def test_the_reader_never_writes_nor_makes_the_database(tmp_path, stored):
    missing = HitReader(tmp_path / "none" / "hits.db")
    with pytest.raises(FileNotFoundError, match="no collector database here"):
        missing.check()
    with pytest.raises(FileNotFoundError):
        missing.last_rowid()
    assert not (tmp_path / "none").exists()
    sqlite3.connect(tmp_path / "empty.db").close()
    with pytest.raises(FileNotFoundError, match="not a collector database"):
        HitReader(tmp_path / "empty.db").check()
    reader = HitReader(tmp_path / "hits.db")
    try:
        with reader.pool.connection() as db, pytest.raises(sqlite3.OperationalError,
                                                            match="readonly"):  # fmt: skip
            db.execute("DELETE FROM hits")
        assert reader.last_rowid() == 10
    finally:
        reader.close()


def test_readers_on_many_threads_share_a_few_connections(stored, tmp_path):
    reader = HitReader(tmp_path / "hits.db", connections=2)
    got: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def read() -> None:
        try:
            start.wait(10)
            for _ in range(30):
                got.append(len(reader.after(0)))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    try:
        assert not errors and got == [10] * 180
        assert 1 <= len(reader.pool._all) <= 2
    finally:
        reader.close()


def test_the_pool_makes_at_most_its_size(stored, tmp_path):
    pool = ReadPool(tmp_path / "hits.db", size=2)
    held = []
    with pool.connection() as a, pool.connection() as b:
        held += [a, b]
        assert a is not b
    with pool.connection() as c:
        assert c in held  # given back and lent again
    assert len(pool._all) == 2
    pool.close()


def test_console_hits_keep_their_shape(stored, tmp_path):
    """The console's JSON of a hit: the same keys, in the same order, as before the reader."""
    _, hits = stored
    lists = WatchlistStore(tmp_path / "watchlists.db")
    lists.close()
    data = ConsoleData(tmp_path / "hits.db", tmp_path / "watchlists.db")
    try:
        shown = data.hit(hits[1].hit_id)
        assert shown is not None
        agencies = ("agency", "camera_agency", "list_agency")
        assert list(shown) == ["rowid", *(f for f in HIT_FIELDS if f not in agencies), *agencies]
        assert "version" not in shown and shown["agency"] == ""
        assert shown["camera_agency"] == shown["list_agency"] == "local"
        assert [h["rowid"] for h in data.hits_after(8)] == [9, 10]
        assert data.last_rowid() == 10
        assert data.image(hits[1].hit_id, "crop") == hits[1].crop_jpeg
    finally:
        data.close()


def test_the_master_lists_reader(tmp_path):
    path = tmp_path / "watchlists.db"
    reader = WatchlistReader(path)
    with pytest.raises(FileNotFoundError):
        reader.lists()
    assert not path.exists()  # a reader never makes the store
    store = WatchlistStore(path)
    rows = [Entry(0, p, "stolen", "PL-POL", "stolen_vehicle", 2, "van") for p in
            ("AB123", "XY123", "AB999", "?B12*")]  # fmt: skip
    store.import_entries("stolen", rows, policy=ListPolicy("stolen", "exact"))
    store.import_entries("other", [Entry(0, "ZZ1", "other", "LT-POL", "alert")])
    store.import_entries("gone", [Entry(0, "ZZ2", "gone", "LT-POL", "alert")])
    store.drop_list("gone")
    store.close()
    try:
        (other, stolen) = reader.lists()  # active only, by name
        assert (stolen.policy, stolen.entries, stolen.active) == (
            ListPolicy("stolen", "exact"), 4, True)  # fmt: skip
        assert (other.policy.name, other.entries) == ("other", 1)
        assert [e.pattern for e in reader.entries("stolen")] == ["AB123", "XY123", "AB999",
                                                                 "?B12*"]  # fmt: skip
        first = reader.entries("stolen", limit=1)[0]
        assert isinstance(first, Entry) and first.agency == "PL-POL" and first.priority == 2
        assert [e.pattern for e in reader.entries("stolen", after_id=first.id, limit=2)] == [
            "XY123", "AB999"]  # fmt: skip
        found = reader.entries("stolen", pattern="*123*")
        assert [e.pattern for e in found] == ["AB123", "XY123"]
        assert reader.entries("nosuch") == []
        by_id = reader.entries_by_id([first.id, 10**6])
        assert by_id == [first]
        with pytest.raises(sqlite3.OperationalError, match="readonly"), \
                reader._pool.connection() as db:  # fmt: skip
            db.execute("DELETE FROM entries")
    finally:
        reader.close()
