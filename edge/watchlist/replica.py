"""The edge's copy of its watchlists in SQLite, so a restarted edge with no network still matches.

Written by one thread (the sync client), read by others; WAL mode lets a matcher
rebuild read a consistent snapshot while updates keep landing.  Each list records the
number of the last update applied to it; `apply` refuses an update that is not the
next one, so the replica is always the master's state of each list at some number.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.watchlist.entry import ListPolicy
from edge.watchlist.index import CompactIndex, Row
from edge.watchlist.matcher import Matcher
from edge.watchlist.protocol import Update

log = logging.getLogger(__name__)

_COLUMNS = (
    "id, pattern, list, agency, category, priority, reason, country, valid_from, valid_until, "
    "added_by"
)
_ENTRY_TABLE = """(
    id INTEGER PRIMARY KEY, pattern TEXT NOT NULL, list TEXT NOT NULL, agency TEXT NOT NULL,
    category TEXT NOT NULL, priority INTEGER NOT NULL, reason TEXT NOT NULL, country TEXT,
    valid_from REAL, valid_until REAL, added_by TEXT NOT NULL)"""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lists (
    name TEXT PRIMARY KEY, seq INTEGER NOT NULL, active INTEGER NOT NULL,
    match TEXT NOT NULL, max_distance REAL NOT NULL, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries {_ENTRY_TABLE};
CREATE INDEX IF NOT EXISTS entries_by_list ON entries(list);
CREATE TABLE IF NOT EXISTS staging {_ENTRY_TABLE};
"""
_INSERT = f"INSERT OR REPLACE INTO entries ({_COLUMNS}) VALUES ({', '.join('?' * 11)})"


class ReplicaError(RuntimeError):
    """An update does not fit the replica (wrong epoch, or not the next number of its list)."""


@dataclass(frozen=True)
class ListState:
    policy: ListPolicy
    seq: int
    active: bool


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Bulk loads make millions of short-lived tuples; full collections would rescan them."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class WatchlistReplica:
    """Watchlists on disk at `path` (created if missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._conns: dict[int, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        with self._write() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def _db(self) -> sqlite3.Connection:
        """This thread's connection."""
        key = threading.get_ident()
        db = self._conns.get(key)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            db.execute("PRAGMA synchronous=NORMAL")
            with self._lock:
                self._conns[key] = db
        return db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for db in conns:
            db.close()

    # ------------------------------------------------------------------ reading

    @property
    def epoch(self) -> str | None:
        row = self._db().execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        return None if row is None else row[0]

    def lists(self) -> dict[str, ListState]:
        """Every list the replica knows, dropped ones included (they keep their number)."""
        rows = self._db().execute(
            "SELECT name, seq, active, match, max_distance, description FROM lists"
        )
        return {
            name: ListState(ListPolicy(name, match, distance, description), seq, bool(active))
            for name, seq, active, match, distance, description in rows
        }

    def policies(self) -> dict[str, ListPolicy]:
        return {name: s.policy for name, s in self.lists().items() if s.active}

    def count(self, list_name: str | None = None) -> int:
        if list_name is None:
            return self._db().execute("SELECT count(*) FROM entries").fetchone()[0]
        sql = "SELECT count(*) FROM entries WHERE list = ?"
        return self._db().execute(sql, (list_name,)).fetchone()[0]

    def rows(self, chunk: int = 20_000, now: float | None = None) -> Iterator[list[Row]]:
        """Entries in force or yet to come at `now` (default the clock), in chunks."""
        cursor = self._db().execute(
            f"SELECT {_COLUMNS} FROM entries WHERE valid_until IS NULL OR valid_until > ?",
            (time.time() if now is None else now,),
        )
        while batch := cursor.fetchmany(chunk):
            yield batch

    def build_index(self, now: float | None = None) -> CompactIndex:
        with _gc_paused():
            return CompactIndex.build(self.rows(now=now))

    def build_matcher(self) -> Matcher:
        """A `Matcher` of everything in the replica (seconds for a million entries)."""
        db = self._db()
        db.execute("BEGIN")  # one snapshot for the lists and the entries
        try:
            policies = self.policies()
            base = self.build_index()
        finally:
            db.execute("COMMIT")
        return Matcher(lists=policies.values(), base=base)

    def begin_read(self) -> None:
        """Start a read transaction in this thread: its reads see the replica as of now,
        whatever other threads write, until `end_read`."""
        db = self._db()
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM lists").fetchone()  # takes the snapshot now

    def end_read(self) -> None:
        self._db().execute("COMMIT")

    # ------------------------------------------------------------------ writing

    def new_epoch(self, epoch: str) -> None:
        """The master store is another one (`epoch` names it): every list must be fetched
        in full again (its number becomes -1), but its entries match until then."""
        with self._write() as db:
            db.execute("UPDATE lists SET seq = -1")
            db.execute("DELETE FROM staging")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (epoch,))
        log.info("watchlist replica now follows master store %s", epoch)

    def apply(self, updates: Sequence[Update]) -> None:
        """Apply updates in one transaction: all of them or, on `ReplicaError`, none."""
        if not updates:
            return
        with self._write() as db:
            epoch = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            seqs = dict(db.execute("SELECT name, seq FROM lists"))
            for u in updates:
                if epoch is None or u.epoch != epoch[0]:
                    raise ReplicaError(f"update of {u.list} is from master store {u.epoch}")
                expected = seqs.get(u.list, 0) + 1
                if u.seq != expected:
                    raise ReplicaError(f"update {u.seq} of {u.list}, expected {expected}")
                if u.op != "policy" and u.list not in seqs:
                    raise ReplicaError(f"update {u.seq} of {u.list}: list unknown")
                self._apply_one(db, u)
                seqs[u.list] = u.seq

    @staticmethod
    def _apply_one(db: sqlite3.Connection, u: Update) -> None:
        if u.op == "policy":
            assert u.policy is not None
            p = u.policy
            db.execute(
                "INSERT OR REPLACE INTO lists VALUES (?, ?, 1, ?, ?, ?)",
                (u.list, u.seq, p.match, p.max_distance, p.description),
            )
            return
        db.execute("UPDATE lists SET seq = ? WHERE name = ?", (u.seq, u.list))
        if u.op == "upsert":
            db.executemany(_INSERT, u.rows)
        elif u.op == "delete":
            db.executemany("DELETE FROM entries WHERE id = ? AND list = ?",
                           [(i, u.list) for i in u.ids])  # fmt: skip
        elif u.op == "drop":
            db.execute("DELETE FROM entries WHERE list = ?", (u.list,))
            db.execute("UPDATE lists SET active = 0 WHERE name = ?", (u.list,))

    def stage_begin(self) -> None:
        """Start receiving a list's full snapshot; the live entries stay as they are."""
        with self._write() as db:
            db.execute("DELETE FROM staging")

    def stage_rows(self, rows: Iterable[Row]) -> None:
        with self._write() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO staging ({_COLUMNS}) VALUES ({', '.join('?' * 11)})",
                rows,
            )

    def stage_commit(
        self, epoch: str, name: str, policy: ListPolicy, seq: int, active: bool
    ) -> None:
        """Replace list `name` with the staged entries, at update number `seq`."""
        with self._write() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            if row is None or row[0] != epoch:
                raise ReplicaError(f"snapshot of {name} is from master store {epoch}")
            db.execute("DELETE FROM entries WHERE list = ?", (name,))
            if active:
                db.execute(
                    f"INSERT OR REPLACE INTO entries ({_COLUMNS}) "
                    f"SELECT {_COLUMNS} FROM staging WHERE list = ?",
                    (name,),
                )
            db.execute("DELETE FROM staging")
            db.execute(
                "INSERT OR REPLACE INTO lists VALUES (?, ?, ?, ?, ?, ?)",
                (name, seq, int(active), policy.match, policy.max_distance, policy.description),
            )

    def forget(self, names: Iterable[str]) -> None:
        """Drop lists the master no longer has at all."""
        with self._write() as db:
            for name in names:
                db.execute("DELETE FROM entries WHERE list = ?", (name,))
                db.execute("DELETE FROM lists WHERE name = ?", (name,))

    def compact(self, now: float | None = None) -> int:
        """Delete entries that expired before `now`; returns how many."""
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM entries WHERE valid_until <= ?", (time.time() if now is None else now,)
            )
            return cursor.rowcount
