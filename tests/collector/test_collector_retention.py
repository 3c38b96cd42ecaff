"""Retention at the collector: hits and pictures past their list's days are deleted and the disk
given back, stale nodes and cameras forgotten, console sessions and old audit rows purged (and
no younger audit row, whoever asks), a disk alarm before full, a cap on a node's cameras."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import sqlite3
import time

import pytest
import zmq
from helpers.link import collector_config, make_keys, wait_for
from test_collector_images import assert_pictures, hit

from edge.collector.cli import main
from edge.collector.config import CollectorConfig
from edge.collector.console.accounts import AccountError, ConsoleDB, User
from edge.collector.console.config import ConsoleConfig
from edge.collector.retention import Maintenance
from edge.collector.service import CollectorService
from edge.collector.store import HitStore, Seen
from edge.core.keys import make_curve_client
from edge.core.link_protocol import Ack, Heartbeat, HitMessage, decode_message

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


class Clock:
    """The time, as the test says it is."""

    def __init__(self, now: dt.datetime = NOW):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def of_list(h: HitMessage, name: str | None) -> HitMessage:
    return dataclasses.replace(h, match=dataclasses.replace(h.match, watchlist=name))


def config(tmp_path, **kw) -> CollectorConfig:
    return CollectorConfig(data_dir=tmp_path, **kw)


def test_hits_past_their_lists_days_go_with_their_pictures(tmp_path):
    cfg = config(tmp_path, retention={"hits_days": 90, "lists": {"alerts": 365}})
    store = HitStore(cfg.db_path)
    old_stolen = [hit(n) for n in range(5)]  # 100 days old: past the default
    young_stolen = [hit(n) for n in range(10, 13)]  # 10 days old
    old_alerts = [of_list(hit(n), "alerts") for n in range(20, 24)]  # 100 days: kept (365)
    ancient_alerts = [of_list(hit(n), "alerts") for n in range(30, 32)]  # 400 days
    store.commit(old_stolen, NOW - 100 * DAY)
    store.commit(young_stolen, NOW - 10 * DAY)
    store.commit(old_alerts, NOW - 100 * DAY)
    store.commit(ancient_alerts, NOW - 400 * DAY)

    report = Maintenance(cfg, clock=Clock()).run(store)
    assert report.hits == 7 and not report.errors
    kept = young_stolen + old_alerts
    assert sorted(store.hit_ids()) == sorted(h.hit_id for h in kept)
    assert_pictures(store, kept)
    for h in old_stolen + ancient_alerts:
        assert store.image(h.hit_id, "crop") is None
    assert store.db.execute("SELECT count(*) FROM hit_images").fetchone()[0] == 2 * len(kept)
    store.close()


def test_emptied_segments_are_deleted_and_mostly_empty_ones_compacted(tmp_path):
    cfg = config(tmp_path, retention={"hits_days": 30, "lists": {"alerts": 365}})
    store = HitStore(cfg.db_path, segment_bytes=200_000)
    old, keep = [], []
    for n in range(60):  # ~23 kB a hit: 9 hits a segment, one of each segment kept
        h = hit(n) if n % 9 else of_list(hit(n), "alerts")
        store.commit([h], NOW - 60 * DAY)
        (keep if n % 9 == 0 else old).append(h)
    fresh = [hit(n) for n in range(100, 104)]
    store.commit(fresh, NOW)
    keep += fresh
    segments_before = store.images.sizes()
    assert len(segments_before) >= 6

    clock = Clock()
    maintenance = Maintenance(cfg, clock=clock, compact_min_bytes=1)
    first = maintenance.run(store)
    assert first.hits == len(old) and first.bytes_moved > 0 and not first.errors
    assert_pictures(store, keep)
    clock.now += dt.timedelta(hours=1)  # the next run deletes what the last one emptied
    second = maintenance.run(store)
    assert second.segments_deleted >= len(segments_before) - 2 and not second.errors
    after = store.images.sizes()
    assert sum(after.values()) < sum(segments_before.values()) / 3
    assert_pictures(store, keep)
    more = [hit(n) for n in range(200, 232)]
    for h in more:
        store.commit([h], NOW)
    store.close()

    store = HitStore(cfg.db_path, segment_bytes=200_000)  # and so after a restart
    assert not store.mended
    assert_pictures(store, keep + more)
    store.close()


def test_the_database_gives_freed_pages_back(tmp_path):
    cfg = config(tmp_path, retention={"hits_days": 1})
    store = HitStore(cfg.db_path)
    for n in range(0, 3000, 500):
        store.commit([hit(i, crop=100, scene=0) for i in range(n, n + 500)], NOW - 5 * DAY)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    Maintenance(cfg, clock=Clock()).run(store)
    assert store.count() == 0
    assert store.db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert store.db.execute("PRAGMA page_count").fetchone()[0] < pages / 2
    store.close()


def test_nodes_and_cameras_not_heard_are_forgotten(tmp_path):
    cfg = config(tmp_path, retention={"nodes_days": 30})
    store = HitStore(cfg.db_path, max_cameras_per_node=2)
    store.record_seen([
        Seen("gone", NOW - 40 * DAY, cameras={"a", "b"}),
        Seen("here", NOW - 40 * DAY, cameras={"old"}),
    ])  # fmt: skip
    store.record_seen([Seen("here", NOW - DAY, cameras={"new"})])
    report = Maintenance(cfg, clock=Clock()).run(store)
    assert (report.nodes, report.cameras) == (1, 3)
    nodes = store.nodes()
    assert [n["node"] for n in nodes] == ["here"]
    assert [c["camera"] for c in nodes[0]["cameras"]] == ["new"]
    # the forgotten camera's place is free again
    assert store.record_seen([Seen("here", NOW, cameras={"other"})]) == {}
    store.close()


def test_a_node_keeps_so_many_camera_rows_and_no_more(tmp_path):
    store = HitStore(tmp_path / "hits.db", max_cameras_per_node=4)
    refused = store.record_seen([Seen("n", NOW, cameras={f"c{i}" for i in range(10)})])
    assert refused == {"n": 6}
    assert store.record_seen([Seen("n", NOW, cameras={"c0", "c1"})]) == {}  # known ones
    assert store.record_seen([Seen("n", NOW, cameras={"c9"}), Seen("m", NOW, cameras={"x"})]) == {
        "n": 1
    }
    store.close()
    store = HitStore(tmp_path / "hits.db", max_cameras_per_node=4)  # counted from the rows
    assert store.record_seen([Seen("n", NOW, cameras={"c8"})]) == {"n": 1}
    assert {n["node"]: len(n["cameras"]) for n in store.nodes()} == {"m": 1, "n": 4}
    store.close()


def test_heartbeats_naming_made_up_cameras_make_a_bounded_number_of_rows(tmp_path):
    """200 heartbeats of 256 made-up camera names each (51,205 rows before)."""
    keys = make_keys(tmp_path)
    public, secret = keys.edge("edge1")
    ctx = zmq.Context()
    cfg = CollectorConfig.model_validate({
        **collector_config(tmp_path, keys).model_dump(),
        "nodes": {"max_cameras_per_heartbeat": 64, "max_cameras_per_node": 100},
    })  # fmt: skip
    service = CollectorService(cfg, ctx=ctx)
    service.start()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    make_curve_client(sock, public, secret, keys.server_public)
    sock.connect(service.endpoint)
    try:
        for beat in range(200):
            cams = {f"fake{beat:03d}x{i:03d}": {"state": "live", "ok": True} for i in range(256)}
            status = {"node": "edge1", "health": {"ok": True}, "cameras": cams}
            sock.send_multipart(Heartbeat("edge1", status).encode())
        wait_for(lambda: service.stats().get("heartbeats", 0) == 200, 20, "200 heartbeats")
        wait_for(lambda: service.stats().get("cameras_refused", 0) == 200 * 256 - 100, 10,
                 "every camera past the caps counted")  # fmt: skip
    finally:
        sock.close()
        service.stop()
        ctx.term()
    store = HitStore(cfg.db_path, readonly=True)
    assert len(store.nodes()[0]["cameras"]) == 100
    store.close()


def test_the_service_runs_the_maintenance_on_its_clock(tmp_path):
    keys = make_keys(tmp_path)
    public, secret = keys.edge("edge1")
    ctx = zmq.Context()
    cfg = CollectorConfig.model_validate({
        **collector_config(tmp_path, keys).model_dump(),
        "retention": {"hits_days": 90, "every_minutes": 60},
    })  # fmt: skip
    clock = Clock()
    service = CollectorService(cfg, ctx=ctx, clock=clock)
    service.start()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    make_curve_client(sock, public, secret, keys.server_public)
    sock.connect(service.endpoint)
    try:
        wait_for(lambda: service.stats().get("maintenance_runs") == 1, 10, "a run at start")
        sent = [hit(n) for n in range(3)]
        for h in sent:
            sock.send_multipart(h.encode())
        acked: set[str] = set()
        while len(acked) < len(sent):
            assert sock.poll(10_000), "no ack"
            msg = decode_message(sock.recv_multipart())
            assert isinstance(msg, Ack)
            acked.update(msg.ids)
        clock.now += 30 * DAY  # due again, nothing old enough yet
        wait_for(lambda: service.stats().get("maintenance_runs") == 2, 10, "the second run")
        assert service.stats().get("expired_hits", 0) == 0
        clock.now += 61 * DAY
        wait_for(lambda: service.stats().get("expired_hits") == 3, 10, "the hits to expire")
    finally:
        sock.close()
        service.stop()
        ctx.term()
    store = HitStore(cfg.db_path, readonly=True)
    assert store.count() == 0
    store.close()


# ---------------------------------------------------------------- the console's tables


@pytest.fixture
def console_db(tmp_path):
    db = ConsoleDB(tmp_path / "console.db")
    yield db
    db.close()


def audit_rows(path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT detail FROM audit ORDER BY at")]
    finally:
        db.close()


def test_expired_sessions_and_audit_rows_past_their_days_are_purged(tmp_path, console_db):
    now = time.time()
    user = User("ann", "Ann", "operator")
    console_db.add_user("ann", "a long password", "operator")
    live = console_db.new_session(user)
    idle = console_db.new_session(user)
    raw = sqlite3.connect(tmp_path / "console.db")
    raw.execute("UPDATE sessions SET last_seen = ? WHERE token_hash != ?",
                (now - 3600, hashlib.sha256(live.encode()).hexdigest()))  # fmt: skip
    for days in (500, 401, 300, 10):
        raw.execute("INSERT INTO audit (at, user, action, detail) VALUES (?, 'x', 'test', ?)",
                    (now - days * 86400, f"{days} days old"))  # fmt: skip
    raw.commit()
    raw.close()

    cfg = config(tmp_path, console=ConsoleConfig(session_idle_minutes=30),
                 retention={"audit_days": 400})  # fmt: skip
    store = HitStore(cfg.db_path)
    report = Maintenance(cfg, clock=lambda: dt.datetime.now(dt.UTC)).run(store)
    store.close()
    assert (report.sessions, report.audit) == (1, 2) and not report.errors
    assert console_db.session_user(live, 1800, 3600) is not None
    assert console_db.session_user(idle, 1e9, 1e9) is None
    assert [d for d in audit_rows(tmp_path / "console.db") if "days old" in d] == [
        "300 days old",
        "10 days old",
    ]


def test_the_audit_trail_refuses_to_lose_a_younger_row_whoever_asks(tmp_path, console_db):
    now = time.time()
    raw = sqlite3.connect(tmp_path / "console.db")
    for days in (300, 10):
        raw.execute("INSERT INTO audit (at, user, action, detail) VALUES (?, 'x', 'test', ?)",
                    (now - days * 86400, f"{days} days old"))  # fmt: skip
    raw.commit()
    for sql in ("DELETE FROM audit", "DELETE FROM audit WHERE detail = '300 days old'",
                "UPDATE audit SET detail = 'changed'"):  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError, match="kept as written"):
            raw.execute(sql)
    raw.close()
    with pytest.raises(AccountError):
        console_db.purge_audit(100)
    # A clock run far ahead cannot make young rows old: the trigger goes by SQLite's own.
    with pytest.raises(sqlite3.IntegrityError):
        console_db.purge_audit(400, now=now + 200 * 86400)
    cfg = config(tmp_path, console=ConsoleConfig())
    store = HitStore(cfg.db_path)
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(days=200)
    report = Maintenance(cfg, clock=lambda: ahead).run(store)
    store.close()
    assert report.errors and "console" in report.errors[0]
    assert len(audit_rows(tmp_path / "console.db")) == 2


# ---------------------------------------------------------------- the disk


def test_the_disk_alarm_goes_off_before_the_budget_is_spent(tmp_path, caplog, capsys):
    cfg = config(tmp_path, disk={"budget_mb": 1, "alarm_at": 0.9, "min_free_mb": 0})
    store = HitStore(cfg.db_path)
    maintenance = Maintenance(cfg, clock=Clock())
    assert not maintenance.check_disk(store).alarm
    with caplog.at_level(logging.ERROR):
        for n in range(40):  # ~23 kB each: past 90% of 1 MiB
            store.commit([hit(n)], NOW)
        state = maintenance.check_disk(store)
    assert state.alarm and "budget" in state.reason
    assert "DISK ALARM" in caplog.text
    assert store.status("disk")["alarm"] is True
    assert main(["nodes", "--db", str(cfg.db_path), "--problems"]) == 1
    assert "DISK ALARM" in capsys.readouterr().out

    floor = Maintenance(config(tmp_path, disk={"min_free_mb": 1e12}), clock=Clock())
    assert "free" in floor.check_disk().reason

    roomy = Maintenance(config(tmp_path, disk={"budget_mb": 100, "min_free_mb": 0}),
                        clock=Clock())  # fmt: skip
    assert not roomy.check_disk(store).alarm
    assert store.status("disk")["alarm"] is False
    store.close()
    assert main(["nodes", "--db", str(cfg.db_path), "--problems"]) == 0
