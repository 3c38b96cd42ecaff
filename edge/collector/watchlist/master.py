"""The master watchlists, kept by the collector in SQLite; every change numbered in a log.

`WatchlistStore` keeps every list and entry (`data_dir/watchlists.db`, apart from the
hits database, so that a large import never holds up incoming hits).  Each change is
written, in the same transaction, as a numbered update in a change log, from which the
collector's `WatchlistServer` publishes and serves catch-up.  Any process may write
the store; the running collector notices within its `poll_s`.  `WatchlistReader`
reads it from any thread without ever writing it (the console).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.collector.agencies import DEFAULT_AGENCY, list_owner
from edge.collector.readonly import ReadPool
from edge.core.watchlist.entry import Entry, ListPolicy, check_list_name
from edge.core.watchlist.protocol import VERSION, row_to_wire

log = logging.getLogger(__name__)

UPSERT_BATCH = 1000  # entries per update message
DELETE_BATCH = 5000

_ENTRY_COLUMNS = (
    "id, pattern, list, agency, category, priority, reason, country, valid_from, valid_until, "
    "added_by"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lists (
    name TEXT PRIMARY KEY, seq INTEGER NOT NULL, active INTEGER NOT NULL,
    match TEXT NOT NULL, max_distance REAL NOT NULL, description TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, agency TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pattern TEXT NOT NULL, list TEXT NOT NULL,
    agency TEXT NOT NULL, category TEXT NOT NULL, priority INTEGER NOT NULL,
    reason TEXT NOT NULL, country TEXT, valid_from REAL, valid_until REAL,
    added_by TEXT NOT NULL, added_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS entries_key ON entries(list, pattern, ifnull(country, ''));
CREATE INDEX IF NOT EXISTS entries_by_list ON entries(list, id);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, list TEXT NOT NULL, seq INTEGER NOT NULL,
    at REAL NOT NULL, body TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS changes_by_list ON changes(list, seq);
"""
_INSERT = (
    f"INSERT INTO entries ({_ENTRY_COLUMNS}, added_at, updated_at) "
    f"VALUES (NULL, {', '.join('?' * 12)})"
)
_UPDATE = (
    "UPDATE entries SET agency = ?, category = ?, priority = ?, reason = ?, country = ?, "
    "valid_from = ?, valid_until = ?, added_by = ?, updated_at = ? WHERE id = ?"
)


@dataclass(frozen=True)
class ListInfo:
    policy: ListPolicy
    seq: int
    active: bool
    entries: int = 0
    agency: str = DEFAULT_AGENCY  # the owner: only its admins change the list


class ListOwnerError(ValueError):
    """A list that is another agency's, or a name that says it is (the message says whose)."""


def _owner(stored: str, default: str) -> str:
    """A list's owner as stored ("": a list from before agencies, the default agency's)."""
    return stored or default


def check_list_owner(name: str, agency: str) -> None:
    """A list named `<agency>.<list>` is that agency's copy: no other agency's own list may
    be named so (ListOwnerError)."""
    prefix = list_owner(name, agency)
    if prefix != agency:
        raise ListOwnerError(f"list {name}: a name <agency>.<list> is {prefix}'s list; an own "
                             f"list of {agency} may not be named so")  # fmt: skip


@dataclass(frozen=True)
class ImportResult:
    list: str
    added: int
    changed: int
    unchanged: int
    removed: int


def _entry_from_row(row: Sequence[Any]) -> Entry:
    return Entry(*row)


def _row(e: Entry) -> tuple[object, ...]:
    return (e.id, e.pattern, e.list, e.agency, e.category, e.priority, e.reason, e.country,
            e.valid_from, e.valid_until, e.added_by)  # fmt: skip


def _wire(e: Entry) -> list[object]:
    return row_to_wire(_row(e))


class WatchlistStore:
    """The master lists in SQLite at `path`.  One instance per thread."""

    def __init__(self, path: str | Path, *, default_agency: str = DEFAULT_AGENCY):
        self.path = Path(path)
        # The owner of new lists that name none, and of lists from before agencies.
        self.default_agency = default_agency
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._write() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            if "agency" not in {r[1] for r in db.execute("PRAGMA table_info(lists)")}:
                # a store from before agencies: its lists are the default agency's ("")
                db.execute("ALTER TABLE lists ADD COLUMN agency TEXT NOT NULL DEFAULT ''")
            if db.execute("SELECT 1 FROM meta WHERE key = 'epoch'").fetchone() is None:
                db.execute("INSERT INTO meta VALUES ('epoch', ?)", (secrets.token_hex(8),))
        self.epoch: str = self._db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[
            0
        ]

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    # ------------------------------------------------------------------ the change log

    def _emit(self, db: sqlite3.Connection, name: str, op: str, **payload: object) -> int:
        seq = db.execute("SELECT seq FROM lists WHERE name = ?", (name,)).fetchone()[0] + 1
        now = time.time()
        db.execute("UPDATE lists SET seq = ?, updated_at = ? WHERE name = ?", (seq, now, name))
        body = {"v": VERSION, "epoch": self.epoch, "list": name, "seq": seq, "op": op, **payload}
        db.execute(
            "INSERT INTO changes (list, seq, at, body) VALUES (?, ?, ?, ?)",
            (name, seq, now, json.dumps(body, separators=(",", ":"), ensure_ascii=False)),
        )
        return seq

    def _emit_upserts(self, db: sqlite3.Connection, name: str, entries: Sequence[Entry]) -> None:
        for i in range(0, len(entries), UPSERT_BATCH):
            self._emit(
                db, name, "upsert", entries=[_wire(e) for e in entries[i : i + UPSERT_BATCH]]
            )

    def data_version(self) -> int:
        """Changes when another connection commits (cheap; see SQLite's PRAGMA data_version)."""
        return self._db.execute("PRAGMA data_version").fetchone()[0]

    def last_change(self) -> int:
        return self._db.execute("SELECT ifnull(max(id), 0) FROM changes").fetchone()[0]

    def changes_after(self, change_id: int, limit: int = 500) -> list[tuple[int, str, str]]:
        """(id, list, body JSON) of log rows after `change_id`, oldest first."""
        return self._db.execute(
            "SELECT id, list, body FROM changes WHERE id > ? ORDER BY id LIMIT ?",
            (change_id, limit),
        ).fetchall()

    def list_changes(self, name: str, after_seq: int, limit: int) -> list[str]:
        rows = self._db.execute(
            "SELECT body FROM changes WHERE list = ? AND seq > ? ORDER BY seq LIMIT ?",
            (name, after_seq, limit),
        )
        return [r[0] for r in rows]

    def list_changes_with_ids(self, name: str, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """(log id, body JSON) of the updates of `name` after number `after_seq`."""
        return self._db.execute(
            "SELECT id, body FROM changes WHERE list = ? AND seq > ? ORDER BY seq LIMIT ?",
            (name, after_seq, limit),
        ).fetchall()

    def can_catch_up(self, name: str, since: int) -> bool:
        """Whether the log still holds every update of `name` after number `since`."""
        row = self._db.execute("SELECT seq FROM lists WHERE name = ?", (name,)).fetchone()
        if row is None or since > row[0]:
            return False
        if since == row[0]:
            return True
        sql = "SELECT 1 FROM changes WHERE list = ? AND seq = ?"
        return self._db.execute(sql, (name, since + 1)).fetchone() is not None

    # ------------------------------------------------------------------ reading

    def lists(
        self, names: Iterable[str] | None = None, *, counts: bool = False
    ) -> dict[str, ListInfo]:
        rows = self._db.execute(
            "SELECT name, seq, active, match, max_distance, description, agency FROM lists "
            "ORDER BY name"
        ).fetchall()
        wanted = None if names is None else set(names)
        out = {}
        for name, seq, active, match, distance, description, agency in rows:
            if wanted is not None and name not in wanted:
                continue
            n = 0
            if counts:
                sql = "SELECT count(*) FROM entries WHERE list = ?"
                n = self._db.execute(sql, (name,)).fetchone()[0]
            policy = ListPolicy(name, match, distance, description)
            out[name] = ListInfo(policy, seq, bool(active), n,
                                 _owner(agency, self.default_agency))  # fmt: skip
        return out

    def owner(self, name: str) -> str | None:
        """The agency owning list `name` (dropped lists too); None: no such list."""
        row = self._db.execute("SELECT agency FROM lists WHERE name = ?", (name,)).fetchone()
        return None if row is None else _owner(row[0], self.default_agency)

    def entries(self, name: str) -> Iterator[Entry]:
        return self._list_entries(self._db, name)

    def get(self, entry_id: int) -> Entry | None:
        sql = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE id = ?"
        row = self._db.execute(sql, (entry_id,)).fetchone()
        return None if row is None else _entry_from_row(row)

    def snapshot_chunk(
        self, name: str, after_id: int, limit: int, now: float | None = None
    ) -> list[list[object]]:
        """Wire rows of list `name` after entry `after_id`, leaving out expired entries."""
        rows = self._db.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE list = ? AND id > ? "
            "AND (valid_until IS NULL OR valid_until > ?) ORDER BY id LIMIT ?",
            (name, after_id, time.time() if now is None else now, limit),
        )
        return [row_to_wire(r) for r in rows]

    # ------------------------------------------------------------------ writing

    def _ensure_list(
        self, db: sqlite3.Connection, name: str, policy: ListPolicy | None, create: bool,
        agency: str | None = None,
    ) -> None:
        row = db.execute(
            "SELECT active, match, max_distance, description, agency FROM lists WHERE name = ?",
            (name,),
        ).fetchone()
        if row is not None and row[0]:
            owner = _owner(row[4], self.default_agency)
            if agency is not None and agency != owner:
                raise ListOwnerError(f"list {name} is {owner}'s, not {agency}'s")
            agency = owner
        else:
            agency = agency or self.default_agency
            check_list_owner(name, agency)
        if row is not None and row[0] and (policy is None or policy == ListPolicy(name, *row[1:4])):
            return
        if row is None or not row[0]:
            if not create:
                raise KeyError(f"no list {name!r} (create it with an import, or --create)")
            if policy is None:
                policy = ListPolicy(name)
        assert policy is not None
        now = time.time()
        db.execute(
            "INSERT INTO lists (name, seq, active, match, max_distance, description, created_at,"
            " updated_at, agency) VALUES (?, 0, 1, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE"
            " SET active = 1, match = excluded.match, max_distance = excluded.max_distance, "
            "description = excluded.description, updated_at = excluded.updated_at, "
            "agency = excluded.agency",
            (name, policy.match, policy.max_distance, policy.description, now, now, agency),
        )
        self._emit(db, name, "policy", policy=policy.to_json())

    def set_policy(self, policy: ListPolicy, *, agency: str | None = None) -> None:
        """Create list `policy.name` (owned by `agency`, default the default agency), or
        change how it matches (ListOwnerError: it is another agency's)."""
        with self._write() as db:
            self._ensure_list(db, policy.name, policy, create=True, agency=agency)

    def import_entries(
        self,
        name: str,
        entries: Sequence[Entry],
        *,
        replace_all: bool = False,
        policy: ListPolicy | None = None,
        create: bool = True,
        agency: str | None = None,
    ) -> ImportResult:
        """Add `entries` to list `name` in one transaction, all or nothing.

        An entry with the plate and country of one already on the list replaces it
        (keeping its id).  With `replace_all`, entries of the list that are not in
        `entries` are removed.  A new list is owned by `agency` (default: the default
        agency); a list of another agency than `agency` is refused (ListOwnerError).
        """
        check_list_name(name)
        for entry in entries:
            if entry.list != name:
                raise ValueError(f"entry {entry.pattern} is for list {entry.list}, not {name}")
        now = time.time()
        with self._write() as db:
            self._ensure_list(db, name, policy, create, agency)
            existing: dict[tuple[str, str | None], Entry] = {}
            if replace_all or len(entries) > 1000:
                existing = {(e.pattern, e.country): e for e in self._list_entries(db, name)}

            def old_of(key: tuple[str, str | None]) -> Entry | None:
                if replace_all or len(entries) > 1000:
                    return existing.get(key)
                # a few entries: look each up rather than read the whole list
                found = self._find(db, name, key[0], key[1], any_country=False)
                return found[0] if found else None

            changed: list[Entry] = []
            added = unchanged = 0
            keep: set[int] = set()
            for entry in entries:
                old = old_of((entry.pattern, entry.country))
                if old is None:
                    cursor = db.execute(_INSERT, (*_row(entry)[1:], now, now))
                    assert cursor.lastrowid is not None
                    changed.append(entry._replace(id=cursor.lastrowid))
                    added += 1
                    continue
                keep.add(old.id)
                new = entry._replace(id=old.id)
                if new == old:
                    unchanged += 1
                    continue
                db.execute(_UPDATE, (*_row(new)[3:], now, new.id))
                changed.append(new)
            self._emit_upserts(db, name, changed)
            removed: list[int] = []
            if replace_all:
                removed = sorted(e.id for e in existing.values() if e.id not in keep)
                for i in range(0, len(removed), DELETE_BATCH):
                    ids = removed[i : i + DELETE_BATCH]
                    db.executemany("DELETE FROM entries WHERE id = ?", [(x,) for x in ids])
                    self._emit(db, name, "delete", ids=ids)
        return ImportResult(name, added, len(changed) - added, unchanged, len(removed))

    @staticmethod
    def _list_entries(db: sqlite3.Connection, name: str) -> Iterator[Entry]:
        sql = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE list = ? ORDER BY id"
        for row in db.execute(sql, (name,)):
            yield _entry_from_row(row)

    @staticmethod
    def _find(
        db: sqlite3.Connection, name: str, pattern: str, country: str | None, any_country: bool
    ) -> list[Entry]:
        sql = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE list = ? AND pattern = ?"
        args: tuple[object, ...] = (name, pattern)
        if not any_country:
            sql += " AND ifnull(country, '') = ?"
            args += (country or "",)
        return [_entry_from_row(r) for r in db.execute(sql + " ORDER BY id", args)]

    def find(self, name: str, pattern: str, country: str | None = None) -> list[Entry]:
        """Entries of list `name` with this (normalised) pattern; of any country unless given."""
        return self._find(self._db, name, pattern, country, any_country=country is None)

    def add(self, entry: Entry, *, create: bool = False, agency: str | None = None) -> Entry:
        """Add (or replace) one entry; returns it with its id (`agency` as for an import)."""
        self.import_entries(entry.list, [entry], create=create, agency=agency)
        found = self._find(self._db, entry.list, entry.pattern, entry.country, any_country=False)
        return found[0]

    def expire(self, ids: Iterable[int], at: float | None = None) -> list[Entry]:
        """End the validity of entries now (or at `at`); returns the entries changed."""
        at = time.time() if at is None else at
        changed: list[Entry] = []
        with self._write() as db:
            for entry_id in ids:
                row = db.execute(
                    f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE id = ?", (entry_id,)
                ).fetchone()
                if row is None:
                    raise KeyError(f"no entry {entry_id}")
                e = _entry_from_row(row)
                new_from = e.valid_from if e.valid_from is None or e.valid_from < at else at
                new = e._replace(valid_until=at, valid_from=new_from)
                db.execute(
                    "UPDATE entries SET valid_from = ?, valid_until = ?, updated_at = ? "
                    "WHERE id = ?",
                    (new.valid_from, at, time.time(), e.id),
                )
                changed.append(new)
            by_list: dict[str, list[Entry]] = {}
            for e in changed:
                by_list.setdefault(e.list, []).append(e)
            for name, items in by_list.items():
                self._emit_upserts(db, name, items)
        return changed

    def drop_list(self, name: str) -> None:
        """Remove a list and all its entries; edges stop matching it."""
        with self._write() as db:
            row = db.execute("SELECT active FROM lists WHERE name = ?", (name,)).fetchone()
            if row is None or not row[0]:
                raise KeyError(f"no list {name!r}")
            db.execute("DELETE FROM entries WHERE list = ?", (name,))
            db.execute("UPDATE lists SET active = 0 WHERE name = ?", (name,))
            self._emit(db, name, "drop")

    def purge(self, now: float | None = None, retention_s: float = 7 * 86400) -> tuple[int, int]:
        """Delete entries expired more than `retention_s` ago, and log rows older than that.

        Edges drop expired entries themselves; this only keeps the store small.  A log
        row is kept while it is its list's last one (its number is still needed).
        Returns (entries, log rows) deleted.
        """
        cutoff = (time.time() if now is None else now) - retention_s
        with self._write() as db:
            old = db.execute(
                "SELECT id, list FROM entries WHERE valid_until < ? ORDER BY list", (cutoff,)
            ).fetchall()
            by_list: dict[str, list[int]] = {}
            for entry_id, name in old:
                by_list.setdefault(name, []).append(entry_id)
            for name, ids in by_list.items():
                db.executemany("DELETE FROM entries WHERE id = ?", [(x,) for x in ids])
                for i in range(0, len(ids), DELETE_BATCH):
                    self._emit(db, name, "delete", ids=ids[i : i + DELETE_BATCH])
            cursor = db.execute(
                "DELETE FROM changes WHERE at < ? AND seq < (SELECT seq FROM lists "
                "WHERE lists.name = changes.list)",
                (cutoff,),
            )
            return len(old), cursor.rowcount

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """A read transaction: what is read in it is one state of the store."""
        with self._read():
            yield


class WatchlistReader:
    """The master lists at `path`, read only, from any thread, over up to `connections`
    read-only connections: a reader never creates the store nor writes it.  Before the
    store is made, a read raises FileNotFoundError."""

    def __init__(self, path: str | Path, connections: int = 2, *,
                 default_agency: str = DEFAULT_AGENCY):  # fmt: skip
        self.path = Path(path)
        self.default_agency = default_agency
        self._pool = ReadPool(self.path, connections)

    def close(self) -> None:
        self._pool.close()

    def lists(self) -> list[ListInfo]:
        """The active lists by name, each with how many entries it holds, and its owner."""
        with self._pool.connection() as db:
            have = {r[1] for r in db.execute("PRAGMA table_info(lists)")}
            agency = "l.agency" if "agency" in have else "''"  # a store from before agencies
            rows = db.execute(
                "SELECT l.name, l.seq, l.match, l.max_distance, l.description,"
                f" (SELECT count(*) FROM entries e WHERE e.list = l.name), {agency}"
                " FROM lists l WHERE l.active ORDER BY l.name"
            ).fetchall()
        return [ListInfo(ListPolicy(name, match, distance, description), seq, True, n,
                         _owner(owner, self.default_agency))
                for name, seq, match, distance, description, n, owner in rows]  # fmt: skip

    def entries(
        self, name: str, *, after_id: int = 0, pattern: str = "", limit: int = 200
    ) -> list[Entry]:
        """Up to `limit` entries of list `name` after entry `after_id`, by id; with
        `pattern`, only those whose pattern (as text) it matches as an SQLite GLOB."""
        sql = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE list = ? AND id > ?"
        args: list[object] = [name, after_id]
        if pattern:
            sql += " AND pattern GLOB ?"
            args.append(pattern)
        with self._pool.connection() as db:
            rows = db.execute(sql + " ORDER BY id LIMIT ?", [*args, limit]).fetchall()
        return [_entry_from_row(r) for r in rows]

    def entries_by_id(self, ids: Iterable[int]) -> list[Entry]:
        """The entries with these ids (those there are, in no particular order)."""
        ids = list(ids)
        out: list[Entry] = []
        with self._pool.connection() as db:
            for i in range(0, len(ids), 500):  # SQLite's limit on parameters
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE id IN ({marks})"
                out += [_entry_from_row(r) for r in db.execute(sql, chunk)]
        return out
