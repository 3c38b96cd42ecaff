"""The edge's durable outbox: hits wait here until the collector has them; other reads expire.

One SQLite file in WAL mode with `synchronous=FULL`, so a hit that `add_hit` has
returned survives a power cut.  Hits leave only when the collector acknowledges them
(`mark_delivered`).  Reads that matched nothing (`record_read`) stay no longer than
the retention, and are the first to go when the file nears its disk budget; an
undelivered hit is never evicted.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edge.link.jpeg import fit_jpeg
from edge.link.protocol import (
    DEFAULT_LIMITS,
    HitMessage,
    Limits,
    ProtocolError,
    decode,
    format_time,
    utc_now,
)

log = logging.getLogger(__name__)

DEFAULT_RETENTION_S = 24 * 3600.0
DEFAULT_DISK_BUDGET = 2 * 1024**3
MIN_DISK_BUDGET = 16 * 1024**2
# The WAL is checkpointed every 1 MiB and cut back to 2 MiB; the budget keeps 4 MiB for it.
_WAL_CHECKPOINT_PAGES = 256
_WAL_LIMIT = 2 * 1024**2
_WAL_RESERVE = 4 * 1024**2

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
    bytes INTEGER NOT NULL
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
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reads_stored ON reads (stored);
"""


class Outbox:
    """Hits to deliver, most urgent first, and recent non-hit reads, in one SQLite file.

    Safe to share between threads (the pipeline adds, the sender takes).
    `retention_s` is how long a non-hit read may stay (0 keeps none);
    `disk_budget_bytes` caps the file; `min_free_bytes` is left free on the disk
    whatever the budget says.
    """

    def __init__(
        self,
        path: Path,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        disk_budget_bytes: int = DEFAULT_DISK_BUDGET,
        min_free_bytes: int = 64 * 1024**2,
        purge_every_s: float = 60.0,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.time,
    ):
        if retention_s < 0:
            raise ValueError("retention_s must be >= 0")
        if disk_budget_bytes < MIN_DISK_BUDGET:
            raise ValueError(f"disk_budget_bytes must be at least {MIN_DISK_BUDGET}")
        self.path = Path(path)
        self.retention_s = float(retention_s)
        self.disk_budget_bytes = int(disk_budget_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.purge_every_s = purge_every_s
        self.limits = limits
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
        self._page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        self._last_purge = float("-inf")
        self.changes = 0  # bumped by every add_hit: the sender looks for new work when it moves
        self.evicted_reads = 0
        self.degraded_hits = 0

    # ------------------------------------------------------------ hits

    def add_hit(self, hit: HitMessage) -> str:
        """Store `hit` durably (fsync'd before this returns) and return its id.

        Adding a hit that is already here does nothing.  Pictures over the size caps
        are re-encoded to fit; if the budget is spent on undelivered hits alone, the
        scene picture is dropped rather than the hit.
        """
        hit = self._fit(hit)
        frames = hit.encode(limits=self.limits)
        size = sum(len(f) for f in frames)
        with self._lock:
            if not self._make_room(size):
                self.degraded_hits += 1
                log.warning(
                    "disk budget spent on undelivered hits: hit %s stored without its scene",
                    hit.hit_id,
                )
                frames = [frames[0], frames[1], frames[2], b""]
                size = sum(len(f) for f in frames)
            self._db.execute(
                "INSERT OR IGNORE INTO hits (hit_id, priority, added, frames_tag, header, crop,"
                " scene, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (hit.hit_id, hit.priority, self._clock(), *frames, size),
            )
            self.changes += 1
        return hit.hit_id

    def _fit(self, hit: HitMessage) -> HitMessage:
        crop = fit_jpeg(hit.crop_jpeg, self.limits.max_crop_bytes)
        scene = fit_jpeg(hit.scene_jpeg, self.limits.max_scene_bytes)
        if crop is hit.crop_jpeg and scene is hit.scene_jpeg:
            return hit
        log.info("hit %s: pictures re-encoded to fit the size caps", hit.hit_id)
        return HitMessage(
            node=hit.node, camera=hit.camera, seen_at=hit.seen_at, plate=hit.plate,
            match=hit.match, location=hit.location, crop_jpeg=crop, scene_jpeg=scene,
            hit_id=hit.hit_id,
        )  # fmt: skip

    def pending(self, limit: int = 100, exclude: Iterable[str] = ()) -> list[HitMessage]:
        """Undelivered hits, most urgent (lowest priority number) first, then oldest first;
        not the held ones."""
        exclude = list(exclude)
        marks = ",".join("?" * len(exclude))
        sql = (
            "SELECT hit_id, frames_tag, header, crop, scene FROM hits WHERE held IS NULL"
            + (f" AND hit_id NOT IN ({marks})" if exclude else "")
            + " ORDER BY priority, seq LIMIT ?"
        )
        with self._lock:
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
        """The collector has these hits: drop them here.  Returns how many were still here."""
        if not hit_ids:
            return 0
        with self._lock:
            cur = self._db.executemany("DELETE FROM hits WHERE hit_id = ?", [(i,) for i in hit_ids])
            return cur.rowcount

    def hold(self, hit_id: str, reason: str) -> None:
        """Stop offering a hit (the collector refused it), without losing it."""
        log.error("hit %s held in the outbox: %s", hit_id, reason)
        with self._lock:
            self._db.execute("UPDATE hits SET held = ? WHERE hit_id = ?", (reason[:200], hit_id))

    def release_held(self) -> int:
        """Offer held hits again (after an upgrade of either end).  Returns how many."""
        with self._lock:
            n = self._db.execute("UPDATE hits SET held = NULL WHERE held IS NOT NULL").rowcount
        if n:
            log.info("%d held hits offered again", n)
            self.changes += 1
        return n

    def backlog(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM hits WHERE held IS NULL").fetchone()[0]

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

        Returns its row id, or None when nothing was kept (retention 0, or no room).
        `seen_at` is when it was seen (UTC if naive; now if None).
        """
        self._maybe_purge()
        if self.retention_s == 0:
            return None
        if seen_at is None:
            seen_at = utc_now()
        elif seen_at.tzinfo is None:
            seen_at = seen_at.replace(tzinfo=dt.UTC)
        seen = format_time(seen_at)
        body = json.dumps(details or {}, default=str)
        size = len(body) + len(crop_jpeg or b"") + len(camera) + len(plate) + 64
        with self._lock:
            if not self._make_room(size):
                return None
            cur = self._db.execute(
                "INSERT INTO reads (stored, seen_at, camera, plate, confidence, details, crop,"
                " bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self._clock(), seen, camera, plate, confidence, body, crop_jpeg, size),
            )
            return cur.lastrowid

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
        the budget.  Returns how many reads went."""
        with self._lock:
            self._last_purge = self._clock()
            cutoff = self._clock() - self.retention_s
            if self.retention_s == 0:
                n = self._db.execute("DELETE FROM reads").rowcount
            else:
                n = self._db.execute("DELETE FROM reads WHERE stored <= ?", (cutoff,)).rowcount
            if n:
                # Leave no copy of the purged reads in the WAL either.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._make_room(0)
        if n:
            log.info("purged %d reads past the %.0f s retention", n, self.retention_s)
        return n

    def _maybe_purge(self) -> None:
        if self._clock() - self._last_purge >= self.purge_every_s:
            self.purge()

    def used_bytes(self) -> int:
        """Bytes the outbox takes on disk: the database's live pages plus its WAL."""
        with self._lock:
            return self._used_bytes()

    def _live_and_wal(self) -> tuple[int, int]:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        wal = self.path.with_name(self.path.name + "-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        return (pages - free) * self._page_size, wal_bytes

    def _used_bytes(self) -> int:
        return sum(self._live_and_wal())

    def _room_left(self) -> int:
        live, wal = self._live_and_wal()
        budget_left = self.disk_budget_bytes - live - max(wal, _WAL_RESERVE)
        disk_left = shutil.disk_usage(self.path.parent).free - self.min_free_bytes
        return min(budget_left, disk_left)

    def _make_room(self, size: int) -> bool:
        """Evict the oldest reads until `size` more bytes fit.  Never touches hits.

        Returns False when it cannot make the room (only undelivered hits are left).
        Called with the lock held.
        """
        # Room for the row itself, its index entries and page slack.
        need = size + 2 * self._page_size
        while self._room_left() < need:
            cur = self._db.execute(
                "DELETE FROM reads WHERE id IN (SELECT id FROM reads ORDER BY id LIMIT 64)"
            )
            if cur.rowcount == 0:
                return False
            self.evicted_reads += cur.rowcount
            log.info("disk budget: evicted the %d oldest reads", cur.rowcount)
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return True

    # ------------------------------------------------------------ status

    def stats(self) -> dict[str, Any]:
        """Backlog and disk use, for the heartbeat."""
        with self._lock:
            backlog, held, hit_bytes = self._db.execute(
                "SELECT count(*) - count(held), count(held), coalesce(sum(bytes), 0) FROM hits"
            ).fetchone()
            reads = self._db.execute("SELECT count(*) FROM reads").fetchone()[0]
            used = self._used_bytes()
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
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
