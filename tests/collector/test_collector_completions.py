"""Early hits completed at the collector: the completion updates the stored hit, in
whatever order the two arrive, once; hits of every wire version, and databases made
before completions, are still taken."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3

import pytest
from helpers.link import fake_jpeg, hit_id, make_hit

from edge.collector.hits import HIT_COLUMNS, HIT_DEFAULTS, HitReader
from edge.collector.store import HitStore
from edge.core.errors import ProtocolError
from edge.core.link_protocol import TAG_HIT_V3, HitPlate, decode

NOW = dt.datetime(2026, 5, 1, 12, 0, 9, tzinfo=dt.UTC)


def completion(early, n: int = 900, **kw):
    """The pass's final read of `early`: another text, crop and vehicle."""
    return dataclasses.replace(
        early, hit_id=hit_id(n), completes=early.hit_id,
        plate=HitPlate(text="AB00008", raw="AB 00008", formatted="AB 00008", confidence=0.97),
        crop_jpeg=fake_jpeg(300, b"\x77"), vehicle_type="truck", vehicle_colour="white", **kw)


@pytest.fixture
def store(tmp_path):
    s = HitStore(tmp_path / "hits.db")
    yield s
    s.close()


def test_a_completion_updates_the_early_hit_in_place_once(store, tmp_path):
    early = make_hit(1)
    assert store.commit([early], NOW) == ([early.hit_id], [])
    done = completion(early)
    assert store.commit([done], NOW + dt.timedelta(seconds=5)) == ([done.hit_id], [])
    assert store.commit([done], NOW) == ([], [done.hit_id])  # sent again: a duplicate
    assert store.commit([early], NOW) == ([], [early.hit_id])
    reader = HitReader(tmp_path / "hits.db")
    try:
        (hit,) = reader.after(0)
        assert hit.hit_id == early.hit_id and hit.plate_text == "AB00008"
        assert hit.revision == 1 and hit.completed_by == done.hit_id
        assert (hit.vehicle_type, hit.vehicle_colour) == ("truck", "white")
        assert hit.received_at.startswith("2026-05-01T12:00:09")  # when it was raised
        assert reader.picture(early.hit_id, "crop") == done.crop_jpeg
        assert reader.picture(early.hit_id, "scene") == early.scene_jpeg  # none came new
        assert [(seq, h.hit_id) for seq, h in reader.changed_after(0)] == [(1, early.hit_id)]
        assert reader.changed_after(1) == [] and reader.last_change() == 1
    finally:
        reader.close()


def test_a_completion_that_comes_first_stands_for_the_early_hit(store):
    early = make_hit(2)
    done = completion(early)
    assert store.commit([done, early], NOW) == ([done.hit_id], [early.hit_id])
    assert store.hit_ids() == [early.hit_id]
    (text,) = store.db.execute("SELECT plate_text FROM hits").fetchone()
    assert text == "AB00008"


def test_a_node_completes_only_its_own_hits(store):
    early = make_hit(3, node="edge1")
    store.commit([early], NOW)
    forged = dataclasses.replace(completion(early), node="edge2")
    store.commit([forged], NOW)
    rows = store.db.execute("SELECT hit_id, node, plate_text FROM hits ORDER BY rowid").fetchall()
    assert rows == [(early.hit_id, "edge1", "AB00003"), (forged.hit_id, "edge2", "AB00008")]


def test_every_wire_version_is_taken_and_old_databases_open(tmp_path):
    # a database made before completions: the hits table without their columns
    old = [c for c in HIT_COLUMNS if c not in HIT_DEFAULTS]
    db = sqlite3.connect(tmp_path / "hits.db")
    db.execute(f"CREATE TABLE hits ({', '.join(old)}, PRIMARY KEY (hit_id))")
    db.execute(f"INSERT INTO hits ({', '.join(old)}) VALUES ({', '.join('?' * len(old))})",
               [hit_id(0), "edge1", "cam1", "2026-05-01T12:00:00.000000Z", "x", None, None,
                "", "", "AB00000", "", "", None, 0.9, "stolen", "e0", "", "exact", 0, 1, "",
                2, 0, 0])
    db.commit()
    db.close()
    store = HitStore(tmp_path / "hits.db")
    try:
        v1, v2, v3 = make_hit(1), make_hit(2), make_hit(3)
        hits = [decode(v1.encode(version=1)), decode(v2.encode(version=2)),
                decode(v3.encode(version=3))]
        assert [h.wire_version for h in hits] == [1, 2, 3]
        done = decode(completion(v2).encode())
        assert done.wire_version == 3 and done.completes == v2.hit_id
        new, dups = store.commit([*hits, done], NOW)
        assert new == [v1.hit_id, v2.hit_id, v3.hit_id, done.hit_id] and dups == []
        rows = store.db.execute(
            "SELECT hit_id, version, revision, reading, plate_text FROM hits ORDER BY rowid")
        assert rows.fetchall() == [(hit_id(0), 2, 0, "", "AB00000"),
                                   (v1.hit_id, 1, 0, "", "AB00001"),
                                   (v2.hit_id, 3, 1, "", "AB00008"),
                                   (v3.hit_id, 3, 0, "", "AB00003")]
    finally:
        store.close()


def test_a_v3_header_says_what_it_completes_and_the_reading_matched():
    early = make_hit(4)
    hit = dataclasses.replace(
        completion(early), match=dataclasses.replace(early.match, reading="AB0OOO4"))
    frames = hit.encode()
    assert frames[0] == TAG_HIT_V3
    header = json.loads(frames[1])
    assert header["completes"] == early.hit_id and header["match"]["reading"] == "AB0OOO4"
    assert header["vehicle"] == {"type": "truck", "colour": "white"}
    assert decode(frames) == hit
    for bad in ({"completes": 5}, {"completes": "no"}, {"vehicle": []},
                {"completes": hit.hit_id}):
        with pytest.raises(ProtocolError):
            decode([TAG_HIT_V3, json.dumps({**header, **bad}).encode(), *frames[2:]])
