"""The edge's durable outbox: hits wait here until the collector has them; other reads expire.

One SQLite file in WAL mode with `synchronous=FULL`, so a hit that `add_hit` has
stored survives a power cut.  Hits leave only when the collector acknowledges them
(`mark_delivered`).  Reads that matched nothing (`record_read`) stay no longer than
the retention, and are the first to go when room is short (the disk budget, or the
disk itself); an undelivered hit is never evicted.

A full disk loses no hit: a hit the disk refuses waits in a bounded memory queue
(`edge.node.waiting`) and is stored on the next attempt, before any newer hit; it is
offered for sending only once it is committed.  Under `min_free_bytes` free on the
disk, hits are stored without their scene picture and reads are not kept at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edge.core.link_protocol import (
    DEFAULT_LIMITS,
    HitMessage,
    Limits,
    ProtocolError,
    decode,
)
from edge.core.times import UTC, format_time, utc_now
from edge.core.watchlist.distance import fold
from edge.node.jpeg import fit_jpeg
from edge.node.waiting import WaitingHit, WaitingHits

log = logging.getLogger(__name__)

DEFAULT_RETENTION_S = 24 * 3600.0
DEFAULT_DISK_BUDGET = 2 * 1024**3
MIN_DISK_BUDGET = 16 * 1024**2
DEFAULT_MIN_FREE = 64 * 1024**2
DEFAULT_WAITING_HITS = 1000
DEFAULT_WAITING_BYTES = 64 * 1024**2
# Held on the disk in a file of its own and given back when the disk is full: SQLite
# needs room in its WAL even to delete, and this lets it evict reads for hits.
DEFAULT_RESERVE = 4 * 1024**2
# The WAL is checkpointed every 1 MiB and cut back to 2 MiB; the budget keeps 4 MiB for it.
_WAL_CHECKPOINT_PAGES = 256
_WAL_LIMIT = 2 * 1024**2
_WAL_RESERVE = 4 * 1024**2
# Delivered hits whose delete a full disk refused: remembered (and not offered) until
# there is room; past this many the oldest are forgotten, to be sent and acked again.
_MAX_ACKED = 10_000

SCENE_DROPPED_LOW_DISK = "scene dropped: low disk"
SCENE_DROPPED_NO_ROOM = "scene dropped: no room but for undelivered hits"

# SQLite says SQLITE_FULL for ENOSPC met in its write path, but an I/O error for
# EDQUOT (a spent quota) and for ENOSPC met while syncing or growing a file: all are
# a disk that takes no more, and are handled alike.
_WRITE_REFUSED = frozenset({
    sqlite3.SQLITE_IOERR_WRITE, sqlite3.SQLITE_IOERR_FSYNC, sqlite3.SQLITE_IOERR_DIR_FSYNC,
    sqlite3.SQLITE_IOERR_TRUNCATE, sqlite3.SQLITE_IOERR_SHMSIZE,
})  # fmt: skip

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hit_id TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL,
    added REAL NOT NULL,
    held TEXT,
    frames_tag BLOB NOT NULL,
    header BLOB NOT NULL,
    crop BLOB NOT NULL,
    scene BLOB NOT NULL,
    bytes INTEGER NOT NULL,
    note TEXT
);
CREATE INDEX IF NOT EXISTS hits_order ON hits (priority, seq);
CREATE TABLE IF NOT EXISTS reads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stored REAL NOT NULL,
    seen_at TEXT NOT NULL,
    camera TEXT NOT NULL,
    plate TEXT NOT NULL,
    confidence REAL,
    details TEXT NOT NULL,
    crop BLOB,
    bytes INTEGER NOT NULL,
    folded TEXT
);
CREATE INDEX IF NOT EXISTS reads_stored ON reads (stored);
"""
# The search's indexes (edge.node.search), made once the reads have their `folded` column
# (an outbox from before the search gains it, filled in, when opened).  Each covers what
# the search judges a row by, so finding the matches reads the index alone: exact and
# wildcard (GLOB) by the text, fuzzy by the text folded as the watchlist's distance folds
# it (edge.core.watchlist.distance.fold), where two plates a confusion apart are equal.
_SEARCH_INDEXES = """
CREATE INDEX IF NOT EXISTS reads_plate ON reads (plate, seen_at, stored, camera);
CREATE INDEX IF NOT EXISTS reads_folded ON reads (folded, seen_at, stored, camera);
"""


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` is a disk that takes no more: SQLITE_FULL, ENOSPC or EDQUOT."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return "database or disk is full" in str(exc)
        return code & 0xFF == sqlite3.SQLITE_FULL or code in _WRITE_REFUSED
    return False


def disk_free(path: Path) -> int:
    """Bytes free on the filesystem holding `path`, for an unprivileged writer."""
    return shutil.disk_usage(path).free


class Outbox:
    """Hits to deliver, most urgent first, and recent non-hit reads, in one SQLite file.

    Safe to share between threads (the pipeline adds, the sender takes).
    `retention_s` is how long a non-hit read may stay (0 keeps none);
    `disk_budget_bytes` caps the file; under `min_free_bytes` free on the disk hits
    are stored without their scene and reads are not kept.  `max_waiting_hits` and
    `max_waiting_bytes` bound the hits kept in memory while the disk is full.
    `free_space` says how many bytes the disk has free (`disk_free` unless given).
    `reserve_bytes` of the disk are held in a file beside the outbox, given back to
    SQLite when the disk is full and taken again when there is room.
    """

    def __init__(
        self,
        path: Path,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        disk_budget_bytes: int = DEFAULT_DISK_BUDGET,
        min_free_bytes: int = DEFAULT_MIN_FREE,
        max_waiting_hits: int = DEFAULT_WAITING_HITS,
        max_waiting_bytes: int = DEFAULT_WAITING_BYTES,
        purge_every_s: float = 60.0,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.time,
        free_space: Callable[[Path], int] = disk_free,
        reserve_bytes: int = DEFAULT_RESERVE,
    ):
        if retention_s < 0:
            raise ValueError("retention_s must be >= 0")
        if disk_budget_bytes < MIN_DISK_BUDGET:
            raise ValueError(f"disk_budget_bytes must be at least {MIN_DISK_BUDGET}")
        if min_free_bytes < 0:
            raise ValueError("min_free_bytes must be >= 0")
        self.path = Path(path)
        self.retention_s = float(retention_s)
        self.disk_budget_bytes = int(disk_budget_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.purge_every_s = purge_every_s
        self.limits = limits
        self.free_space = free_space
        self.reserve_bytes = int(reserve_bytes)
        self._reserve = self.path.with_name(self.path.name + "-reserve")
        self._clock = clock
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;"
            # Deleted reads are overwritten, not just unlinked: retention means gone.
            "PRAGMA secure_delete=ON;"
            f"PRAGMA journal_size_limit={_WAL_LIMIT};"
            f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES};"
        )
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(hits)")}
        if "note" not in columns:  # an outbox written before hits carried a note
            self._db.execute("ALTER TABLE hits ADD COLUMN note TEXT")
        self._migrate_reads()
        self._page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        self._last_purge = float("-inf")
        self.waiting = WaitingHits(max_waiting_hits, max_waiting_bytes)
        self._acked: dict[str, None] = {}  # delivered, but a full disk refused the delete
        self.changes = 0  # bumped whenever hits are stored: the sender looks for new work
        self.evicted_reads = 0
        self.degraded_hits = 0  # hits stored without their scene, for either reason below
        self.low_disk_hits = 0  # ... because the disk was under `min_free_bytes`
        self.refused_reads = 0  # reads not kept: low disk, no room, or the disk refused them
        self.store_error: str | None = None  # why the last store failed; None once one works
        self._read_refusal: str | None = None  # why reads are being refused, to log it once
        self.reserve_released = 0  # times the reserve was given back to a full disk
        self._keep_reserve()

    def _migrate_reads(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(reads)")}
        if "folded" not in columns:  # an outbox written before the search
            self._db.create_function("anpr_fold", 1, fold, deterministic=True)
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("ALTER TABLE reads ADD COLUMN folded TEXT")
                n = self._db.execute("UPDATE reads SET folded = anpr_fold(plate)").rowcount
            log.info("outbox: reads made searchable (%d folded)", n)
        self._db.executescript(_SEARCH_INDEXES)

    # ------------------------------------------------------------ hits

    def add_hit(self, hit: HitMessage) -> str:
        """Store `hit` durably (fsync'd before this returns) and return its id.

        Adding a hit that is already here does nothing.  Pictures over the size caps
        are re-encoded to fit; if the budget is spent on undelivered hits alone, or the
        disk is under `min_free_bytes`, the scene picture is dropped rather than the
        hit.  When the disk refuses it, the hit waits in memory (`is_waiting`) and is
        stored by the next `add_hit`, `record_read` or `retry`, after the hits that
        waited before it.  Errors other than a full disk are raised; the hit still waits.
        """
        hit = self._fit(hit)
        frames = hit.encode(limits=self.limits)
        with self._lock:
            self.waiting.push(WaitingHit(hit.hit_id, hit.priority, frames, self._clock()))
            if not self._flush():
                log.warning("hit %s waits in memory for room on the disk (%d waiting)",
                            hit.hit_id, len(self.waiting))
        return hit.hit_id

    def is_waiting(self, hit_id: str) -> bool:
        """Whether the hit is in memory only, waiting for room on the disk."""
        with self._lock:
            return hit_id in self.waiting

    def retry(self) -> int:
        """Store what waits in memory (hits; deletes of delivered hits) if the disk has
        room again.  Returns how many hits still wait."""
        with self._lock:
            self._flush()
            if self._acked:
                self._delete_acked()
            self._keep_reserve()
            return len(self.waiting)

    def _flush(self) -> bool:
        """Store the waiting hits, oldest first; False when the disk refused one, which
        then waits on with those behind it.  Called with the lock held."""
        stored = 0
        try:
            while (hit := self.waiting.first()) is not None:
                try:
                    self._store(hit)
                except Exception as exc:
                    if disk_full(exc) and self._release_reserve():
                        self._rollback()
                        continue
                    self._refused(exc)
                    return False
                self.waiting.pop_first()
                stored += 1
        finally:
            if stored:
                self.changes += 1
        if stored:
            self._stored_again()
        return True

    def _store(self, hit: WaitingHit) -> None:
        frames, note = hit.frames, None
        low_disk = self._low_disk()
        if low_disk and hit.has_scene:
            # A small card must not cost every hit its evidence: the crop is small.
            frames, note = [*frames[:3], b""], SCENE_DROPPED_LOW_DISK
        size = sum(len(f) for f in frames)
        if not self._make_room(size, low_disk=low_disk) and frames[3]:
            frames, note = [*frames[:3], b""], SCENE_DROPPED_NO_ROOM
            size = sum(len(f) for f in frames)
        inserted = self._insert_hit(hit, frames, size, note)
        if inserted and note is not None:
            self.degraded_hits += 1
            if note == SCENE_DROPPED_LOW_DISK:
                self.low_disk_hits += 1
                log.warning("low disk (under %d bytes free): hit %s stored without its "
                            "scene", self.min_free_bytes, hit.hit_id)
            else:
                log.warning("no room but for undelivered hits (disk budget or disk): hit %s "
                            "stored without its scene", hit.hit_id)

    def _insert_hit(self, hit: WaitingHit, frames: list[bytes], size: int,
                    note: str | None) -> bool:
        """One hit in one committed transaction; False when it was already here."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO hits (hit_id, priority, added, frames_tag, header, crop,"
            " scene, bytes, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (hit.hit_id, hit.priority, hit.added, *frames, size, note),
        )
        return cur.rowcount > 0

    def _refused(self, exc: Exception) -> None:
        """A store failed: note why; raise unless it was the disk refusing to take more."""
        self._rollback()
        reason = f"{type(exc).__name__}: {exc}"
        if not disk_full(exc):
            self.store_error = reason
            log.error("a write to the store failed (%s); hits wait in memory", reason)
            raise exc
        if self.store_error is None:
            log.error("the disk refused a write (%s): hits wait in memory until it takes "
                      "them; reads are not kept", reason)
        self.store_error = reason

    def _stored_again(self) -> None:
        if self.store_error is not None:
            log.warning("the store takes writes again (%d hits still wait in memory)",
                        len(self.waiting))
        self.store_error = None

    def _fit(self, hit: HitMessage) -> HitMessage:
        crop = fit_jpeg(hit.crop_jpeg, self.limits.max_crop_bytes)
        scene = fit_jpeg(hit.scene_jpeg, self.limits.max_scene_bytes)
        if crop is hit.crop_jpeg and scene is hit.scene_jpeg:
            return hit
        log.info("hit %s: pictures re-encoded to fit the size caps", hit.hit_id)
        return dataclasses.replace(hit, crop_jpeg=crop, scene_jpeg=scene)

    def pending(self, limit: int = 100, exclude: Iterable[str] = ()) -> list[HitMessage]:
        """Undelivered hits, most urgent (lowest priority number) first, then oldest first;
        not the held ones.  Only committed hits: none of those waiting in memory."""
        with self._lock:
            exclude = [*exclude, *self._acked]
            marks = ",".join("?" * len(exclude))
            sql = (
                "SELECT hit_id, frames_tag, header, crop, scene FROM hits WHERE held IS NULL"
                + (f" AND hit_id NOT IN ({marks})" if exclude else "")
                + " ORDER BY priority, seq LIMIT ?"
            )
            rows = self._db.execute(sql, (*exclude, int(limit))).fetchall()
        hits = []
        for hit_id, *frames in rows:
            if frames[3] == b"" and frames[0].endswith(b"/1"):
                frames = frames[:3]  # stored by an edge that wrote version-1 hits
            try:
                hits.append(decode(frames, self.limits))
            except ProtocolError as e:
                self.hold(hit_id, f"unreadable in the outbox: {e}")
        return hits

    def mark_delivered(self, *hit_ids: str) -> int:
        """The collector has these hits: drop them here.  Returns how many were still here.

        On a full disk the delete waits (the hits are not offered meanwhile) for `retry`.
        """
        if not hit_ids:
            return 0
        with self._lock:
            self._acked.update(dict.fromkeys(hit_ids))
            return self._delete_acked()

    def _delete_acked(self) -> int:
        ids = list(self._acked)
        try:
            cur = self._db.executemany("DELETE FROM hits WHERE hit_id = ?", [(i,) for i in ids])
        except Exception as exc:
            self._rollback()
            if not disk_full(exc):
                raise
            if self._release_reserve():
                return self._delete_acked()
            log.warning("disk full: %d delivered hits stay in the outbox until there is "
                        "room to delete them (%s)", len(ids), exc)
            for old in ids[: max(0, len(ids) - _MAX_ACKED)]:
                del self._acked[old]  # to be sent, and acknowledged, again
            return 0
        self._acked.clear()
        return cur.rowcount

    def hold(self, hit_id: str, reason: str) -> None:
        """Stop offering a hit (the collector refused it), without losing it."""
        log.error("hit %s held in the outbox: %s", hit_id, reason)
        with self._lock:
            try:
                self._db.execute("UPDATE hits SET held = ? WHERE hit_id = ?",
                                 (reason[:200], hit_id))
            except Exception as exc:
                self._rollback_unless_full(exc)
                log.error("disk full: hit %s could not be marked held; it will be offered "
                          "again", hit_id)

    def release_held(self) -> int:
        """Offer held hits again (after an upgrade of either end).  Returns how many."""
        with self._lock:
            try:
                n = self._db.execute("UPDATE hits SET held = NULL WHERE held IS NOT NULL").rowcount
            except Exception as exc:
                self._rollback_unless_full(exc)
                log.warning("disk full: held hits stay held for now (%s)", exc)
                return 0
        if n:
            log.info("%d held hits offered again", n)
            self.changes += 1
        return n

    def backlog(self) -> int:
        """Committed hits not yet delivered (and not held); not those waiting in memory."""
        with self._lock:
            return self._backlog()

    def _backlog(self) -> int:
        marks = ",".join("?" * len(self._acked))
        sql = "SELECT count(*) FROM hits WHERE held IS NULL" + (
            f" AND hit_id NOT IN ({marks})" if self._acked else "")
        return self._db.execute(sql, list(self._acked)).fetchone()[0]

    # ------------------------------------------------------------ reads

    def record_read(
        self,
        camera: str,
        plate: str,
        *,
        seen_at: dt.datetime | None = None,
        confidence: float | None = None,
        crop_jpeg: bytes | None = None,
        details: dict[str, Any] | None = None,
    ) -> int | None:
        """Keep a read that matched nothing, for the retention only; it never leaves the node.

        Returns its row id, or None when nothing was kept: retention 0, hits waiting in
        memory for room, the disk under `min_free_bytes`, no room, or the disk refused it.
        `seen_at` is when it was seen (UTC if naive; now if None).
        """
        self._maybe_purge()
        if self.retention_s == 0:
            return None
        if seen_at is None:
            seen_at = utc_now()
        elif seen_at.tzinfo is None:
            seen_at = seen_at.replace(tzinfo=UTC)
        seen = format_time(seen_at)
        body = json.dumps(details or {}, default=str)
        size = len(body) + len(crop_jpeg or b"") + len(camera) + len(plate) + 64
        with self._lock:
            # What room there is goes to hits first.
            if not self._flush():
                self._refuse_read("hits wait in memory for room on the disk")
                return None
            if self._low_disk():
                self._refuse_read(f"under {self.min_free_bytes} bytes free on the disk")
                return None
            try:
                if not self._make_room(size):
                    self._refuse_read("no room left but for undelivered hits")
                    return None
                cur = self._db.execute(
                    "INSERT INTO reads (stored, seen_at, camera, plate, confidence, details,"
                    " crop, bytes, folded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self._clock(), seen, camera, plate, confidence, body, crop_jpeg, size,
                     fold(plate)),
                )
            except Exception as exc:
                self._refused(exc)
                self._refuse_read(f"the disk refused it ({exc})")
                return None
            self._stored_again()
            self._read_refusal = None
            return cur.lastrowid

    def _refuse_read(self, why: str) -> None:
        self.refused_reads += 1
        if why != self._read_refusal:
            log.warning("reads that match nothing are not kept: %s", why)
            self._read_refusal = why

    def reads(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest non-hit reads kept here (for the edge's own look-ups)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, seen_at, camera, plate, confidence, details FROM reads"
                " ORDER BY id DESC LIMIT ?",
                (int(limit),),
            ).fetchall()
        return [
            {"id": r[0], "seen_at": r[1], "camera": r[2], "plate": r[3], "confidence": r[4],
             "details": json.loads(r[5])}
            for r in rows
        ]  # fmt: skip

    # ------------------------------------------------------------ retention and budget

    def purge(self) -> int:
        """Drop reads older than the retention (all of them when it is 0), then keep under
        the budget.  Returns how many reads went (0 when a full disk refused the delete)."""
        with self._lock:
            self._last_purge = self._clock()
            cutoff = self._clock() - self.retention_s
            try:
                if self.retention_s == 0:
                    n = self._db.execute("DELETE FROM reads").rowcount
                else:
                    n = self._db.execute("DELETE FROM reads WHERE stored <= ?",
                                         (cutoff,)).rowcount
                if n:
                    # Leave no copy of the purged reads in the WAL either.
                    self._checkpoint("TRUNCATE")
                self._make_room(0)
            except Exception as exc:
                self._rollback_unless_full(exc)
                log.warning("purge put off: the disk is full (%s)", exc)
                return 0
        if n:
            log.info("purged %d reads past the %.0f s retention", n, self.retention_s)
        return n

    def _maybe_purge(self) -> None:
        if self._clock() - self._last_purge >= self.purge_every_s:
            self.purge()

    def used_bytes(self) -> int:
        """Bytes the outbox takes on disk: the database's live pages, its WAL, its reserve."""
        with self._lock:
            return self._used_bytes()

    def _pages(self) -> tuple[int, int, int]:
        """(pages in the file, of them free for reuse, most the file may have)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        cap = self._db.execute("PRAGMA max_page_count").fetchone()[0]
        return pages, free, cap

    def _wal_bytes(self) -> int:
        wal = self.path.with_name(self.path.name + "-wal")
        return wal.stat().st_size if wal.exists() else 0

    def _reserve_bytes(self) -> int:
        return self._reserve.stat().st_size if self._reserve.exists() else 0

    def _used_bytes(self) -> int:
        pages, free, _ = self._pages()
        return (pages - free) * self._page_size + self._wal_bytes() + self._reserve_bytes()

    def _low_disk(self) -> bool:
        return self.free_space(self.path.parent) < self.min_free_bytes

    def _room_left(self, low_disk: bool) -> int:
        """Bytes a new row may take: within the budget, the file's own cap, and the disk.

        Pages freed by evicted reads are reused without growing the file; under the
        free-space floor (`low_disk`) they are the only room there is.
        """
        pages, free, cap = self._pages()
        ps = self._page_size
        wal = self._wal_bytes()
        budget_left = (self.disk_budget_bytes - (pages - free) * ps - max(wal, _WAL_RESERVE)
                       - self.reserve_bytes)
        cap_left = (cap - pages + free) * ps
        disk_left = free * ps
        if not low_disk:  # the disk above its floor, less what the WAL may yet grow by
            disk_left += (self.free_space(self.path.parent) - self.min_free_bytes
                          - max(0, _WAL_RESERVE - wal))
        return min(budget_left, cap_left, disk_left)

    def _make_room(self, size: int, *, low_disk: bool = False) -> bool:
        """Evict the oldest reads until `size` more bytes fit.  Never touches hits.

        Returns False when it cannot make the room (only undelivered hits are left).
        Called with the lock held.
        """
        # Room for the row itself, its index entries and page slack.
        need = size + 2 * self._page_size
        while self._room_left(low_disk) < need:
            cur = self._db.execute(
                "DELETE FROM reads WHERE id IN (SELECT id FROM reads ORDER BY id LIMIT 64)"
            )
            if cur.rowcount == 0:
                return False
            self.evicted_reads += cur.rowcount
            log.info("%s: evicted the %d oldest reads", "low disk" if low_disk else
                     "disk budget", cur.rowcount)
            # On a disk near full the WAL keeps the room it has: it may not get it back.
            self._checkpoint("RESTART" if low_disk else "TRUNCATE")
        return True

    def _checkpoint(self, mode: str) -> None:
        try:
            self._db.execute(f"PRAGMA wal_checkpoint({mode})")
        except Exception as exc:  # the WAL is copied back at the next checkpoint instead
            self._rollback_unless_full(exc)
            log.info("WAL checkpoint put off: %s", exc)

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.rollback()

    def _rollback_unless_full(self, exc: Exception) -> None:
        """After a failed write: roll back, and raise unless the disk was full."""
        self._rollback()
        if not disk_full(exc):
            raise exc

    def _keep_reserve(self) -> None:
        """Hold `reserve_bytes` of the disk, if it has that much beyond its floor and
        takes writes again (else the reserve would go as soon as it came)."""
        if not self.reserve_bytes or self._reserve.exists():
            return
        if self.waiting or self.store_error is not None:
            return
        if self.free_space(self.path.parent) < self.min_free_bytes + self.reserve_bytes:
            return
        part = self._reserve.with_name(self._reserve.name + ".part")
        try:
            with part.open("wb") as f:
                chunk = bytes(1024**2)
                for _ in range(0, self.reserve_bytes, len(chunk)):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            part.rename(self._reserve)
        except OSError as exc:
            part.unlink(missing_ok=True)
            if not disk_full(exc):
                raise
            log.info("no room for the outbox's disk reserve yet")

    def _release_reserve(self) -> bool:
        """Give the reserve back to a full disk; False when there is none to give."""
        try:
            self._reserve.unlink()
        except FileNotFoundError:
            return False
        self.reserve_released += 1
        log.warning("disk full: the outbox gave back its %d-byte reserve to go on storing "
                    "hits", self.reserve_bytes)
        return True

    # ------------------------------------------------------------ status

    def stats(self) -> dict[str, Any]:
        """Backlog, disk use and what waits in memory, for the heartbeat and the health."""
        with self._lock:
            held, hit_bytes = self._db.execute(
                "SELECT count(held), coalesce(sum(bytes), 0) FROM hits"
            ).fetchone()
            backlog = self._backlog()
            reads = self._db.execute("SELECT count(*) FROM reads").fetchone()[0]
            used = self._used_bytes()
            free = self.free_space(self.path.parent)
            return {
                "backlog": backlog,
                "held": held,
                "hit_bytes": hit_bytes,
                "reads": reads,
                "used_bytes": used,
                "budget_bytes": self.disk_budget_bytes,
                "retention_s": self.retention_s,
                "evicted_reads": self.evicted_reads,
                "degraded_hits": self.degraded_hits,
                "low_disk_hits": self.low_disk_hits,
                "refused_reads": self.refused_reads,
                "free_bytes": free,
                "min_free_bytes": self.min_free_bytes,
                "low_disk": free < self.min_free_bytes,
                "waiting_hits": len(self.waiting),
                "waiting_bytes": self.waiting.nbytes,
                "dropped_scenes": self.waiting.dropped_scenes,
                "dropped_hits": self.waiting.dropped_hits,
                "store_error": self.store_error,
                "reserve_released": self.reserve_released,
            }

    def close(self) -> None:
        """Close the file, storing what waits in memory if the disk has room by now, and
        as a last resort without the scene pictures; what still will not fit is lost,
        each hit logged at ERROR."""
        with self._lock:
            if self.waiting:
                self._flush_at_close()
            self._db.close()

    def _flush_at_close(self) -> None:
        try:
            if not self._flush():
                self.waiting.drop_scenes()
                self._flush()
        except Exception:
            log.exception("storing the hits waiting in memory failed")
        while self.waiting:
            hit = self.waiting.pop_first()
            self.waiting.dropped_hits += 1
            log.error("hit %s LOST: the disk was full until the outbox closed", hit.hit_id)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
