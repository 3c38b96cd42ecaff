"""The edge's replica: numbered updates in order, all or nothing, snapshots staged, reloads."""

from __future__ import annotations

import sqlite3

import pytest

from edge.core.watchlist.entry import Entry, ListPolicy
from edge.core.watchlist.protocol import Update
from edge.node.watchlist.replica import ReplicaError, WatchlistReplica

NOW = 1_900_000_000.0


def row(eid, pattern, list_name="stolen", **kw):
    e = Entry(eid, pattern, list_name, kw.pop("agency", "PL-KGP"), "stolen_vehicle", **kw)
    return tuple(e)


@pytest.fixture
def replica(tmp_path):
    r = WatchlistReplica(tmp_path / "r.db")
    r.new_epoch("E1")
    yield r
    r.close()


def policy(seq=1, name="stolen"):
    return Update("E1", name, seq, "policy", policy=ListPolicy(name))


def test_updates_apply_in_order_and_rebuild_the_same(replica):
    rows = (row(1, "AB123CD", country="PL", reason="ż"), row(2, "XY?99?", valid_until=NOW))
    replica.apply([policy(), Update("E1", "stolen", 2, "upsert", rows=rows)])
    replica.apply([Update("E1", "stolen", 3, "delete", ids=(2,))])
    assert replica.lists()["stolen"].seq == 3
    (e,) = replica.entries("stolen")
    assert e == Entry(1, "AB123CD", "stolen", "PL-KGP", "stolen_vehicle", country="PL", reason="ż")
    m = replica.build_matcher()
    assert [h.entry for h in m.match("AB123CD", now=NOW)] == [e]


def test_out_of_line_updates_change_nothing(replica):
    replica.apply([policy()])
    before = replica.entries()
    with pytest.raises(ReplicaError, match="expected 2"):
        replica.apply([Update("E1", "stolen", 3, "upsert", rows=(row(1, "AB123CD"),))])
    with pytest.raises(ReplicaError, match="master store"):
        replica.apply([Update("E2", "stolen", 2, "upsert", rows=(row(1, "AB123CD"),))])
    with pytest.raises(ReplicaError, match="list unknown"):
        replica.apply([Update("E1", "other", 1, "upsert", rows=(row(1, "AB123CD", "other"),))])
    # a batch fails whole: the good first update is rolled back with the bad second one
    with pytest.raises(ReplicaError):
        replica.apply([
            Update("E1", "stolen", 2, "upsert", rows=(row(5, "NEW1", agency="NEW-AGENCY"),)),
            Update("E1", "stolen", 9, "delete", ids=(5,)),
        ])  # fmt: skip
    assert replica.entries() == before and replica.lists()["stolen"].seq == 1
    # the name met in the rolled-back batch gets a code of its own when it comes again
    replica.apply([Update("E1", "stolen", 2, "upsert", rows=(row(6, "NEW2", agency="LT-VP"),))])
    assert [e.agency for e in replica.entries()] == ["LT-VP"]


def test_a_staged_snapshot_replaces_the_list_at_once(replica):
    replica.apply([policy(), Update("E1", "stolen", 2, "upsert", rows=(row(1, "OLD1"),))])
    replica.stage_begin()
    replica.stage_rows([row(7, "NEW7"), row(8, "NEW8")])
    assert [e.pattern for e in replica.entries()] == ["OLD1"]  # not yet
    replica.stage_commit("E1", "stolen", ListPolicy("stolen", "exact"), 40, True)
    assert [e.pattern for e in replica.entries()] == ["NEW7", "NEW8"]
    assert replica.lists()["stolen"].seq == 40
    assert replica.lists()["stolen"].policy.match == "exact"
    with pytest.raises(ReplicaError):
        replica.stage_commit("E9", "stolen", ListPolicy("stolen"), 41, True)


def test_compact_drops_expired_entries(replica):
    rows = (row(1, "AB1", valid_until=NOW - 1), row(2, "AB2", valid_until=NOW + 1), row(3, "AB3"))
    replica.apply([policy(), Update("E1", "stolen", 2, "upsert", rows=rows)])
    assert replica.compact(NOW) == 1
    assert [e.id for e in replica.entries()] == [2, 3]


def test_a_new_epoch_marks_every_list_for_a_full_fetch(replica):
    replica.apply([policy(), Update("E1", "stolen", 2, "upsert", rows=(row(1, "AB1"),))])
    replica.new_epoch("E2")
    assert replica.epoch == "E2" and replica.lists()["stolen"].seq == -1
    assert len(replica.entries()) == 1  # still matching until it is fetched again


def test_reopening_keeps_everything(tmp_path):
    r = WatchlistReplica(tmp_path / "r.db")
    r.new_epoch("E1")
    r.apply([policy(), Update("E1", "stolen", 2, "upsert", rows=(row(1, "AB1", country="DE"),))])
    r.close()
    again = WatchlistReplica(tmp_path / "r.db")
    assert again.epoch == "E1" and again.entries()[0].country == "DE"
    again.apply([Update("E1", "stolen", 3, "upsert", rows=(row(2, "AB2", country="LT"),))])
    assert [e.country for e in again.entries()] == ["DE", "LT"]
    again.close()


def test_a_replica_of_another_layout_starts_afresh(tmp_path, caplog):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, pattern TEXT)")
    db.execute("INSERT INTO entries VALUES (1, 'AB1')")
    db.commit()
    db.close()
    r = WatchlistReplica(path)
    assert r.entries() == [] and r.epoch is None
    assert "another layout" in caplog.text
    r.close()
