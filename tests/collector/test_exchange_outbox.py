"""The outbox without a server: a sent message's body is deleted, not rewritten; its id is
kept for the dedupe until purged; the file stays as big as the backlog at its most."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from edge.collector.exchange.outbox import Outbox

PL = "pl-sg"
SUBJECT = "in.pl-sg.from.lt-vsat.hit"
BODY = os.urandom(100_000)  # a hit with its pictures, about


def fill(outbox: Outbox, start: int, n: int) -> list[int]:
    with outbox.transaction() as db:
        for i in range(start, start + n):
            assert outbox.add(db, PL, SUBJECT, f"hit:{i}", BODY)
    return [r.id for r in outbox.next_for(PL, n)]


def sent(outbox: Outbox, ids: list[int]) -> None:
    with outbox.transaction():
        outbox.mark_sent(ids)


def test_a_sent_message_leaves_only_its_id_and_is_not_queued_again(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "x.db")
    try:
        ids = fill(outbox, 0, 3)
        sent(outbox, ids[:2])
        assert [r.msg_id for r in outbox.next_for(PL)] == ["hit:2"]
        assert outbox.backlog() == {PL: 1}
        assert outbox.db.execute("SELECT count(*) FROM outbox").fetchone() == (1,)  # bodies gone
        assert outbox.sent_count() == 2
        assert not outbox.add_one(PL, SUBJECT, "hit:0", BODY)  # sent before: not again
        assert not outbox.add_one(PL, SUBJECT, "hit:2", BODY)  # queued: not twice
        assert outbox.add_one("lv-vp", "in.lv-vp.from.lt-vsat.hit", "hit:0", BODY)  # another
        assert outbox.purge_sent(older_than_s=3600) == 0
        assert outbox.purge_sent(older_than_s=-1, limit=1) == 1  # bounded, oldest first
        assert outbox.purge_sent(older_than_s=-1) == 1
        assert outbox.add_one(PL, SUBJECT, "hit:0", BODY)  # forgotten: queued again
    finally:
        outbox.close()


def test_marking_sent_writes_no_body_again(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "x.db")
    wal = tmp_path / "x.db-wal"
    try:
        outbox.db.execute("PRAGMA wal_autocheckpoint=0")  # the WAL holds every page written
        ids = fill(outbox, 0, 10)
        before = wal.stat().st_size
        assert before > 10 * len(BODY)  # the bodies, written once
        sent(outbox, ids)
        # a few pages (of 16 KB), not the ten bodies again
        assert wal.stat().st_size - before < 0.2 * before
    finally:
        outbox.close()


def test_the_file_stays_as_big_as_the_backlog(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "x.db")
    try:
        sizes = []
        for k in range(6):
            sent(outbox, fill(outbox, k * 20, 20))
            outbox.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            sizes.append((tmp_path / "x.db").stat().st_size)
        assert sizes[-1] <= sizes[0] * 1.2, sizes  # the freed pages are used again
    finally:
        outbox.close()


def test_a_new_outbox_has_pages_of_4_kb(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "x.db")
    try:
        assert outbox.db.execute("PRAGMA page_size").fetchone() == (4096,)
        assert outbox.db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        outbox.close()


def test_rows_an_older_version_marked_sent_move_to_the_ids(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.db")
    db.executescript("""
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, partner TEXT NOT NULL, subject TEXT NOT NULL,
            msg_id TEXT NOT NULL, body BLOB NOT NULL, added_at REAL NOT NULL,
            sent_at REAL, tries INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '');
        CREATE UNIQUE INDEX outbox_msg ON outbox(partner, msg_id);
    """)
    now = time.time()
    db.executemany("INSERT INTO outbox (partner, subject, msg_id, body, added_at, sent_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)", [(PL, SUBJECT, "hit:old", b"x", now, now),
                                                 (PL, SUBJECT, "hit:new", b"y", now, None)])
    db.commit()
    db.close()
    outbox = Outbox(tmp_path / "x.db")
    try:
        assert [(r.msg_id, r.body) for r in outbox.next_for(PL)] == [("hit:new", b"y")]
        assert outbox.sent_count() == 1 and not outbox.add_one(PL, SUBJECT, "hit:old", b"x")
    finally:
        outbox.close()


def test_taking_sent_rows_out_is_not_synced_adding_always_is(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "x.db")
    try:
        ids = fill(outbox, 0, 2)
        with outbox.transaction(synced=False) as db:
            assert db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL: no fsync
            outbox.mark_sent(ids[:1])
        assert outbox.db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL again
        try:
            with outbox.transaction(synced=False) as db:
                outbox.add(db, PL, SUBJECT, "hit:new", BODY)
        except RuntimeError as e:
            assert "not synced" in str(e)
        else:
            raise AssertionError("an unsynced transaction added a row")
        assert [r.msg_id for r in outbox.next_for(PL)] == ["hit:1"]  # rolled back
        assert outbox.db.execute("PRAGMA synchronous").fetchone() == (2,)
    finally:
        outbox.close()


def test_bodies_in_the_log_are_written_once_and_their_segments_go(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "x.db", log_bodies=True)
    outbox.bodies.segment_bytes = 3 * len(BODY)  # a segment every three bodies
    logs = tmp_path / "x.db-bodies"
    try:
        outbox.db.execute("PRAGMA wal_autocheckpoint=0")
        outbox.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        ids = fill(outbox, 0, 7)  # segments 1, 2 and 3 (this one being written)
        assert outbox.db.execute("SELECT count(*) FROM outbox WHERE seg IS NOT NULL"
                                 ).fetchone() == (7,)
        assert (tmp_path / "x.db-wal").stat().st_size < len(BODY)  # no body in SQLite
        assert sum(p.stat().st_size for p in logs.iterdir()) == 7 * len(BODY)
        assert [r.body for r in outbox.next_for(PL)] == [BODY] * 7
        assert sorted(p.name for p in logs.iterdir()) == [f"0000000{i}.body" for i in (1, 2, 3)]
        with outbox.transaction(synced=False):
            outbox.mark_sent(ids[:4])  # segment 1 and one of segment 2
        assert outbox.reclaim() == 1
        assert sorted(p.name for p in logs.iterdir()) == ["00000002.body", "00000003.body"]
        small = outbox.add_one(PL, SUBJECT, "list:x", b"{}")  # a small body stays in its row
        assert small and outbox.next_for(PL)[-1].body == b"{}"
        with outbox.transaction(synced=False):
            outbox.mark_sent([r.id for r in outbox.next_for(PL)])
        assert outbox.reclaim() == 1  # segment 3 is still being written
        assert [p.name for p in logs.iterdir()] == ["00000003.body"]
    finally:
        outbox.close()


def test_a_rolled_back_body_is_left_to_its_segment_and_a_reopened_log_starts_anew(
        tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "x.db", log_bodies=True)
    try:
        try:
            with outbox.transaction() as db:
                outbox.add(db, PL, SUBJECT, "hit:gone", BODY)
                raise OSError("the disk is full")
        except OSError:
            pass
        fill(outbox, 0, 1)
    finally:
        outbox.close()
    outbox = Outbox(tmp_path / "x.db", log_bodies=True)  # after a restart
    try:
        fill(outbox, 1, 1)
        assert [(r.msg_id, r.body) for r in outbox.next_for(PL)] == [("hit:0", BODY),
                                                                    ("hit:1", BODY)]
        assert outbox.bodies.segment == 2  # its own segment
        with outbox.transaction(synced=False):
            outbox.mark_sent([r.id for r in outbox.next_for(PL)])
        assert outbox.reclaim() == 1  # the first, with the rolled-back body in it
    finally:
        outbox.close()


def test_a_body_whose_segment_is_gone_is_dropped_not_stuck(tmp_path: Path, caplog) -> None:
    outbox = Outbox(tmp_path / "x.db", log_bodies=True)
    try:
        fill(outbox, 0, 2)
        outbox.bodies.close()
        (tmp_path / "x.db-bodies" / "00000001.body").unlink()  # by hand
        assert outbox.next_for(PL) == []
        assert "the body of hit:0 is lost" in caplog.text and outbox.backlog() == {}
    finally:
        outbox.close()


def parts_of(i: int) -> tuple[bytes, ...]:
    """A hit's body in pieces, as `encode_hit_parts` gives it (a header, the pictures)."""
    return (b"ANPX", f"header {i}".encode(), os.urandom(20_000), os.urandom(60_000))


def test_bodies_added_in_pieces_come_out_whole_from_memory_and_from_the_log(
        tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "x.db", log_bodies=True)
    bodies = {i: parts_of(i) for i in range(6)}
    try:
        assert outbox.add_one(PL, SUBJECT, "hit:0", bodies[0])
        fill(outbox, 100, 1)
        with outbox.transaction():
            outbox.mark_sent([r.id for r in outbox.next_for(PL) if r.msg_id == "hit:100"])
        with outbox.transaction() as db:
            # queued before, sent before, twice in the batch: each once, in order
            items = [(PL, SUBJECT, f"hit:{i}", bodies[i]) for i in (0, 1, 2, 2, 3)]
            items.append((PL, SUBJECT, "hit:100", BODY))
            items.append(("lv-vp", "in.lv-vp.from.lt-vsat.hit", "hit:1", bodies[1]))
            assert outbox.add_many(db, items) == 4
        rows = outbox.next_for(PL)
        assert [(r.msg_id, r.body) for r in rows] == [
            (f"hit:{i}", b"".join(bodies[i])) for i in (0, 1, 2, 3)]
        assert [r.size for r in rows] == [sum(map(len, bodies[i])) for i in (0, 1, 2, 3)]
        assert rows[1].parts == bodies[1]  # just written: from memory, not read back
        assert outbox.next_for(PL)[1].parts == (b"".join(bodies[1]),)  # again: from the log
    finally:
        outbox.close()
    outbox = Outbox(tmp_path / "x.db", log_bodies=True)  # after a restart: from the log
    try:
        assert [(r.msg_id, r.body) for r in outbox.next_for(PL)] == [
            (f"hit:{i}", b"".join(bodies[i])) for i in (0, 1, 2, 3)]
        assert [r.msg_id for r in outbox.next_for("lv-vp")] == ["hit:1"]
    finally:
        outbox.close()


def test_pieces_of_a_rolled_back_transaction_are_never_sent(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "x.db", log_bodies=True)
    try:
        try:
            with outbox.transaction() as db:
                outbox.add_many(db, [(PL, SUBJECT, "hit:gone", parts_of(1))])
                raise OSError("the disk is full")
        except OSError:
            pass
        assert outbox.next_for(PL) == [] and outbox._recent == {}
        assert outbox.add_one(PL, SUBJECT, "hit:gone", parts_of(2))  # queued anew
        assert [r.body[:12] for r in outbox.next_for(PL)] == [b"ANPXheader 2"]
    finally:
        outbox.close()


def test_bodies_kept_in_memory_are_bounded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("edge.collector.exchange.outbox.RECENT_BYTES", 3 * 80_000)
    outbox = Outbox(tmp_path / "x.db", log_bodies=True)
    bodies = [parts_of(i) for i in range(8)]
    try:
        with outbox.transaction() as db:
            assert outbox.add_many(db, [(PL, SUBJECT, f"hit:{i}", b)
                                        for i, b in enumerate(bodies)]) == 8
        assert len(outbox._recent) <= 3
        assert [r.body for r in outbox.next_for(PL)] == [b"".join(b) for b in bodies]
        assert outbox._recent == {} and outbox._recent_bytes == 0
    finally:
        outbox.close()
