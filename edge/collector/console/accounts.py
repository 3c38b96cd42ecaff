"""The console's own database: users (argon2 hashes), sessions, acknowledgements, audit trail.

It lives beside the hits (`data_dir/console.db`), apart from `hits.db` so that a
console write never holds up a commit of hits.  Acknowledgements and audit rows are
only ever added: triggers make SQLite refuse to change or delete them, whoever asks.
A session is known by the SHA-256 of its token; the token itself is only in the
operator's cookie.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from edge.collector.agencies import DEFAULT_AGENCY, is_agency_id
from edge.collector.console.i18n import check_language
from edge.core.times import iso

# An investigator is an operator who may also search the nodes' reads (with a case).
ROLES = ("operator", "admin", "investigator")
MIN_PASSWORD = 10
MAX_NOTE = 1000
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_TOUCH_EVERY_S = 30.0  # a session's last_seen is written at most this often
# Audit rows younger than this are never deleted: the trigger below refuses, whoever asks.
AUDIT_MIN_DAYS = 365

# The users table as it is made now (see `_widen_roles` for one from before).
_USERS = """CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('operator', 'admin', 'investigator')),
    password_hash TEXT NOT NULL, active INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, agency TEXT NOT NULL DEFAULT '',
    language TEXT NOT NULL DEFAULT '')"""

_SCHEMA = """
{USERS};
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name),
    created_at REAL NOT NULL, last_seen REAL NOT NULL, address TEXT);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions(user);
CREATE TABLE IF NOT EXISTS acks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, hit_id TEXT NOT NULL, user TEXT NOT NULL,
    display_name TEXT NOT NULL, note TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS acks_by_hit ON acks(hit_id, id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, user TEXT NOT NULL,
    action TEXT NOT NULL, detail TEXT NOT NULL, address TEXT);
CREATE TRIGGER IF NOT EXISTS acks_no_update BEFORE UPDATE ON acks
    BEGIN SELECT RAISE(ABORT, 'acknowledgements are kept as written'); END;
CREATE TRIGGER IF NOT EXISTS acks_no_delete BEFORE DELETE ON acks
    BEGIN SELECT RAISE(ABORT, 'acknowledgements are kept as written'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is kept as written'); END;
DROP TRIGGER IF EXISTS audit_no_delete;
CREATE TRIGGER IF NOT EXISTS audit_delete_only_old BEFORE DELETE ON audit
    WHEN old.at > CAST(strftime('%s', 'now') AS REAL) - {AUDIT_MIN_DAYS} * 86400
    BEGIN SELECT RAISE(ABORT, 'the audit trail is kept as written'); END;
""".replace("{AUDIT_MIN_DAYS}", str(AUDIT_MIN_DAYS)).replace("{USERS}", _USERS)


class AccountError(ValueError):
    """A user, password or role that cannot be taken (the message says why)."""


@dataclass(frozen=True)
class User:
    name: str
    display_name: str
    role: str
    active: bool = True
    agency: str = DEFAULT_AGENCY  # what the user sees and changes is this agency's
    language: str = ""  # of the console's page (edge.collector.console.i18n); "": the browser's

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_investigator(self) -> bool:
        """May search the nodes' reads (edge.collector.search); an admin may not."""
        return self.role == "investigator"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "display_name": self.display_name, "role": self.role,
                "agency": self.agency, "language": self.language}  # fmt: skip


@dataclass(frozen=True)
class Ack:
    """Someone said they are dealing with a hit."""

    id: int
    hit_id: str
    user: str
    display_name: str
    note: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "hit_id": self.hit_id, "user": self.user,
                "display_name": self.display_name, "note": self.note,
                "at": iso(self.at, "milliseconds")}  # fmt: skip


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not _USER_NAME.match(name):
        raise AccountError("a user name is 1-64 letters, digits, '.', '_', '@' or '-'")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise AccountError("a password of more than 1024 characters")
    return password


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleDB:
    """The console's SQLite database at `path`; safe to share between threads."""

    def __init__(
        self, path: str | Path, *, hasher: PasswordHasher | None = None,
        default_agency: str = DEFAULT_AGENCY,
    ):
        self.path = Path(path)
        # The agency of users and audit rows from before agencies (stored as "").
        self.default_agency = default_agency
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._hasher = hasher or PasswordHasher()
        # For unknown users: verify against this, so that a name's existence does not
        # show in how long a refusal takes.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledgement survives a power cut
        with self._lock:  # in one transaction: never a moment without the audit's triggers
            self._db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA}; COMMIT;")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for table in ("users", "audit"):  # made before agencies: "" is the default's
                    have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                    if "agency" not in have:
                        self._db.execute(
                            f"ALTER TABLE {table} ADD COLUMN agency TEXT NOT NULL DEFAULT ''")
                have = {r[1] for r in self._db.execute("PRAGMA table_info(users)")}
                if "language" not in have:  # made before the page had languages
                    self._db.execute(
                        "ALTER TABLE users ADD COLUMN language TEXT NOT NULL DEFAULT ''")
                self._db.execute("CREATE INDEX IF NOT EXISTS audit_by_agency ON audit(agency, id)")
                self._widen_roles()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        # After the migration: with foreign keys on, dropping the table the sessions name
        # would delete them (and SQLite cannot turn them off inside a transaction).
        self._db.execute("PRAGMA foreign_keys=ON")

    def _widen_roles(self) -> None:
        """A users table from before the investigator role has a CHECK that refuses it:
        SQLite cannot change a CHECK, so the table is made again and its rows copied (in
        the caller's transaction; the sessions' references name the table, and stay)."""
        row = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'users'").fetchone()
        if "'investigator'" in row[0]:
            return
        self._db.execute("DROP TABLE IF EXISTS users_new")
        self._db.execute(_USERS.replace("users (", "users_new (", 1))
        have = [r[1] for r in self._db.execute("PRAGMA table_info(users)")]
        columns = ", ".join(have)  # every column the old table had (the migrations above ran)
        self._db.execute(f"INSERT INTO users_new ({columns}) SELECT {columns} FROM users")
        self._db.execute("DROP TABLE users")
        self._db.execute("ALTER TABLE users_new RENAME TO users")

    def _agency(self, stored: str) -> str:
        return stored or self.default_agency

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _change(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Run a statement that writes; returns the rows it changed."""
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # ------------------------------------------------------------ users

    def add_user(
        self, name: str, password: str, role: str, display_name: str = "", *,
        replace: bool = False, agency: str | None = None,
    ) -> User:
        """Add (or with `replace`, replace) a user of `agency` (default: the default agency)."""
        check_user_name(name)
        check_password(password)
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}")
        agency = agency or self.default_agency
        if not is_agency_id(agency):
            raise AccountError(f"{agency!r} is not an agency id (lt-vsat, pl-sg)")
        display_name = (display_name or name).strip()[:200]
        digest = self._hasher.hash(password)
        now = time.time()
        with self._lock:
            exists = self._db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone()
            if exists and not replace:
                raise AccountError(f"user {name!r} exists (replace it with --force)")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO users (name, display_name, role, password_hash, active,"
                    " created_at, updated_at, agency) VALUES (?, ?, ?, ?, 1, ?, ?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET"
                    " display_name = excluded.display_name, role = excluded.role,"
                    " password_hash = excluded.password_hash, active = 1,"
                    " updated_at = excluded.updated_at, agency = excluded.agency",
                    (name, display_name, role, digest, now, now, agency),
                )
                self._db.execute("DELETE FROM sessions WHERE user = ?", (name,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return User(name, display_name, role, agency=agency, language=self._language(name))

    def _language(self, name: str) -> str:
        row = self._one("SELECT language FROM users WHERE name = ?", (name,))
        return str(row[0]) if row else ""

    def set_language(self, name: str, language: str) -> None:
        """Remember the language `name` reads the console in ("": the browser's)."""
        try:
            check_language(language)
        except ValueError as e:
            raise AccountError(str(e)) from None
        changed = self._change(
            "UPDATE users SET language = ?, updated_at = ? WHERE name = ?",
            (language, time.time(), name),
        )
        if changed == 0:
            raise AccountError(f"no user {name!r}")

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        digest = self._hasher.hash(password)
        changed = self._change(
            "UPDATE users SET password_hash = ?, updated_at = ? WHERE name = ?",
            (digest, time.time(), name),
        )
        if changed == 0:
            raise AccountError(f"no user {name!r}")
        self.end_sessions(name)

    def set_active(self, name: str, active: bool) -> None:
        changed = self._change(
            "UPDATE users SET active = ?, updated_at = ? WHERE name = ?",
            (int(active), time.time(), name),
        )
        if changed == 0:
            raise AccountError(f"no user {name!r}")
        if not active:
            self.end_sessions(name)

    def users(self) -> list[User]:
        rows = self._all(
            "SELECT name, display_name, role, active, agency, language FROM users ORDER BY name")
        return [User(n, d, r, bool(a), self._agency(g), lang) for n, d, r, a, g, lang in rows]

    def user(self, name: str) -> User | None:
        row = self._one(
            "SELECT name, display_name, role, active, agency, language FROM users WHERE name = ?",
            (name,),
        )
        return None if row is None else User(row[0], row[1], row[2], bool(row[3]),
                                             self._agency(row[4]), row[5])  # fmt: skip

    def authenticate(self, name: str, password: str) -> User | None:
        """The user, if `password` is theirs and they are active; None otherwise."""
        row = self._one("SELECT password_hash, active FROM users WHERE name = ?", (name,))
        digest = row[0] if row else self._dummy_hash
        try:
            self._hasher.verify(digest, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or not row[1]:
            return None
        if self._hasher.check_needs_rehash(digest):  # the library's parameters moved on
            self._change("UPDATE users SET password_hash = ? WHERE name = ?",
                      (self._hasher.hash(password), name))  # fmt: skip
        return self.user(name)

    # ------------------------------------------------------------ sessions

    def new_session(self, user: User, address: str | None = None) -> str:
        """A new session for `user`; returns the token for the cookie."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        self._change(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
            (_token_hash(token), user.name, now, now, address),
        )
        return token

    def session_user(self, token: str, idle_s: float, max_s: float) -> User | None:
        """The signed-in user of `token`, or None when it is unknown, expired or disabled.

        An expired session is deleted; a live one is noted as used (now and then).
        """
        if not token or len(token) > 200:
            return None
        key = _token_hash(token)
        row = self._one(
            "SELECT s.created_at, s.last_seen, u.name, u.display_name, u.role, u.active,"
            " u.agency, u.language FROM sessions s JOIN users u ON u.name = s.user"
            " WHERE s.token_hash = ?",
            (key,),
        )
        if row is None:
            return None
        created, last_seen, name, display, role, active, agency, language = row
        now = time.time()
        if not active or now - last_seen > idle_s or now - created > max_s:
            self._change("DELETE FROM sessions WHERE token_hash = ?", (key,))
            return None
        if now - last_seen > _TOUCH_EVERY_S:
            self._change("UPDATE sessions SET last_seen = ? WHERE token_hash = ?", (now, key))
        return User(name, display, role, agency=self._agency(agency), language=language)

    def end_session(self, token: str) -> None:
        self._change("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))

    def end_sessions(self, name: str) -> None:
        self._change("DELETE FROM sessions WHERE user = ?", (name,))

    def purge_sessions(self, idle_s: float, max_s: float, now: float | None = None) -> int:
        """Delete the sessions expired at `now`; returns how many."""
        now = time.time() if now is None else now
        return self._change(
            "DELETE FROM sessions WHERE last_seen < ? OR created_at < ?",
            (now - idle_s, now - max_s),
        )

    # ------------------------------------------------------------ acknowledgements, audit

    def acknowledge(self, hit_id: str, user: User, note: str = "",
                    address: str | None = None) -> Ack:  # fmt: skip
        note = " ".join(note.split())[:MAX_NOTE]  # one line, no control characters
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO acks (hit_id, user, display_name, note, at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (hit_id, user.name, user.display_name, note, now),
                )
                self._db.execute(
                    "INSERT INTO audit (at, user, action, detail, address, agency)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (now, user.name, "acknowledge", f"hit {hit_id}: {note}".rstrip(": "), address,
                     user.agency),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        assert cur.lastrowid is not None
        return Ack(cur.lastrowid, hit_id, user.name, user.display_name, note, now)

    def acks_for(self, hit_ids: list[str]) -> dict[str, list[Ack]]:
        """Every acknowledgement of each of `hit_ids`, oldest first."""
        out: dict[str, list[Ack]] = {}
        for i in range(0, len(hit_ids), 500):
            chunk = hit_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._all(
                "SELECT id, hit_id, user, display_name, note, at FROM acks"
                f" WHERE hit_id IN ({marks}) ORDER BY id",
                tuple(chunk),
            )
            for r in rows:
                out.setdefault(r[1], []).append(Ack(*r))
        return out

    def audit(self, user: str, action: str, detail: str = "", address: str | None = None,
              *, agency: str = "") -> None:  # fmt: skip
        """Append a row: `user` did `action`, acting for `agency` ("": for none, such as a
        refused sign-in of an unknown name; shown to the default agency's admins)."""
        self._change(
            "INSERT INTO audit (at, user, action, detail, address, agency)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), user, action, detail[:2000], address, agency),
        )

    def purge_audit(self, keep_days: float, now: float | None = None) -> int:
        """Delete audit rows older than `keep_days` (at least AUDIT_MIN_DAYS); returns how many.

        The database's trigger refuses younger ones, whatever clock `now` comes from.
        """
        if keep_days < AUDIT_MIN_DAYS:
            raise AccountError(f"the audit trail is kept at least {AUDIT_MIN_DAYS} days")
        now = time.time() if now is None else now
        return self._change("DELETE FROM audit WHERE at < ?", (now - keep_days * 86400,))

    def audit_trail(
        self, before_id: int | None = None, limit: int = 200, *, agency: str | None = None
    ) -> list[dict[str, Any]]:
        """Audit rows, newest first (before `before_id`, to page back); with `agency`, only
        the rows of that agency's actors (the default agency's: also those of none)."""
        where, args = "", []
        if agency is not None:
            mine = [agency, ""] if agency == self.default_agency else [agency]
            where = f" AND agency IN ({', '.join('?' * len(mine))})"
            args = mine
        rows = self._all(
            f"SELECT id, at, user, action, detail, address, agency FROM audit WHERE id < ?{where}"
            " ORDER BY id DESC LIMIT ?",
            (before_id if before_id is not None else 2**62, *args, limit),
        )
        return [{"id": i, "at": iso(at, "milliseconds"), "user": u, "action": a, "detail": d,
                 "address": addr, "agency": g}
                for i, at, u, a, d, addr, g in rows]  # fmt: skip
