"""The node's search of its reads, and its worker's judgement of queries (no sockets)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3

import nacl.signing
import pytest
from helpers.search_node import T0, FakeClock, add_read, query

from edge.core.search import TAG_SEARCH, SearchQuery, decode_answer, sign_query
from edge.core.watchlist.distance import plate_distance
from edge.node.outbox import Outbox
from edge.node.search import CameraPlace, ReadSearch, SearchWorker, folded_neighbours

H = dt.timedelta(hours=1)
KEY = nacl.signing.SigningKey(b"\x05" * 32)
PLACES = {
    "cam-north": CameraPlace(52.52, 13.40, "to Berlin"),
    "cam-south": CameraPlace(48.14, 11.58, "to Munich"),
    "cam-nowhere": CameraPlace(),
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0 - 30 * H)  # the reads are stored over the 30 hours to T0


@pytest.fixture
def outbox(tmp_path, clock):
    box = Outbox(tmp_path / "outbox.db", clock=clock, retention_s=24 * 3600, purge_every_s=1e9)
    yield box
    box.close()


@pytest.fixture
def search(outbox, clock):
    s = ReadSearch(outbox.path, retention_s=outbox.retention_s, cameras=PLACES, clock=clock)
    yield s
    s.close()


def fill(outbox: Outbox, clock: FakeClock, reads: list[tuple[str, float, str]]) -> None:
    """(plate, hours before T0, camera): each stored when seen (the clock set to it)."""
    for plate, hours_ago, camera in sorted(reads, key=lambda r: -r[1]):
        clock.t = (T0 - hours_ago * H).timestamp()
        add_read(outbox, plate, T0 - hours_ago * H, camera)
    clock.t = T0.timestamp()


def texts(found) -> list[tuple[str, str]]:
    reads, _ = found
    return [(r.text, r.camera) for r in reads]


def test_exact_finds_the_plate_on_each_camera_newest_first(outbox, clock, search):
    fill(outbox, clock, [("B123XY", 3, "cam-north"), ("B123XY", 1, "cam-south"),
                         ("B123XZ", 2, "cam-north"), ("K77AA", 2, "cam-north")])  # fmt: skip
    reads, total = search.find(query())
    assert [(r.text, r.camera) for r in reads] == [("B123XY", "cam-south"), ("B123XY", "cam-north")]
    assert total == 2
    r = reads[0]
    assert r.seen_at == T0 - H and r.direction == "northbound" and r.vehicle_colour == "blue"
    assert (r.lat, r.lon) == (48.14, 11.58) and r.crop_jpeg.startswith(b"\xff\xd8\xff")
    assert r.country == "DE" and r.confidence == 0.9 and r.vehicle_type == "car"


def test_since_and_until(outbox, clock, search):
    fill(outbox, clock, [("B123XY", h, "cam-north") for h in (1, 5, 10, 20)])
    got = search.find(query(since=T0 - 11 * H, until=T0 - 4 * H))
    assert [r.seen_at for r in got[0]] == [T0 - 5 * H, T0 - 10 * H]


def test_never_beyond_retention_even_before_the_purge(outbox, clock, search):
    fill(outbox, clock, [("B123XY", h, "cam-north") for h in (1, 23, 25, 29)])
    assert outbox.stats()["reads"] == 4  # not purged yet
    reads, total = search.find(query(since=T0 - 48 * H))
    assert [r.seen_at for r in reads] == [T0 - H, T0 - 23 * H] and total == 2
    # a read stored just now but seen before the retention (a late upload) is not answered
    add_read(outbox, "B123XY", T0 - 26 * H)
    assert search.find(query(since=T0 - 48 * H))[1] == 2
    # and with the clock on, what ages past the retention goes out of the answers
    clock.advance(2 * 3600)
    assert [r.seen_at for r in search.find(query(since=T0 - 48 * H))[0]] == [T0 - H]


def test_a_node_keeping_nothing_answers_nothing(tmp_path, clock):
    box = Outbox(tmp_path / "o.db", clock=clock, retention_s=3600)
    add_read(box, "B123XY", T0 - dt.timedelta(minutes=1))
    s = ReadSearch(box.path, retention_s=0, clock=clock)
    assert s.find(query()) == ([], 0)
    s.close()
    box.close()


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("B12?XY", {"B123XY", "B124XY"}),
        ("*23X*", {"B123XY", "B123XZ", "AB23XQ", "XB123XY"}),
        ("B1*Y", {"B123XY", "B124XY", "B1Y"}),
        ("??23X?", {"AB23XQ", "B123XY", "B123XZ"}),
        ("?B12??Y", {"XB123XY"}),
    ],
)
def test_wildcards(outbox, clock, search, pattern, expected):
    fill(outbox, clock, [(p, 2, "cam-north") for p in
                         ("B123XY", "B124XY", "B123XZ", "AB23XQ", "B1Y", "XB123XY")])  # fmt: skip
    got = {r.text for r in search.find(query(mode="wildcard", pattern=pattern))[0]}
    assert got == expected


def test_fuzzy_uses_the_watchlist_distance(outbox, clock, search):
    plates = ["B123XY", "8123XY", "B123X", "B1Z3XY", "B123YX", "B128XY", "B1238XY", "A123XZ",
              "81Z3XY", "K99ZZ"]  # fmt: skip
    fill(outbox, clock, [(p, 2, "cam-north") for p in plates])
    for limit in (0.25, 0.5, 1.0, 1.25, 1.75):
        got = {r.text for r in search.find(query(mode="fuzzy", max_distance=limit))[0]}
        want = {p for p in plates if plate_distance("B123XY", p, limit) is not None}
        assert got == want, limit
    assert {"B123XY", "8123XY", "B123X", "B123YX"} <= want  # a confusion, a deletion, a swap
    assert "A123XZ" not in want


def test_the_neighbourhood_holds_every_plate_one_edit_away():
    n = folded_neighbours("8123XY")
    assert {"8123XY", "123XY", "81234XY", "8123YX", "8A23XY"} <= n
    assert "8123" not in n


def test_cameras_and_area(outbox, clock, search):
    fill(outbox, clock, [("B123XY", 1, "cam-north"), ("B123XY", 2, "cam-south"),
                         ("B123XY", 3, "cam-nowhere"), ("B123XY", 4, "cam-gone")])  # fmt: skip
    assert {c for _, c in texts(search.find(query(cameras=("cam-south", "cam-gone"))))} == {
        "cam-south", "cam-gone"}  # fmt: skip
    berlin = (52.0, 13.0, 53.0, 14.0)
    assert texts(search.find(query(area=berlin))) == [("B123XY", "cam-north")]
    assert texts(search.find(query(area=berlin, cameras=("cam-south",)))) == []
    reads, _ = search.find(query(cameras=("cam-gone", "cam-nowhere")))
    assert all(r.lat is None for r in reads)  # no place known: none given


def test_max_rows_sends_the_newest_and_counts_them_all(outbox, clock, search):
    fill(outbox, clock, [("B123XY", h / 10, "cam-north") for h in range(1, 31)])
    reads, total = search.find(query(max_rows=5))
    assert total == 30 and [r.seen_at for r in reads] == [T0 - h * H / 10 for h in range(1, 6)]


def test_an_old_outbox_is_made_searchable(tmp_path, clock):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE reads (id INTEGER PRIMARY KEY AUTOINCREMENT, stored REAL NOT NULL,
            seen_at TEXT NOT NULL, camera TEXT NOT NULL, plate TEXT NOT NULL, confidence REAL,
            details TEXT NOT NULL, crop BLOB, bytes INTEGER NOT NULL);
        CREATE INDEX reads_stored ON reads (stored);
    """)
    db.execute("INSERT INTO reads (stored, seen_at, camera, plate, confidence, details, crop,"
               " bytes) VALUES (?, ?, 'cam-north', '8123XY', 0.8, ?, NULL, 10)",
               (T0.timestamp() - 60, "2026-03-03T11:59:00.000000Z",
                json.dumps({"formatted": "8 123 XY"})))  # fmt: skip
    db.commit()
    db.close()
    box = Outbox(path, clock=clock)
    clock.t = T0.timestamp()
    s = ReadSearch(path, retention_s=box.retention_s, clock=clock)
    (r,) = s.find(query(mode="fuzzy", max_distance=0.5))[0]
    assert r.text == "8123XY" and r.formatted == "8 123 XY" and r.crop_jpeg == b""
    assert r.direction == "" and r.lat is None
    s.close()
    box.close()
    assert "folded" in {c[1] for c in sqlite3.connect(path).execute("PRAGMA table_info(reads)")}


# ---------------------------------------------------------------- the worker's judgement


def worker(search, clock, node="edge1") -> SearchWorker:
    clock.t = max(clock.t, T0.timestamp())
    return SearchWorker(search, node_id=node, verify_key=KEY.verify_key, clock=clock)


def answered(w: SearchWorker, frames: list[bytes]):
    w.handle(frames)
    out = []
    while not w.answers.empty():
        out.append(decode_answer(w.answers.get()))
    return out


def test_a_good_query_is_answered_in_chunks_and_logged(outbox, clock, search, caplog):
    fill(outbox, clock, [("B123XY", h / 100, "cam-north") for h in range(1, 451)])
    w = worker(search, clock)
    q = query()
    with caplog.at_level(logging.INFO, logger="edge.node.search"):
        parts = answered(w, sign_query(q, KEY))
    assert [len(p.reads) for p in parts] == [200, 200, 50] and parts[-1].done
    assert {p.total for p in parts} == {450} and parts[0].retention_h == 24
    assert all(p.query_id == q.query_id and p.node == "edge1" and not p.refused for p in parts)
    line = next(r.getMessage() for r in caplog.records if q.query_id in r.getMessage())
    assert "CASE-17" in line and "ines" in line and "de-police" in line and "450" in line


def _refused(w, frames) -> str:
    (answer,) = answered(w, frames)
    assert answer.done and not answer.reads
    return answer.refused


def test_refusals(outbox, clock, search):
    w = worker(search, clock)
    forged = sign_query(query(), nacl.signing.SigningKey(b"\x06" * 32))
    assert _refused(w, forged).startswith("forged")
    assert _refused(w, sign_query(query(nodes=("edge2",)), KEY)) == "not for this node"
    old = query(issued_at=T0 - dt.timedelta(minutes=6))
    assert _refused(w, sign_query(old, KEY)).startswith("expired")
    ahead = query(issued_at=T0 + dt.timedelta(minutes=2))
    assert _refused(w, sign_query(ahead, KEY)).startswith("expired")
    assert _refused(w, [TAG_SEARCH, b"{}", b"x"]).startswith("forged")  # no signature
    header = b'{"id": "0123456789abcdef0123"}'
    reason = _refused(w, [TAG_SEARCH, header, KEY.sign(TAG_SEARCH + header).signature])
    assert reason.startswith("malformed")
    no_case = query(case_ref="")
    assert _refused(w, sign_query(no_case, KEY)).startswith("malformed")


def test_a_replayed_query_is_refused_for_ten_minutes(outbox, clock, search):
    w = worker(search, clock)
    frames = sign_query(query(), KEY)
    assert not answered(w, frames)[0].refused
    assert _refused(w, frames).startswith("replayed")
    # a forged copy of a query not yet seen does not spoil the real one
    q = query()
    assert _refused(w, sign_query(q, nacl.signing.SigningKey(b"\x06" * 32))).startswith("forged")
    assert not answered(w, sign_query(q, KEY))[0].refused
    clock.advance(4 * 60)  # still fresh, still remembered
    assert _refused(w, frames).startswith("replayed")


def test_a_busy_worker_refuses_rather_than_queue_without_end(outbox, clock, search):
    w = SearchWorker(search, node_id="edge1", verify_key=KEY.verify_key, clock=clock,
                     max_waiting=2)  # not started: nothing takes the queries  # fmt: skip
    qs = [query() for _ in range(3)]
    for q in qs:
        w.submit(sign_query(q, KEY))
    busy = decode_answer(w.answers.get_nowait())
    assert busy.query_id == qs[2].query_id and busy.refused.startswith("busy")


def test_query_types_are_frozen_records():
    assert isinstance(query(), SearchQuery)
