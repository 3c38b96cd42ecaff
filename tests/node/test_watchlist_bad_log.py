"""A bad row in the master change log: the collector never serves it as a change (a snapshot of
the list instead), and an edge that meets a change it cannot apply fetches the list whole and
says it is not in sync until it has, rather than fetching the change again forever."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
import zmq
from test_watchlist_sync import FAST, entry, eventually, ids

from edge.collector.watchlist.master import WatchlistStore
from edge.collector.watchlist.server import WatchlistServer
from edge.node.watchlist.sync import WatchlistSync


class RawServer(WatchlistServer):
    """A collector that serves its log as it is (as one before this check did)."""

    def _checked_row(self, store, change_id, name, body, seq=None):  # type: ignore[override]
        try:
            return json.loads(body)
        except ValueError:
            return None


@pytest.fixture
def loopback(tmp_path):
    """start(server class) -> a master store and its server; edge(name) -> a started edge."""
    ctx = zmq.Context()
    made: list = []

    class Site:
        store: WatchlistStore
        server: WatchlistServer

        def start(self, kind=WatchlistServer):
            self.store = WatchlistStore(tmp_path / "master.db")
            self.server = kind(tmp_path / "master.db", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                               poll_s=0.01, **FAST)  # fmt: skip
            self.server.start(ctx)
            return self

        def edge(self, name="e"):
            sync = WatchlistSync(tmp_path / f"{name}.db", self.server.snapshot_endpoint, ctx=ctx,
                                 updates_endpoint=self.server.publish_endpoint,
                                 request_timeout_s=2.0, **FAST)  # fmt: skip
            sync.start()
            made.append(sync)
            return sync

    site = Site()
    yield site
    for sync in made:
        sync.stop()
        sync.replica.close()
    if hasattr(site, "server"):
        site.server.stop()
        site.store.close()
    ctx.destroy(linger=0)


def add_behind_the_stores_back(path, body_of, pattern="NEW1234", list_name="stolen") -> int:
    """Write an entry and a change log row as another tool might: `body_of(seq, id, epoch)`
    gives the row's body.  Returns the row's update number."""
    db = sqlite3.connect(path)
    try:
        epoch = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
        seq = db.execute("SELECT seq FROM lists WHERE name = ?", (list_name,)).fetchone()[0] + 1
        now = time.time()
        cur = db.execute(
            "INSERT INTO entries (pattern, list, agency, category, priority, reason, country, "
            "valid_from, valid_until, added_by, added_at, updated_at) "
            "VALUES (?, ?, 'PL-KGP', 'stolen_vehicle', 5, '', NULL, NULL, NULL, 'test', ?, ?)",
            (pattern, list_name, now, now),
        )
        db.execute("INSERT INTO changes (list, seq, at, body) VALUES (?, ?, ?, ?)",
                   (list_name, seq, now, body_of(seq, cur.lastrowid, epoch)))  # fmt: skip
        db.execute("UPDATE lists SET seq = ? WHERE name = ?", (seq, list_name))
        db.commit()
        return seq
    finally:
        db.close()


def bad_entry(seq: int, entry_id: int, epoch: str) -> str:
    """An upsert no edge can take: its plate pattern is not one."""
    return json.dumps({"v": 1, "epoch": epoch, "list": "stolen", "seq": seq, "op": "upsert",
                       "entries": [[entry_id, "NEW!234", "PL-KGP", "stolen_vehicle", 5, "",
                                    None, None, None, "test"]]})  # fmt: skip


def test_a_bad_log_row_is_answered_with_a_snapshot_and_never_published(loopback):
    collector = loopback.start()
    store, path = collector.store, collector.server.database
    store.import_entries("stolen", [entry("AB123CD")])
    edge = collector.edge()
    assert edge.wait_synced(5)

    # Live: a row that is not even JSON, then one whose entry no edge can take.
    add_behind_the_stores_back(path, lambda seq, i, epoch: "{not json", pattern="LIVE111")
    add_behind_the_stores_back(path, bad_entry, pattern="LIVE222")
    store.import_entries("stolen", [entry("GOOD999")])  # a good update after them
    eventually(lambda: ids(edge.matcher, "GOOD999"), 5, "the good update")
    assert ids(edge.matcher, "LIVE111") and ids(edge.matcher, "LIVE222")  # from the snapshot
    assert collector.server.counters.get("snapshots_for_bad_rows", 0) >= 1
    assert collector.server.counters.get("bad_log_rows", 0) >= 2
    status = edge.status()
    assert status["synced"] is True and "unsynced" not in status
    assert status["lists"]["stolen"] == store.lists()["stolen"].seq
    edge.stop()
    edge.replica.close()

    # Away while a bad row was written: back, it gets the list whole, once.
    seq = add_behind_the_stores_back(path, bad_entry)
    back = collector.edge()
    assert back.wait_synced(5)
    assert ids(back.matcher, "NEW1234") and ids(back.matcher, "AB123CD")
    status = back.status()
    assert status["synced"] is True and status["lists"]["stolen"] == seq
    assert status["snapshots"] == 1 and "refused" not in status


def test_a_change_the_edge_cannot_apply_sends_it_to_a_snapshot_and_it_says_so(loopback):
    raw = loopback.start(RawServer)
    path = raw.server.database
    raw.store.import_entries("stolen", [entry("AB123CD")])
    edge = raw.edge()
    assert edge.wait_synced(5)
    assert edge.status()["synced"] is True

    # An entry that makes a snapshot fail too, at first; then the bad change.
    db = sqlite3.connect(path)
    db.execute("INSERT INTO entries (pattern, list, agency, category, priority, reason, "
               "added_by, added_at, updated_at) VALUES ('BAD!!', 'stolen', 'X', 'c', 5, "
               "'', 'test', 0, 0)")  # fmt: skip
    db.commit()
    add_behind_the_stores_back(path, bad_entry)
    status = eventually(lambda: (s := edge.status()).get("unsynced") and s, 5, "unsynced")
    assert status["synced"] is False and "stolen" in status["unsynced"]
    assert status.get("fallbacks", 0) == 1

    db.execute("DELETE FROM entries WHERE pattern = 'BAD!!'")  # mended at the centre
    db.commit()
    db.close()
    eventually(lambda: edge.status()["synced"], 10, "synced again after the snapshot")
    status = edge.status()
    assert "unsynced" not in status and status["snapshots"] >= 1
    assert ids(edge.matcher, "NEW1234") and ids(edge.matcher, "AB123CD")
    assert status["lists"]["stolen"] == raw.store.lists()["stolen"].seq

    raw.store.import_entries("stolen", [entry("AFTER11")])  # and updates flow again
    eventually(lambda: ids(edge.matcher, "AFTER11"), 5, "the next update")
    assert edge.status().get("fallbacks", 0) == 1
