"""Console accounts: argon2 hashes, sessions that expire, a trail nobody rewrites; the `user`
commands; the `console:` section of the collector's config."""

from __future__ import annotations

import io
import sqlite3

import pytest
from argon2 import PasswordHasher

from edge.collector.cli import _components, main
from edge.collector.config import CollectorConfig, ConfigError, load_config
from edge.collector.console import accounts
from edge.collector.console.accounts import AccountError, ConsoleDB
from edge.collector.console.data import QueryError, Search, _camera_health, search_pattern
from edge.collector.console.server import ConsoleServer
from edge.collector.nodes import NodeHealth
from edge.core.status import CameraState, CameraStatus, Problem, ProblemKind

# Cheap parameters for the tests' own hashing (the product uses argon2-cffi's defaults).
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def db(tmp_path):
    d = ConsoleDB(tmp_path / "console.db", hasher=FAST)
    yield d
    d.close()


def test_passwords_are_kept_as_argon2id_hashes_only(db, tmp_path):
    db.add_user("olga", "operator password 1", "operator", "Olga Operator")
    raw = sqlite3.connect(tmp_path / "console.db").execute(
        "SELECT password_hash FROM users").fetchone()[0]  # fmt: skip
    assert raw.startswith("$argon2id$") and "operator password 1" not in raw
    assert (tmp_path / "console.db").read_bytes().find(b"operator password 1") == -1
    assert db.authenticate("olga", "operator password 1").display_name == "Olga Operator"
    assert db.authenticate("olga", "operator password 2") is None
    assert db.authenticate("nobody", "operator password 1") is None


def test_the_default_hasher_is_argon2id(tmp_path):
    d = ConsoleDB(tmp_path / "c.db")
    try:
        d.add_user("ada", "admin password 1", "admin")
        (digest,) = sqlite3.connect(tmp_path / "c.db").execute(
            "SELECT password_hash FROM users").fetchone()  # fmt: skip
        assert digest.startswith("$argon2id$") and "m=65536" in digest
    finally:
        d.close()


def test_bad_users_are_refused(db):
    with pytest.raises(AccountError, match="at least 10"):
        db.add_user("olga", "short", "operator")
    with pytest.raises(AccountError, match="role"):
        db.add_user("olga", "long enough password", "superuser")
    with pytest.raises(AccountError, match="user name"):
        db.add_user("olga smith", "long enough password", "operator")
    db.add_user("olga", "long enough password", "operator")
    with pytest.raises(AccountError, match="exists"):
        db.add_user("olga", "another password!", "admin")
    assert db.add_user("olga", "another password!", "admin", replace=True).is_admin


def test_sessions_end_when_idle_too_long_or_too_old(db, monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(accounts.time, "time", lambda: now[0])
    user = db.add_user("olga", "long enough password", "operator")
    token = db.new_session(user)
    assert db.session_user(token, idle_s=600, max_s=3600) == user
    now[0] += 599
    assert db.session_user(token, idle_s=600, max_s=3600) == user  # used: idle clock restarts
    now[0] += 599
    assert db.session_user(token, idle_s=600, max_s=3600) == user
    now[0] += 601
    assert db.session_user(token, idle_s=600, max_s=3600) is None  # idle too long
    assert db.session_user(token, idle_s=10**9, max_s=10**9) is None  # and gone for good
    token = db.new_session(user)
    for _ in range(7):
        now[0] += 500
        assert db.session_user(token, idle_s=600, max_s=3600) == user
    now[0] += 500  # 4,000 s after it began: past the shift's length, however busy
    assert db.session_user(token, idle_s=600, max_s=3600) is None
    assert db.session_user("", 600, 3600) is None and db.session_user("x" * 500, 600, 3600) is None


def test_a_new_password_or_disabling_ends_sessions(db):
    user = db.add_user("olga", "long enough password", "operator")
    token = db.new_session(user)
    db.set_password("olga", "a new long password")
    assert db.session_user(token, 600, 3600) is None
    assert db.authenticate("olga", "long enough password") is None
    token = db.new_session(user)
    db.set_active("olga", False)
    assert db.session_user(token, 600, 3600) is None
    assert db.authenticate("olga", "a new long password") is None
    db.set_active("olga", True)
    assert db.authenticate("olga", "a new long password") == user
    with pytest.raises(AccountError, match="no user"):
        db.set_password("nobody", "a new long password")


def test_acknowledgements_are_appended_and_never_rewritten(db, tmp_path):
    user = db.add_user("olga", "long enough password", "operator", "Olga O")
    first = db.acknowledge("hit-1", user, "  unit 7\nen route ")
    second = db.acknowledge("hit-1", user, "handed to border guard")
    assert first.note == "unit 7 en route"  # one line
    assert [a.note for a in db.acks_for(["hit-1", "hit-2"])["hit-1"]] == [
        "unit 7 en route", "handed to border guard"]  # fmt: skip
    assert second.to_json()["display_name"] == "Olga O"
    raw = sqlite3.connect(tmp_path / "console.db")
    for sql in ("UPDATE acks SET note = ''", "DELETE FROM acks WHERE id = 1",
                "UPDATE audit SET detail = ''", "DELETE FROM audit"):  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError, match="kept as written"):
            raw.execute(sql)
    trail = db.audit_trail()
    assert [r["action"] for r in trail] == ["acknowledge", "acknowledge"]
    assert "hit hit-1: handed to border guard" == trail[0]["detail"]


def test_user_commands(tmp_path, monkeypatch, capsys):
    path = str(tmp_path / "console.db")
    monkeypatch.setattr("sys.stdin", io.StringIO("operator password 1\n"))
    assert main(["user", "add", "olga", "--role", "operator", "--display-name",
                 "Olga Operator", "--db", path, "--password-stdin"]) == 0  # fmt: skip
    assert "olga (operator) can sign in" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("other password 1\n"))
    assert main(["user", "add", "olga", "--role", "admin", "--db", path]) == 2
    assert "exists" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["user", "add", "bob", "--role", "admin", "--db", path]) == 2
    assert "at least 10" in capsys.readouterr().err
    assert main(["user", "disable", "olga", "--db", path]) == 0
    assert main(["user", "list", "--db", path]) == 0
    out = capsys.readouterr().out
    assert "olga" in out and "operator" in out and "(disabled)" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("operator password 2\n"))
    assert main(["user", "passwd", "olga", "--db", path]) == 0
    assert main(["user", "enable", "olga", "--db", path]) == 0
    db = ConsoleDB(path)
    try:
        assert db.authenticate("olga", "operator password 2").display_name == "Olga Operator"
        actions = [r["action"] for r in db.audit_trail()]
        assert actions == ["user enable", "user passwd", "user disable", "user add"]
    finally:
        db.close()


def test_user_commands_find_the_database_from_the_config(tmp_path, monkeypatch):
    config = tmp_path / "collector.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nconsole: {{port: 9000}}\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("admin password 1\n"))
    assert main(["user", "add", "ada", "--role", "admin", "--config", str(config)]) == 0
    assert (tmp_path / "data" / "console.db").exists()


def test_console_config_section(tmp_path):
    config = tmp_path / "collector.yaml"
    config.write_text(
        "data_dir: data\n"
        "console:\n"
        "  port: 8443\n"
        "  region: site/region.geojson\n"
        "  tile_url: https://tiles.example.org/{z}/{x}/{y}.png\n"
        "  cameras:\n"
        "    - {node: edge-a, camera: north, lat: 54.3, lon: 23.4, label: Kalvarija}\n"
    )
    c = load_config(config)
    assert c.console.host == "127.0.0.1"  # localhost unless told otherwise
    assert c.console.region == tmp_path / "site" / "region.geojson"
    assert c.console.tile_origin == "https://tiles.example.org"
    assert c.console.database_path(c.data_dir) == tmp_path / "data" / "console.db"
    config.write_text("console:\n  prot: 8080\n")
    with pytest.raises(ConfigError, match="console.prot"):
        load_config(config)
    for bad in ("ftp://x/{z}/{x}/{y}", "https://x/{z}/{x}.png", "https://x/{z}/{x}/{y}\"<"):
        with pytest.raises(ValueError, match="tile_url"):
            CollectorConfig.model_validate({"console": {"tile_url": bad}})


def test_the_console_runs_only_when_configured(tmp_path):
    assert [c for c in _components(CollectorConfig(data_dir=tmp_path))
            if isinstance(c, ConsoleServer)] == []  # fmt: skip
    on = CollectorConfig(data_dir=tmp_path, console={"port": 0})
    assert [type(c) for c in _components(on)] == [ConsoleServer]
    off = CollectorConfig(data_dir=tmp_path, console={"enabled": False})
    assert [c for c in _components(off) if isinstance(c, ConsoleServer)] == []


def test_search_patterns_and_filters():
    assert search_pattern(" wx 123* ") == "WX123*"
    assert search_pattern("?b-12**") == "?B12*"
    assert search_pattern("ŁÓDŹ1") == "LODZ1"
    with pytest.raises(QueryError):
        search_pattern("**?")
    where, args = Search(plate="AB1?3", since="2026-05-01T10:00", camera="edge-a/north",
                         watchlist="stolen").query().where()  # fmt: skip
    assert where == (" WHERE plate_text GLOB ? AND seen_at >= ? AND node = ? AND camera = ?"
                     " AND watchlist = ?")  # fmt: skip
    assert args == ["AB1?3", "2026-05-01T10:00:00.000000Z", "edge-a", "north", "stolen"]
    assert Search(plate="AB123").query().where() == (" WHERE plate_text = ?", ["AB123"])
    assert Search(camera="edge-a").query().where() == (" WHERE node = ?", ["edge-a"])
    assert Search(camera="/north").query().where() == (
        " WHERE node = ? AND camera = ?", ["", "north"])  # fmt: skip
    assert Search(plate=" ", watchlist=" ").query().where() == ("", [])
    with pytest.raises(QueryError, match="until"):
        Search(until="soon").query()


def test_camera_health_from_its_node():
    def cam(state: str, ok: bool, detail: str = "") -> CameraStatus:
        return CameraStatus(state=CameraState(state), ok=ok, detail=detail)

    black = Problem(camera="b", kind=ProblemKind.BLACK)
    full = Problem(kind=ProblemKind.STORE_NEAR_BUDGET, detail="97%")
    assert _camera_health("a", NodeHealth("late", ("not heard for 90 s",)), None) == (
        "late", ["not heard for 90 s"])  # fmt: skip
    assert _camera_health("a", NodeHealth("ok"), cam("live", True)) == ("live", [])
    # Another camera's trouble is not this one's; the node's own trouble is everyone's.
    assert _camera_health("a", NodeHealth("unhealthy", problems=(black,)), cam("live", True)) == (
        "live", [])  # fmt: skip
    assert _camera_health("a", NodeHealth("unhealthy", problems=(full,)), None) == (
        "unhealthy", ["store at 97% of its disk budget"])  # fmt: skip
    assert _camera_health("a", NodeHealth("ok"), cam("dead", False, "no frames")) == (
        "unhealthy", ["camera a: dead (no frames)"])  # fmt: skip
    assert _camera_health("a", NodeHealth("unhealthy", ("unreadable status",)), None) == (
        "unhealthy", ["unreadable status"])  # fmt: skip
