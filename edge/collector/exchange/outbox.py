"""The durable outbox: messages for partners' streams, kept in SQLite until their PubAck.

Rows are numbered in the order they were added and sent in that order to each partner;
a row leaves the outbox only once the partner's stream has stored it (its PubAck), so a
crash, a partner away, or the NATS server away loses nothing, and a message sent twice
is dropped by the receiving stream's duplicate window (`Nats-Msg-Id`) and by the
receiver itself.  `add` takes an open transaction (`transaction()`), so that what
causes a message (the sender's state) and the message commit together.  Adding wakes
the drainer through `on_added` at once: no polling delay.

A sent message is deleted, body and all, and only its id is kept (`outbox_sent`, for
`add` to recognise a message queued before, and for monitoring) until `purge_sent`
forgets it: the body is written once, never rewritten by marking it sent (nor zeroed
when deleted: `secure_delete=FAST`), and its pages are reused by the next ones, so the
file is as big as the backlog at its most.

The bodies of hits that forward_hits adds are not in SQLite at all but in the body log
(`bodies.py`, segment files in `<database>-bodies/`): written once, fdatasynced before
the transaction naming them commits; a segment goes when no row names it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.collector.exchange.bodies import BodyLog, BodyLost

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, partner TEXT NOT NULL, subject TEXT NOT NULL,
    msg_id TEXT NOT NULL, body BLOB NOT NULL, added_at REAL NOT NULL,
    sent_at REAL, tries INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '');
CREATE UNIQUE INDEX IF NOT EXISTS outbox_msg ON outbox(partner, msg_id);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(partner, id) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS outbox_sent (
    partner TEXT NOT NULL, msg_id TEXT NOT NULL, sent_at REAL NOT NULL,
    PRIMARY KEY (partner, msg_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_sent_at ON outbox_sent(sent_at);
"""
# Rows marked sent by an older version (sent_at set, body kept): their ids moved to
# outbox_sent, their bodies deleted.  `outbox.sent_at` stays NULL from then on.
_MIGRATE = """
INSERT OR IGNORE INTO outbox_sent (partner, msg_id, sent_at)
    SELECT partner, msg_id, sent_at FROM outbox WHERE sent_at IS NOT NULL;
DELETE FROM outbox WHERE sent_at IS NOT NULL;
"""


CACHE_KB = 32 << 10
PAGE_SIZE = 4096
# Bodies from this size on go to the body log (hits with pictures), smaller ones stay in
# their row (list changes, added by the sender's own connection, always do).
INLINE_MAX = 4096


# The bodies forward_hits just wrote to the body log are also kept in memory, up to this
# many bytes, so that the drainer packs them from there rather than reading them back.
RECENT_BYTES = 64 << 20

Body = bytes | tuple[bytes, ...]  # a body, or the pieces it is made of (`encode_hit_parts`)


@dataclass(frozen=True)
class Pending:
    id: int
    partner: str
    subject: str
    msg_id: str
    data: Body  # the body, or its pieces: `parts`, `body`
    tries: int

    @property
    def parts(self) -> tuple[bytes, ...]:
        return self.data if isinstance(self.data, tuple) else (self.data,)

    @property
    def body(self) -> bytes:
        """The body, joined (a copy) where it is held in pieces."""
        return self.data if isinstance(self.data, bytes) else b"".join(self.data)

    @property
    def size(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else sum(map(len, self.data))


class Outbox:
    """The outbox table in the SQLite database at `path` (shared with the exchange's state).

    Safe from any thread: one connection behind a lock.
    """

    def __init__(self, path: Path, on_added: Callable[[], None] | None = None, *,
                 log_bodies: bool = False):
        self.path = Path(path)
        # One connection per database may write bodies to the log (forward_hits'); any
        # can read them.
        self.bodies = BodyLog(self.path.with_name(self.path.name + "-bodies"),
                              writer=log_bodies)
        self._unsynced_bodies = False
        # (segment, offset) -> the pieces of a body just written there, oldest first
        self._recent: dict[tuple[int, int], tuple[bytes, ...]] = {}
        self._recent_bytes = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30,
                                   check_same_thread=False)
        # SQLite's own default again, now that hits' bodies are in the body log: small rows
        # in small pages (with the bodies in SQLite, 16 KB pages cost a third less CPU
        # than 4 KB; with them in the log, 4 KB pages write 140 KB a hit, 16 KB 158).
        # Only a new file takes it (an older one keeps its page size).
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Not the zeroing of every freed page (Debian's default, SECURE_DELETE): it would
        # write each sent body once more; the pages are overwritten by the next bodies.
        self._db.execute("PRAGMA secure_delete=FAST")
        # Room for a drainer's batch of bodies (64 hits of ~135 KB) and what was just added.
        self._db.execute(f"PRAGMA cache_size={-CACHE_KB}")
        self._lock = threading.RLock()
        self.on_added = on_added
        self._added = False
        with self._lock:
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
            for column in ("seg", "off", "len"):  # where a body in the log is
                if column not in columns:
                    self._db.execute(f"ALTER TABLE outbox ADD COLUMN {column} INTEGER")
            self._db.execute("CREATE INDEX IF NOT EXISTS outbox_seg ON outbox(seg) "
                             "WHERE seg IS NOT NULL")
            if self._db.execute("SELECT 1 FROM outbox WHERE sent_at IS NOT NULL LIMIT 1"
                                ).fetchone():
                with self.transaction() as db:
                    for statement in _MIGRATE.split(";"):
                        if statement.strip():
                            db.execute(statement)

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for other tables of the same database (inside `transaction`)."""
        return self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self.bodies.close()

    @contextlib.contextmanager
    def transaction(self, *, synced: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; the drainer is woken after it commits if it added rows.

        `synced=False`: its COMMIT does not fsync the WAL (synchronous=NORMAL for it
        alone), for what a power cut may undo at no loss: taking sent rows out (they
        would be sent again, and dropped by the stream's duplicate window and by the
        receiver).  A commit that adds rows must be synced (the default): the edges are
        acked once it returns.  Its fsync of the WAL also makes every frame before it
        durable, so no later synced commit can depend on one that was lost."""
        with self._lock:
            if not synced:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    self._added = self._unsynced_bodies = False
                    self._forget_recent()
                    raise
                if not synced and self._added:
                    self._db.execute("ROLLBACK")
                    self._added = self._unsynced_bodies = False
                    self._forget_recent()
                    raise RuntimeError("rows added in a transaction that is not synced")
                if self._unsynced_bodies:  # the bodies durable before the rows naming them
                    try:
                        self.bodies.sync()
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        self._added = self._unsynced_bodies = False
                        self._forget_recent()
                        raise
                    self._unsynced_bodies = False
                self._db.execute("COMMIT")
            finally:
                if not synced:
                    self._db.execute("PRAGMA synchronous=FULL")
            added, self._added = self._added, False
        if added and self.on_added is not None:
            self.on_added()

    def add(self, db: sqlite3.Connection, partner: str, subject: str, msg_id: str,
            body: Body) -> bool:
        """Queue a message in the open transaction `db`; False if `msg_id` is already queued
        (or was sent, and not yet purged) for this partner."""
        return self.add_many(db, [(partner, subject, msg_id, body)]) == 1

    def add_many(self, db: sqlite3.Connection,
                 items: Sequence[tuple[str, str, str, Body]]) -> int:
        """`add` for each (partner, subject, msg_id, body) of `items`, in order: the ids
        queued or sent before looked up together, the rows inserted together; how many
        were queued (a msg_id twice in `items`: once)."""
        queued = 0
        for i in range(0, len(items), 400):
            queued += self._add_chunk(db, items[i : i + 400])
        return queued

    def _add_chunk(self, db: sqlite3.Connection,
                   items: Sequence[tuple[str, str, str, Body]]) -> int:
        by_partner: dict[str, set[str]] = {}
        for partner, _, msg_id, _ in items:
            by_partner.setdefault(partner, set()).add(msg_id)
        have: set[tuple[str, str]] = set()
        for partner, ids in by_partner.items():  # by the indexes on (partner, msg_id)
            marks = ",".join("?" * len(ids))
            for table in ("outbox_sent", "outbox"):
                have.update(db.execute(
                    f"SELECT partner, msg_id FROM {table} WHERE partner = ? AND msg_id IN "
                    f"({marks})", (partner, *ids)).fetchall())
        now = time.time()
        logged, inline = [], []
        for partner, subject, msg_id, body in items:
            if (partner, msg_id) in have:
                continue
            have.add((partner, msg_id))
            parts = body if isinstance(body, tuple) else (body,)
            size = sum(map(len, parts))
            if self.bodies.writer and size >= INLINE_MAX:
                seg, off = self.bodies.append(parts)
                self._unsynced_bodies = True
                self._remember((seg, off), parts, size)
                logged.append((partner, subject, msg_id, b"", now, seg, off, size))
            else:
                inline.append((partner, subject, msg_id, b"".join(parts), now))
        if logged:
            db.executemany(
                "INSERT INTO outbox (partner, subject, msg_id, body, added_at, seg, off, len) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", logged)
        if inline:
            db.executemany(
                "INSERT OR IGNORE INTO outbox (partner, subject, msg_id, body, added_at) "
                "VALUES (?, ?, ?, ?, ?)", inline)
        if logged or inline:
            self._added = True
        return len(logged) + len(inline)

    def _remember(self, where: tuple[int, int], parts: tuple[bytes, ...], size: int) -> None:
        self._recent[where] = parts
        self._recent_bytes += size
        while self._recent_bytes > RECENT_BYTES and self._recent:
            old = self._recent.pop(next(iter(self._recent)))
            self._recent_bytes -= sum(map(len, old))

    def _forget_recent(self) -> None:
        self._recent.clear()
        self._recent_bytes = 0

    def add_one(self, partner: str, subject: str, msg_id: str, body: bytes) -> bool:
        with self.transaction() as db:
            return self.add(db, partner, subject, msg_id, body)

    def partners_pending(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT partner FROM outbox WHERE sent_at IS NULL").fetchall()
        return [r[0] for r in rows]

    def has_pending(self, partner: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM outbox WHERE partner = ? AND sent_at IS NULL "
                                    "LIMIT 1", (partner,)).fetchone() is not None

    def next_for(self, partner: str, limit: int = 64) -> list[Pending]:
        """The oldest unsent messages for `partner`, in the order they were added."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, partner, subject, msg_id, body, tries, seg, off, len FROM outbox "
                "WHERE partner = ? AND sent_at IS NULL ORDER BY id LIMIT ?",
                (partner, limit)).fetchall()
            out = []
            for *fields, seg, off, length in rows:
                if seg is not None:
                    parts = self._recent.pop((seg, off), None)
                    if parts is not None:  # just written: not read back
                        self._recent_bytes -= length
                        fields[4] = parts
                        out.append(Pending(*fields))
                        continue
                    try:
                        fields[4] = self.bodies.read(seg, off, length)
                    except BodyLost as e:  # only a segment someone else deleted or cut
                        log.error("exchange: outbox %s: the body of %s is lost (%s); dropped",
                                  self.path, fields[3], e)
                        self._db.execute("DELETE FROM outbox WHERE id = ?", (fields[0],))
                        continue
                out.append(Pending(*fields))
        return out

    def mark_sent(self, ids: Sequence[int]) -> None:
        """The rows `ids` were stored by the partner's stream: deleted, their ids kept in
        `outbox_sent` (call it inside `transaction()`, so both or neither happen)."""
        now = time.time()
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                marks = ",".join("?" * len(chunk))
                self._db.execute(
                    "INSERT OR IGNORE INTO outbox_sent (partner, msg_id, sent_at) "
                    f"SELECT partner, msg_id, ? FROM outbox WHERE id IN ({marks})",
                    (now, *chunk))
                self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)

    def reclaim(self) -> int:
        """Delete the body log's segments no row names any more, but the one being
        written; how many.  The WAL is fsynced first, so that the deletions of their rows
        (committed without an fsync by the drainer) cannot come back without them."""
        if not self.bodies.writer:
            return 0
        with self._lock:
            if not self.bodies.closed_before(None):
                return 0
            live = self._db.execute("SELECT min(seg) FROM outbox WHERE seg IS NOT NULL"
                                    ).fetchone()[0]
            gone = self.bodies.closed_before(live)
            if gone:
                wal = self.path.with_name(self.path.name + "-wal")
                with contextlib.suppress(FileNotFoundError):  # none: all in the file, synced
                    fd = os.open(wal, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                self.bodies.delete(gone)
        return len(gone)

    def mark_failed(self, row_id: int, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET tries = tries + 1, last_error = ? WHERE id = ?",
                             (error[:500], row_id))

    def backlog(self) -> dict[str, int]:
        """Unsent messages by partner."""
        with self._lock:
            rows = self._db.execute("SELECT partner, count(*) FROM outbox WHERE sent_at IS NULL "
                                    "GROUP BY partner").fetchall()
        return dict(rows)

    def sent_count(self) -> int:
        """Ids of sent messages still kept."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox_sent").fetchone()[0])

    def purge_sent(self, older_than_s: float = 3 * 86400.0, limit: int | None = None) -> int:
        """Forget the ids of messages sent before `older_than_s` ago, at most `limit` of
        them (the receivers keep them too: a message queued again after this is sent
        again, and dropped there)."""
        with self._lock:
            if limit is None:
                cursor = self._db.execute("DELETE FROM outbox_sent WHERE sent_at < ?",
                                          (time.time() - older_than_s,))
            else:
                cursor = self._db.execute(
                    "DELETE FROM outbox_sent WHERE (partner, msg_id) IN (SELECT partner, "
                    "msg_id FROM outbox_sent WHERE sent_at < ? ORDER BY sent_at LIMIT ?)",
                    (time.time() - older_than_s, limit))
        return cursor.rowcount
