"""The edge's copy of its watchlists in SQLite, so a restarted edge with no network still matches.

Written by one thread (the sync client), read by others; WAL mode lets a matcher
rebuild read a consistent snapshot while updates keep landing.  Each list records the
number of the last update applied to it; `apply` refuses an update that is not the
next one, so the replica is always the master's state of each list at some number.

An entry is kept as the matcher's index wants it, so that loading a million takes
seconds: its fixed fields as one packed record (`edge.core.watchlist.index.STORED`, with
repeated strings as codes into the `names` table), beside its pattern and reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import math
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.core.watchlist.entry import Entry, ListPolicy
from edge.core.watchlist.index import STORED, STORED_STRUCT, CompactIndex, NameCodes, Row
from edge.core.watchlist.matcher import Matcher
from edge.core.watchlist.protocol import Update

log = logging.getLogger(__name__)

_ENTRY_TABLE = """(
    id INTEGER PRIMARY KEY, list TEXT NOT NULL, pattern TEXT NOT NULL, reason TEXT NOT NULL,
    valid_until REAL, record BLOB NOT NULL)"""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lists (
    name TEXT PRIMARY KEY, seq INTEGER NOT NULL, active INTEGER NOT NULL,
    match TEXT NOT NULL, max_distance REAL NOT NULL, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS names (
    kind TEXT NOT NULL, code INTEGER NOT NULL, value TEXT, PRIMARY KEY (kind, code));
CREATE TABLE IF NOT EXISTS entries {_ENTRY_TABLE};
CREATE INDEX IF NOT EXISTS entries_by_list ON entries(list);
CREATE TABLE IF NOT EXISTS staging {_ENTRY_TABLE};
"""
_COLUMNS = "id, list, pattern, reason, valid_until, record"
_SCHEMA_VERSION = "1"


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


def _release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc keeps them otherwise).

    A build frees a few hundred megabytes of rows and temporaries; without this the
    process keeps them resident, and its RSS looks (and is, to the OOM killer) twice
    the index it holds.  Elsewhere than glibc this does nothing.
    """
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


class WatchlistReplica:
    """Watchlists on disk at `path` (created if missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._conns: dict[int, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        self._codes = NameCodes()  # the writer's; reloaded after a rollback
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        with self._write() as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            version = None
            if "meta" in tables:
                row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                version = row and row[0]
            if tables and version != _SCHEMA_VERSION:
                # A replica is a copy: one of another layout is dropped and fetched again.
                log.warning("%s: replica of another layout (%s); starting it afresh",
                            self.path, version)  # fmt: skip
                for table in ("meta", "lists", "names", "entries", "staging"):
                    db.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (_SCHEMA_VERSION,))
        self._codes = NameCodes(self._names())

    def _names(self) -> dict[str, list]:
        names: dict[str, list] = {"country": [None]}  # country code 0: none given
        for kind, code, value in self._db().execute(
            "SELECT kind, code, value FROM names ORDER BY kind, code"
        ):
            values = names.setdefault(kind, [])
            if code != len(values):
                raise ReplicaError(f"{self.path}: names of {kind} are not numbered 0, 1, 2...")
            values.append(value)
        return names

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
            if self._codes.added:  # names first met in this transaction
                db.executemany("INSERT INTO names VALUES (?, ?, ?)", self._codes.added)
        except BaseException:
            db.execute("ROLLBACK")
            self._codes = NameCodes(self._names())
            raise
        db.execute("COMMIT")
        self._codes.added.clear()

    def _stored_rows(self, rows: Iterable[Row]) -> list[tuple]:
        """Rows as the entries table keeps them."""
        stored = self._codes.stored
        return [(r[0], r[2], r[1], r[6], r[9], stored(r)) for r in rows]

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

    def _stored(
        self, chunk: int = 20_000, now: float | None = None
    ) -> Iterator[tuple[np.ndarray, Sequence[str], Sequence[str]]]:
        """Records, patterns and reasons of the entries in force or yet to come at `now`."""
        cursor = self._db().execute(
            "SELECT record, pattern, reason FROM entries "
            "WHERE valid_until IS NULL OR valid_until > ?",
            (time.time() if now is None else now,),
        )
        while batch := cursor.fetchmany(chunk):
            records, patterns, reasons = zip(*batch, strict=True)
            yield np.frombuffer(b"".join(records), STORED), patterns, reasons

    def entries(
        self, list_name: str | None = None, ids: Sequence[int] | None = None
    ) -> list[Entry]:
        """Entries (of one list, or with these ids) as `Entry`, for inspection and tests;
        matching goes through the index."""
        sql = "SELECT record, pattern, reason FROM entries"
        args: tuple[object, ...] = ()
        if list_name is not None:
            sql, args = sql + " WHERE list = ?", (list_name,)
        elif ids is not None:
            sql, args = sql + f" WHERE id IN ({', '.join('?' * len(ids))})", tuple(ids)
        names = self._names()
        out = []
        for record, pattern, reason in self._db().execute(sql + " ORDER BY id", args):
            eid, vf, vu, lst, agency, category, added_by, country, priority = STORED_STRUCT.unpack(
                record
            )
            out.append(Entry(
                eid, pattern, names["list"][lst], names["agency"][agency],
                names["category"][category], priority, reason, names["country"][country],
                None if vf == -math.inf else vf, None if vu == math.inf else vu,
                names["added_by"][added_by],
            ))  # fmt: skip
        return out

    def build_index(self, now: float | None = None) -> CompactIndex:
        """The matcher's index of the replica (call in a read transaction, as
        `build_matcher` does, if writes may happen meanwhile)."""
        with _gc_paused():
            index = CompactIndex.build_stored(self._stored(now=now), self._names())
        _release_freed_memory()
        return index

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
        try:
            self._apply(updates)
        except (sqlite3.IntegrityError, struct.error, OverflowError) as e:
            # An update the replica cannot hold: the caller fetches the list whole.
            raise ReplicaError(f"update of {updates[0].list} cannot be stored: {e}") from e

    def _apply(self, updates: Sequence[Update]) -> None:
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

    def _apply_one(self, db: sqlite3.Connection, u: Update) -> None:
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
            db.executemany(
                f"INSERT OR REPLACE INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                self._stored_rows(u.rows),
            )
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
                f"INSERT OR REPLACE INTO staging ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                self._stored_rows(rows),
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
