"""The alerts' durable queue: SQLite (WAL) in data_dir/alerts.db, one row per hit and route.

An item is enqueued once per (hit, revision, route): enqueuing it again does nothing, so
the collector's hook may be called twice for a hit without a second alert.  E-mail routes
take a hit once whatever its revision (`once_per_hit`): a completion arriving while the
first mail still waits replaces what it will say, and is otherwise not mailed again.

Items stay `pending` while they are sent, so one in flight when the process stops is sent
again after the restart (receivers dedupe on the delivery id).  A failed send is retried
after an exponential back-off with jitter; after `max_attempts` or `max_age_s` it is
dead-lettered (`dead`, logged as an error by the worker) and kept `keep_days` for
inspection with delivered ones.

The queue also keeps how far the hits of hits.db have been routed (`Mark`, the one row of
`routed`), advanced in the same transaction as the items a batch of hits queues: an alert is
queued exactly when the mark passes its hit, so a crash at any point loses none and queues
none twice (see follow.py).

Bounded: at most `max_queued` items wait per route.  When a route is full, the least urgent
waiting item (largest priority number, oldest first) is dead-lettered to make room, unless
the new hit is less urgent still: then the new one is refused.  Either way the loss is
logged as an error: an agency's receiver down for long must not fill the disk, and a
priority-1 hit must not be lost for a backlog of priority-9 ones.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge.collector.alerts.config import RetryConfig
from edge.collector.alerts.summary import HitSummary

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    route TEXT NOT NULL,            -- <agency>/<route name>
    hit_id TEXT NOT NULL,
    dedupe_rev INTEGER NOT NULL,    -- the revision, or 0 for routes that take a hit once
    revision INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    delivery TEXT NOT NULL,         -- stable across retries: the receiver's dedupe key
    summary TEXT NOT NULL,          -- HitSummary as JSON
    crop BLOB NOT NULL DEFAULT x'',
    state TEXT NOT NULL DEFAULT 'pending',   -- pending, done, dead
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,       -- the clock's seconds (Unix time)
    next_at REAL NOT NULL,
    finished_at REAL,
    last_error TEXT NOT NULL DEFAULT '',
    UNIQUE (route, hit_id, dedupe_rev)
);
CREATE INDEX IF NOT EXISTS items_due ON items (route, state, next_at);
CREATE INDEX IF NOT EXISTS items_finished ON items (state, finished_at);
CREATE TABLE IF NOT EXISTS routed (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    hits_rowid INTEGER NOT NULL,    -- the last row of hits.db's `hits` routed
    hit_id TEXT NOT NULL,           -- the hit in that row (a rowid used again is noticed)
    received_at TEXT NOT NULL,      -- and when it was received
    change_seq INTEGER NOT NULL,    -- the last `hit_changes.seq` routed
    at REAL NOT NULL                -- when the mark last moved (the clock's seconds)
);
"""


@dataclass(frozen=True)
class Item:
    """One alert of one hit to one route, as queued."""

    id: int
    route: str
    delivery: str
    summary: HitSummary
    crop: bytes
    attempts: int  # made before this one
    created_at: float


@dataclass(frozen=True)
class Result:
    """What a send came to: delivered, worth retrying, or failed for good."""

    kind: Literal["delivered", "retry", "failed"]
    detail: str = ""


@dataclass(frozen=True)
class Entry:
    """What the hook asks to queue: `summary` to `route` (and the crop, when it sends it)."""

    route: str
    summary: HitSummary
    crop: bytes = b""
    once_per_hit: bool = False


@dataclass(frozen=True)
class Dropped:
    """An item the full queue could not keep: dead-lettered or refused."""

    route: str
    hit_id: str
    priority: int
    detail: str
    refused: bool  # the new one (else a waiting one, dead-lettered to make room)


@dataclass(frozen=True)
class Mark:
    """How far the hits of hits.db are routed: its last `hits` row routed (rowid, with the
    hit it held and when that was received) and its last change (`hit_changes.seq`)."""

    rowid: int = 0
    hit_id: str = ""
    received_at: str = ""
    change: int = 0


def delivery_id(route: str, hit_id: str, revision: int) -> str:
    """The same for every attempt, and if the hit is queued again: receivers dedupe on it."""
    return hashlib.sha256(f"{route}\0{hit_id}\0{revision}".encode()).hexdigest()[:32]


class AlertQueue:
    """The queue at `path`, safe to use from any thread (one connection, one lock).

    `clock` gives Unix seconds (age and back-off), `rand` a float in [0, 1) (the jitter):
    both injectable, for tests."""

    def __init__(
        self,
        path: Path,
        retry: RetryConfig,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ):
        self.path = Path(path)
        self.retry = retry
        self.clock = clock
        self.rand = rand
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=30)  # fmt: skip
        self._db.execute("PRAGMA journal_mode=WAL")
        # An alert queued is as durable as the hit it tells of.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ filling

    def mark(self) -> Mark | None:
        """How far hits.db is routed (None: never followed, a new queue)."""
        with self._lock:
            row = self._db.execute(
                "SELECT hits_rowid, hit_id, received_at, change_seq FROM routed").fetchone()
        return None if row is None else Mark(*row)

    def enqueue(
        self, entries: Iterable[Entry], mark: Mark | None = None
    ) -> tuple[int, list[Dropped]]:
        """Queue `entries`, and move the mark to `mark` when given, in one transaction;
        (items newly queued, items lost to a full route: dead-lettered to make room, or
        refused)."""
        now = self.clock()
        added = 0
        dropped: list[Dropped] = []
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if mark is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO routed VALUES (1, ?, ?, ?, ?, ?)",
                    (mark.rowid, mark.hit_id, mark.received_at, mark.change, now))  # fmt: skip
            for e in entries:
                s = e.summary
                dedupe_rev = 0 if e.once_per_hit else s.revision
                row = self._db.execute(
                    "SELECT id, state, revision FROM items WHERE route = ? AND hit_id = ? "
                    "AND dedupe_rev = ?", (e.route, s.hit_id, dedupe_rev)).fetchone()  # fmt: skip
                if row is not None:
                    if row[1] == "pending" and s.revision > row[2]:
                        # A completion while the first alert waits: it says the final read.
                        self._db.execute(
                            "UPDATE items SET summary = ?, revision = ?, priority = ?, crop = ?"
                            " WHERE id = ?",
                            (json.dumps(s.to_json()), s.revision, s.priority, e.crop, row[0]),
                        )
                    continue
                if not self._make_room(e, now, dropped):
                    continue
                self._db.execute(
                    "INSERT INTO items (route, hit_id, dedupe_rev, revision, priority, delivery,"
                    " summary, crop, created_at, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (e.route, s.hit_id, dedupe_rev, s.revision, s.priority,
                     delivery_id(e.route, s.hit_id, s.revision), json.dumps(s.to_json()),
                     e.crop, now, now),
                )  # fmt: skip
                added += 1
        return added, dropped

    def _make_room(self, e: Entry, now: float, dropped: list[Dropped]) -> bool:
        (waiting,) = self._db.execute(
            "SELECT count(*) FROM items WHERE route = ? AND state = 'pending'", (e.route,)
        ).fetchone()
        if waiting < self.retry.max_queued:
            return True
        victim = self._db.execute(
            "SELECT id, hit_id, priority FROM items WHERE route = ? AND state = 'pending' "
            "ORDER BY priority DESC, id ASC LIMIT 1", (e.route,)).fetchone()  # fmt: skip
        full = f"queue of {e.route} full ({self.retry.max_queued} waiting)"
        if victim is None or victim[2] < e.summary.priority:
            dropped.append(Dropped(e.route, e.summary.hit_id, e.summary.priority,
                                   f"{full}: refused, every waiting hit is more urgent", True))
            return False
        detail = f"{full}: dropped for a hit of priority {e.summary.priority}"
        self._finish(victim[0], "dead", detail, now)
        dropped.append(Dropped(e.route, victim[1], victim[2], detail, False))
        return True

    # ------------------------------------------------------------ draining

    def due(self, route: str, limit: int = 50) -> list[Item]:
        """Items of `route` due now, the most urgent first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, route, delivery, summary, crop, attempts, created_at FROM items "
                "WHERE route = ? AND state = 'pending' AND next_at <= ? "
                "ORDER BY priority, id LIMIT ?", (route, self.clock(), limit),
            ).fetchall()
        return [Item(r[0], r[1], r[2], HitSummary.from_json(json.loads(r[3])), bytes(r[4]),
                     r[5], r[6]) for r in rows]  # fmt: skip

    def next_at(self, route: str) -> float | None:
        """When the next item of `route` is due (None: none waits)."""
        with self._lock:
            (t,) = self._db.execute(
                "SELECT min(next_at) FROM items WHERE route = ? AND state = 'pending'", (route,)
            ).fetchone()
        return None if t is None else float(t)

    def too_old(self, item: Item) -> bool:
        return self.clock() - item.created_at >= self.retry.max_age_s

    def delivered(self, item: Item) -> None:
        with self._lock:
            self._finish(item.id, "done", "", self.clock(), tried=1)

    def dead(self, item: Item, detail: str, *, attempted: bool = True) -> None:
        with self._lock:
            self._finish(item.id, "dead", detail, self.clock(), tried=int(attempted))

    def retry_later(self, item: Item, detail: str) -> float | None:
        """Count a failed attempt and schedule the next: its delay in seconds, or None when
        the item is dead-lettered instead (attempts or age spent)."""
        attempts = item.attempts + 1
        now = self.clock()
        r = self.retry
        if attempts >= r.max_attempts or now - item.created_at >= r.max_age_s:
            self.dead(item, detail)
            return None
        delay = min(r.max_delay_s, r.first_delay_s * 2 ** (attempts - 1))
        delay *= 0.5 + 0.5 * self.rand()  # jitter: receivers back up are not hit in step
        with self._lock:
            self._db.execute(
                "UPDATE items SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?",
                (attempts, now + delay, detail[:500], item.id),
            )
        return delay

    def _finish(self, item_id: int, state: str, detail: str, now: float, tried: int = 0) -> None:
        self._db.execute(
            "UPDATE items SET state = ?, finished_at = ?, last_error = ?, crop = x'', "
            "attempts = attempts + ? WHERE id = ?",
            (state, now, detail[:500], tried, item_id))  # fmt: skip

    # ------------------------------------------------------------ looking

    def counts(self, route: str | None = None) -> dict[str, int]:
        """Items by state (pending, done, dead), of one route or all."""
        sql = "SELECT state, count(*) FROM items"
        args: tuple[str, ...] = ()
        if route is not None:
            sql, args = sql + " WHERE route = ?", (route,)
        with self._lock:
            got = dict(self._db.execute(sql + " GROUP BY state", args).fetchall())
        return {s: int(got.get(s, 0)) for s in ("pending", "done", "dead")}

    def items(self, route: str | None = None, state: str | None = None) -> list[dict[str, object]]:
        """The items (without crops), oldest first: for inspection and tests."""
        sql = ("SELECT id, route, hit_id, revision, priority, delivery, state, attempts, "
               "last_error FROM items WHERE 1")  # fmt: skip
        args: list[str] = []
        for column, value in (("route", route), ("state", state)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        with self._lock:
            cur = self._db.execute(sql + " ORDER BY id", args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def prune(self) -> int:
        """Forget delivered and dead items older than `keep_days`; how many."""
        before = self.clock() - self.retry.keep_days * 86_400
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM items WHERE state != 'pending' AND finished_at < ?", (before,)
            )
        return cur.rowcount
