"""The outbox on a full disk: no hit lost, reads go before hits, scenes go under the floor.

The disk is made full deterministically: `PRAGMA max_page_count` caps the outbox's
file where it stands, so SQLite fails with SQLITE_FULL exactly as on a full disk, and
raising the cap is the space coming back.  The free-space floor is driven through the
outbox's `free_space` seam.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

import pytest
from helpers.link import make_hit

from edge.node.outbox import SCENE_DROPPED_LOW_DISK, Outbox, disk_full
from edge.node.waiting import WaitingHit, WaitingHits

MB = 1024 * 1024
FLOOR = 64 * MB


def plenty(_path: Path) -> int:
    return 100 * 1024 * MB


class SmallDisk:
    """A disk of `size` bytes holding only the outbox's files: free is what they leave."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, path: Path) -> int:
        return self.size - sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())


def outbox(tmp_path: Path, **kw) -> Outbox:
    kw.setdefault("free_space", plenty)
    kw.setdefault("reserve_bytes", 0)
    return Outbox(tmp_path / "o.db", **kw)


def fill_up(ob: Outbox) -> None:
    """The disk is full: the file may not grow by a page, and its pages' slack is taken."""
    ob._db.execute("CREATE TABLE IF NOT EXISTS slack (b BLOB)")
    pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
    assert ob._db.execute(f"PRAGMA max_page_count={pages}").fetchone()[0] == pages
    size = 4096
    while size:
        try:
            ob._db.execute("INSERT INTO slack VALUES (?)", (bytes(size),))
        except sqlite3.OperationalError as exc:
            assert disk_full(exc)
            size //= 2


def free_up(ob: Outbox) -> None:
    ob._db.execute("PRAGMA max_page_count=1073741823")


def stored_ids(ob: Outbox) -> list[str]:
    return [r[0] for r in ob._db.execute("SELECT hit_id FROM hits ORDER BY seq")]


# ---------------------------------------------------------------- nothing lost


def test_hits_a_full_disk_refuses_wait_in_memory_and_are_stored_in_order_once(tmp_path, caplog):
    with outbox(tmp_path) as ob:
        ob.add_hit(make_hit(0))
        fill_up(ob)
        with caplog.at_level(logging.WARNING):
            ids = [ob.add_hit(make_hit(n)) for n in range(1, 26)]  # raised for 18 of 25 before
        stats = ob.stats()
        assert stats["waiting_hits"] == 25 and "full" in stats["store_error"]
        assert all(ob.is_waiting(i) for i in ids)
        # nothing is offered for sending before it is committed
        assert [h.hit_id for h in ob.pending(100)] == [make_hit(0).hit_id]
        assert ob.backlog() == 1
        assert "the disk refused a write" in caplog.text
        assert ob.retry() == 25  # still full: they go on waiting

        free_up(ob)
        assert ob.retry() == 0
        assert stored_ids(ob) == [make_hit(n).hit_id for n in range(26)]  # in order, once each
        assert ob.stats()["store_error"] is None
        assert [h.hit_id for h in ob.pending(100)] == stored_ids(ob)
        assert ob.pending(100)[5] == make_hit(5)  # with its pictures
        assert ob.retry() == 0
        ob.add_hit(make_hit(3))  # a hit stored already is not stored twice
        assert len(stored_ids(ob)) == 26


def test_a_new_hit_stores_those_waiting_before_it(tmp_path):
    with outbox(tmp_path) as ob:
        fill_up(ob)
        for n in range(3):
            ob.add_hit(make_hit(n, crop=8192))  # too big even without a scene for a free page
        assert stored_ids(ob) == []
        free_up(ob)
        ob.add_hit(make_hit(3, crop=8192))  # no retry() called: the next store attempt does it
        assert stored_ids(ob) == [make_hit(n).hit_id for n in range(4)]
        assert ob.stats()["waiting_hits"] == 0


def test_a_read_waits_behind_the_hits_and_stores_them_first(tmp_path):
    with outbox(tmp_path, retention_s=3600) as ob:
        fill_up(ob)
        ob.add_hit(make_hit(1))
        assert ob.record_read("cam1", "NOMATCH1") is None  # the room there is goes to hits
        free_up(ob)
        assert ob.record_read("cam1", "NOMATCH2") is not None
        assert stored_ids(ob) == [make_hit(1).hit_id]
        assert [r["plate"] for r in ob.reads()] == ["NOMATCH2"]
        assert ob.stats()["refused_reads"] == 1


def test_acknowledged_hits_on_a_full_disk_are_not_offered_again(tmp_path):
    with outbox(tmp_path) as ob:
        for n in range(3):
            ob.add_hit(make_hit(n))
        real = ob._db
        ob._db = RefusingDeletes(real)
        assert ob.mark_delivered(make_hit(0).hit_id) == 0  # the delete waits for room
        assert [h.hit_id for h in ob.pending()] == [make_hit(n).hit_id for n in (1, 2)]
        assert ob.backlog() == 2
        ob._db = real
        ob.retry()
        assert stored_ids(ob) == [make_hit(n).hit_id for n in (1, 2)]


class RefusingDeletes:
    """A connection whose disk has no room for the WAL frames a delete writes."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __getattr__(self, name: str):
        return getattr(self._db, name)

    def executemany(self, sql: str, *args):
        if sql.lstrip().upper().startswith("DELETE"):
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.executemany(sql, *args)


# ---------------------------------------------------------------- the memory queue's bounds


def waiting(n: int, *, priority: int = 5, scene: int = 1000) -> WaitingHit:
    return WaitingHit(f"hit-{n:08d}", priority, [b"T", b"H", b"c" * 100, b"s" * scene], 0.0)


def test_an_overflowing_queue_drops_the_oldest_scenes_first(caplog):
    q = WaitingHits(max_hits=100, max_bytes=6 * waiting(0).nbytes - 500)
    with caplog.at_level(logging.ERROR):
        for n in range(6):
            q.push(waiting(n))
    assert len(q) == 6 and q.dropped_hits == 0
    assert [h.has_scene for h in q] == [False, True, True, True, True, True]
    assert q.dropped_scenes == 1 and q.nbytes <= q.max_bytes
    assert "without its scene" in caplog.text


def test_only_then_the_least_urgent_hits_and_each_loss_is_logged(caplog):
    q = WaitingHits(max_hits=3, max_bytes=10 * MB)
    with caplog.at_level(logging.ERROR):
        q.push(waiting(0, priority=1))
        q.push(waiting(1, priority=9))
        q.push(waiting(2, priority=9))
        q.push(waiting(3, priority=1))
    assert [h.hit_id for h in q] == ["hit-00000000", "hit-00000002", "hit-00000003"]
    assert q.dropped_hits == 1
    assert caplog.text.count("LOST") == 1 and "hit-00000001" in caplog.text


def test_a_hit_already_waiting_is_not_queued_twice():
    q = WaitingHits(max_hits=10, max_bytes=MB)
    q.push(waiting(1))
    q.push(waiting(1))
    assert len(q) == 1


def test_the_outbox_queue_is_bounded_as_configured(tmp_path):
    full = len(b"".join(make_hit(0, crop=8192, scene=8192).encode())) + 512
    bound = 10 * (full - 8192) + 2 * 8192  # ten hits, but only two of their scenes
    with outbox(tmp_path, max_waiting_hits=10, max_waiting_bytes=bound) as ob:
        fill_up(ob)
        for n in range(12):
            ob.add_hit(make_hit(n, crop=8192, scene=8192))
        stats = ob.stats()
        assert stats["waiting_hits"] == 10 and stats["dropped_hits"] == 2
        assert stats["dropped_scenes"] > 0 and stats["waiting_bytes"] <= bound
        free_up(ob)
        ob.retry()
        assert stored_ids(ob) == [make_hit(n).hit_id for n in range(2, 12)]
        pending = ob.pending(100)
        assert all(h.crop_jpeg for h in pending)
        assert not pending[0].scene_jpeg and pending[-1].scene_jpeg  # the newest kept theirs


def test_what_still_waits_at_close_is_stored_if_it_can_be_and_each_loss_logged(tmp_path, caplog):
    path = tmp_path / "o.db"
    ob = outbox(tmp_path)
    fill_up(ob)
    ob.add_hit(make_hit(1))
    free_up(ob)
    ob.close()  # the room came back before the close: stored then
    ob = outbox(tmp_path)
    assert stored_ids(ob) == [make_hit(1).hit_id]
    fill_up(ob)
    ob.add_hit(make_hit(2))
    with caplog.at_level(logging.ERROR):
        ob.close()
    assert f"hit {make_hit(2).hit_id} LOST" in caplog.text
    assert path.exists()


# ---------------------------------------------------------------- which errors


@pytest.mark.parametrize("exc", [
    sqlite3.OperationalError("database or disk is full"),
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
], ids=["SQLITE_FULL", "ENOSPC", "EDQUOT"])
def test_every_kind_of_full_disk_is_handled_alike(tmp_path, monkeypatch, exc):
    with outbox(tmp_path) as ob:
        real = Outbox._insert_hit
        monkeypatch.setattr(Outbox, "_insert_hit", lambda *a: (_ for _ in ()).throw(exc))
        ob.add_hit(make_hit(1))  # not raised
        assert ob.stats()["waiting_hits"] == 1 and ob.stats()["store_error"]
        monkeypatch.setattr(Outbox, "_insert_hit", real)
        assert ob.retry() == 0
        assert stored_ids(ob) == [make_hit(1).hit_id]


def _sqlite_error(cls, message: str, code: int) -> sqlite3.Error:
    exc = cls(message)
    exc.sqlite_errorcode = code  # as the sqlite3 module sets it
    return exc


@pytest.mark.parametrize(("exc", "full"), [
    (_sqlite_error(sqlite3.OperationalError, "database or disk is full", sqlite3.SQLITE_FULL),
     True),
    # SQLite reports EDQUOT from write(2) as an I/O error on write
    (_sqlite_error(sqlite3.OperationalError, "disk I/O error", sqlite3.SQLITE_IOERR_WRITE), True),
    (_sqlite_error(sqlite3.OperationalError, "disk I/O error", sqlite3.SQLITE_IOERR_FSYNC), True),
    (_sqlite_error(sqlite3.OperationalError, "disk I/O error", sqlite3.SQLITE_IOERR_READ), False),
    (_sqlite_error(sqlite3.DatabaseError, "database disk image is malformed",
                   sqlite3.SQLITE_CORRUPT), False),
    (_sqlite_error(sqlite3.OperationalError, "database is locked", sqlite3.SQLITE_BUSY), False),
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (OSError(errno.EACCES, "Permission denied"), False),
    (ValueError("database or disk is full"), False),
])
def test_disk_full_tells_a_full_disk_from_other_errors(exc, full):
    assert disk_full(exc) is full


def test_other_errors_are_raised_and_the_hit_still_waits(tmp_path, monkeypatch):
    with outbox(tmp_path) as ob:
        real = Outbox._insert_hit
        corrupt = _sqlite_error(sqlite3.DatabaseError, "database disk image is malformed",
                                sqlite3.SQLITE_CORRUPT)
        monkeypatch.setattr(Outbox, "_insert_hit", lambda *a: (_ for _ in ()).throw(corrupt))
        with pytest.raises(sqlite3.DatabaseError, match="malformed"):
            ob.add_hit(make_hit(1))
        assert ob.stats()["waiting_hits"] == 1 and "malformed" in ob.stats()["store_error"]
        monkeypatch.setattr(Outbox, "_insert_hit", real)
        assert ob.retry() == 0
        assert stored_ids(ob) == [make_hit(1).hit_id]


# ---------------------------------------------------------------- reads go first


def test_reads_and_their_crops_are_evicted_before_any_hit_is_touched(tmp_path):
    crop = b"\xff\xd8\xff" + bytes(10_000)
    with outbox(tmp_path, retention_s=86400) as ob:
        rows = [ob.record_read("cam1", f"R{i:04d}", crop_jpeg=crop) for i in range(300)]
        fill_up(ob)
        for n in range(40):  # ~400 KB of hits into a file that may not grow
            ob.add_hit(make_hit(n, crop=2048, scene=8192))
        stats = ob.stats()
        assert stats["waiting_hits"] == 0 and stats["degraded_hits"] == 0
        assert stats["evicted_reads"] > 0
        kept = [r["id"] for r in ob.reads(1000)]
        assert kept == sorted(rows[-len(kept):], reverse=True)  # the oldest went
        assert all(h.scene_jpeg for h in ob.pending(100))
        # once the reads are spent, hits lose their scenes, then wait: none is evicted
        for n in range(40, 400):
            ob.add_hit(make_hit(n, crop=2048, scene=8192))
        stats = ob.stats()
        assert ob.reads(1000) == []
        assert stats["degraded_hits"] > 0 and stats["waiting_hits"] > 0
        assert stats["backlog"] + stats["waiting_hits"] == 400
        free_up(ob)
        ob.retry()
        assert stored_ids(ob) == [make_hit(n).hit_id for n in range(400)]


def test_a_small_disk_evicts_reads_for_hits(tmp_path):
    """The filesystem's own free space, not the budget, is what is short here."""
    crop = b"\xff\xd8\xff" + bytes(20_000)
    disk = SmallDisk(FLOOR + 6 * MB)
    with outbox(tmp_path, retention_s=86400, free_space=disk) as ob:
        for i in range(150):  # 3 MB of reads: the newest take the room of the oldest
            ob.record_read("cam1", f"R{i:04d}", crop_jpeg=crop)
        evicted = ob.stats()["evicted_reads"]
        assert evicted > 0 and ob.stats()["refused_reads"] == 0
        for n in range(30):
            ob.add_hit(make_hit(n, crop=2048, scene=30_000))
        stats = ob.stats()
        assert stats["evicted_reads"] > evicted and stats["backlog"] == 30
        assert stats["degraded_hits"] == 0  # room was made above the floor
        assert all(h.scene_jpeg for h in ob.pending(100))
        assert disk(tmp_path) >= FLOOR


# ---------------------------------------------------------------- under the floor


def test_under_the_floor_hits_keep_their_crop_lose_their_scene_and_say_so(tmp_path):
    free = {"bytes": FLOOR - 1}
    with outbox(tmp_path, retention_s=3600, free_space=lambda _p: free["bytes"]) as ob:
        ob.add_hit(make_hit(1, crop=3000, scene=50_000))
        assert ob.record_read("cam1", "NOMATCH") is None  # not kept at all
        stats = ob.stats()
        assert stats["low_disk"] and stats["low_disk_hits"] == 1 and stats["refused_reads"] == 1
        (hit,) = ob.pending()
        assert hit.scene_jpeg == b"" and hit.crop_jpeg == make_hit(1, crop=3000).crop_jpeg
        assert ob._db.execute("SELECT note FROM hits").fetchone()[0] == SCENE_DROPPED_LOW_DISK
        assert SCENE_DROPPED_LOW_DISK == "scene dropped: low disk"

        free["bytes"] = FLOOR + 10 * MB  # above the floor: whole hits, and reads, again
        ob.add_hit(make_hit(2, crop=3000, scene=50_000))
        assert ob.record_read("cam1", "NOMATCH") is not None
        assert ob.pending()[1].scene_jpeg == make_hit(2, scene=50_000).scene_jpeg
        assert not ob.stats()["low_disk"]


def test_under_the_floor_hits_reuse_the_pages_of_evicted_reads(tmp_path):
    free = {"bytes": 10 * FLOOR}
    with outbox(tmp_path, retention_s=3600, free_space=lambda _p: free["bytes"]) as ob:
        for i in range(50):
            ob.record_read("cam1", f"R{i:04d}", crop_jpeg=b"\xff\xd8\xff" + bytes(10_000))
        pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
        free["bytes"] = FLOOR // 2
        for n in range(20):
            ob.add_hit(make_hit(n, crop=2048, scene=50_000))
        assert ob.stats()["evicted_reads"] > 0
        assert ob._db.execute("PRAGMA page_count").fetchone()[0] == pages  # the file kept its size
        assert ob.backlog() == 20


def test_the_floor_is_configurable(tmp_path):
    with outbox(tmp_path, min_free_bytes=MB, free_space=lambda _p: 10 * MB) as ob:
        ob.add_hit(make_hit(1))
        assert ob.pending()[0].scene_jpeg
    with pytest.raises(ValueError, match="min_free_bytes"):
        outbox(tmp_path, min_free_bytes=-1)


def test_an_outbox_from_before_notes_gains_the_column(tmp_path):
    path = tmp_path / "o.db"
    with outbox(tmp_path) as ob:
        ob.add_hit(make_hit(1))
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE hits DROP COLUMN note")
    db.commit()
    db.close()
    with outbox(tmp_path, free_space=lambda _p: 0) as ob:
        ob.add_hit(make_hit(2))
        notes = [r[0] for r in ob._db.execute("SELECT note FROM hits ORDER BY seq")]
    assert notes == [None, SCENE_DROPPED_LOW_DISK]


# ---------------------------------------------------------------- the reserve


def test_the_reserve_is_given_back_to_a_full_disk_and_taken_again(tmp_path, monkeypatch):
    reserve = tmp_path / "o.db-reserve"
    with outbox(tmp_path, reserve_bytes=2 * MB) as ob:
        assert reserve.stat().st_size == 2 * MB
        real, calls = Outbox._insert_hit, []

        def once_full(self, *args):
            calls.append(1)
            if len(calls) == 1:
                raise sqlite3.OperationalError("database or disk is full")
            return real(self, *args)

        monkeypatch.setattr(Outbox, "_insert_hit", once_full)
        ob.add_hit(make_hit(1))  # refused, the reserve given back, then stored
        assert not reserve.exists() and stored_ids(ob) == [make_hit(1).hit_id]
        assert ob.stats()["reserve_released"] == 1 and ob.stats()["waiting_hits"] == 0
        ob.retry()  # the disk has room: the reserve is taken again
        assert reserve.stat().st_size == 2 * MB
