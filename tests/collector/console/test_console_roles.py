"""The investigator role: a console database from before it is rebuilt to take it, users and
sessions kept; the CLI adds investigators."""

from __future__ import annotations

import sqlite3

import pytest

from edge.collector.console.accounts import AccountError, ConsoleDB

_OLD = """
CREATE TABLE users (
    name TEXT PRIMARY KEY, display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('operator', 'admin')),
    password_hash TEXT NOT NULL, active INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name),
    created_at REAL NOT NULL, last_seen REAL NOT NULL, address TEXT);
INSERT INTO users VALUES ('olga', 'Olga', 'operator', 'x', 1, 1, 1);
INSERT INTO sessions VALUES ('h', 'olga', 1, 1, NULL);
"""


def test_a_database_from_before_the_role_takes_investigators_and_keeps_its_rows(tmp_path):
    path = tmp_path / "console.db"
    db = sqlite3.connect(path)
    db.executescript(_OLD)
    db.close()
    with pytest.raises(sqlite3.IntegrityError):  # what the old CHECK did
        db = sqlite3.connect(path)
        db.execute("UPDATE users SET role = 'investigator'")
    db.close()
    console = ConsoleDB(path)
    try:
        ivan = console.add_user("ivan", "investigator 1", "investigator", agency="lt-vsat")
        assert ivan.is_investigator and not ivan.is_admin
        assert [(u.name, u.role) for u in console.users()] == [
            ("ivan", "investigator"), ("olga", "operator")]
        assert console._all("SELECT token_hash, user FROM sessions") == [("h", "olga")]
        assert console._all("PRAGMA foreign_keys") == [(1,)]
        assert console._all("PRAGMA foreign_key_check") == []
        with pytest.raises(AccountError):
            console.add_user("eve", "some password", "superuser")
    finally:
        console.close()
    again = ConsoleDB(path)  # opened again: nothing more to do, nothing lost
    assert [u.name for u in again.users()] == ["ivan", "olga"]
    again.close()
