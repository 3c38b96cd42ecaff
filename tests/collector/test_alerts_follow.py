"""The alerts follow hits.db from a mark kept in alerts.db: hits committed but not yet routed
when the process dies (kill -9 between the commit and the enqueue) are alerted once after the
restart; a new alerts.db starts at the end of hits.db; completions come from hit_changes;
rowids handed out again after the newest hits were deleted are still routed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from helpers.alerts import SECRET, start_receiver, stop_receiver
from helpers.link import (
    Keys,
    child_env,
    collector_config,
    free_port,
    make_hit,
    make_keys,
    stored_ids,
    wait_for,
)

from edge.collector.alerts.config import AlertsConfig
from edge.collector.alerts.dispatch import Alerts
from edge.collector.alerts.queue import AlertQueue
from edge.collector.config import CollectorConfig
from edge.collector.service import CollectorService
from edge.collector.store import HitStore
from edge.core.keys import load_keypair, make_curve_client

ROUTE = "local/hook"
T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def alerts_config(port: int, **hook: object) -> AlertsConfig:
    return AlertsConfig.model_validate({
        "retry": {"first_delay_s": 0.01, "max_delay_s": 0.01},
        "routes": [{"agency": "local", "webhooks": [{
            "name": "hook", "url": f"http://127.0.0.1:{port}/anpr/hits",
            "secret_file": "hook.secret", "allow_plain_loopback": True, **hook}]}]})  # fmt: skip


def creds_dir(tmp_path: Path) -> Path:
    d = tmp_path / "creds"
    d.mkdir(exist_ok=True)
    (d / "hook.secret").write_text(SECRET)
    return d


def following(tmp_path: Path, port: int, db: Path, data_dir: Path | None = None,
              **hook: object) -> Alerts:  # fmt: skip
    """Alerts on `db` without threads: `route_new` reads hits.db, `deliver_due` sends."""
    a = Alerts(alerts_config(port, **hook), data_dir=data_dir or tmp_path / "data",
               credentials=str(creds_dir(tmp_path)))  # fmt: skip
    a.start(workers=False, hits_db=db)
    return a


def completion(early):
    return dataclasses.replace(early, hit_id=early.hit_id[:-4] + "done", completes=early.hit_id,
                               vehicle_type="truck")  # fmt: skip


def test_hits_committed_but_not_routed_are_alerted_once_after_a_restart(tmp_path):
    db = tmp_path / "hits.db"
    store = HitStore(db)
    port = free_port()
    rec = start_receiver(None, port=port)
    try:
        first = following(tmp_path, port, db)
        h1 = make_hit(1)
        store.commit([h1], T0)
        assert first.route_new() == 1 and first.deliver_due(ROUTE) == 1
        # ...then the process dies: these are in hits.db, their alerts not yet queued
        first.stop()
        h2 = make_hit(2)
        store.commit([h2, completion(h1)], T0 + dt.timedelta(seconds=1))
        again = Alerts(alerts_config(port), data_dir=tmp_path / "data",
                       credentials=str(creds_dir(tmp_path)))  # fmt: skip
        again.start(hits_db=db)  # the threads: the follower reads from the mark
        try:
            got = rec.wait(3)
        finally:
            again.stop()
        assert [(r.doc["hit_id"], r.doc["revision"]) for r in got] == [
            (h1.hit_id, 0),
            (h2.hit_id, 0),
            (h1.hit_id, 1),
        ]
        assert got[2].doc["vehicle_type"] == "truck" and all(r.signed for r in got)
        third = following(tmp_path, port, db)  # and once more: nothing new, nothing again
        try:
            assert third.route_new() == 0 and third.deliver_due(ROUTE) == 0
            assert third.queue is not None and third.queue.counts() == {
                "pending": 0,
                "done": 3,
                "dead": 0,
            }
        finally:
            third.stop()
        assert len(rec.requests) == 3
    finally:
        stop_receiver(rec)
        store.close()


def test_a_new_alerts_db_on_an_existing_hits_db_starts_at_its_end(tmp_path, caplog):
    db = tmp_path / "hits.db"
    store = HitStore(db)
    store.commit([make_hit(n) for n in range(5)], T0)
    store.commit([completion(make_hit(0))], T0)
    with caplog.at_level(logging.INFO, "edge.collector.alerts"):
        alerts = following(tmp_path, free_port(), db)
    try:
        assert any("hits.db followed from its end (row 5, change 1)" in r.message
                   for r in caplog.records)  # fmt: skip
        assert alerts.route_new() == 0  # the history: not alerted
        store.commit([make_hit(9)], T0)
        assert alerts.route_new() == 1
        assert alerts.queue is not None
        assert [i["hit_id"] for i in alerts.queue.items()] == [make_hit(9).hit_id]
    finally:
        alerts.stop()
        store.close()


def test_the_crop_is_read_from_the_image_log_for_a_route_that_sends_it(tmp_path):
    db = tmp_path / "hits.db"
    store = HitStore(db)
    port = free_port()
    rec = start_receiver(None, port=port)
    alerts = following(tmp_path, port, db, include_crop=True)
    try:
        hit = make_hit(3, crop=700)
        store.commit([hit], T0)
        assert alerts.route_new() == 1 and alerts.deliver_due(ROUTE) == 1
        (got,) = rec.wait(1)
        assert got.doc["crop_jpeg_base64"]
    finally:
        alerts.stop()
        stop_receiver(rec)
        store.close()


def test_rowids_handed_out_again_after_the_newest_hits_were_deleted_are_routed(tmp_path):
    db = tmp_path / "hits.db"
    store = HitStore(db)
    alerts = following(tmp_path, free_port(), db)
    try:
        store.commit([make_hit(1), make_hit(2)], T0)
        assert alerts.route_new() == 2
        # the retention deletes every hit (a quiet collector): SQLite starts the rowids again
        assert store.delete_hits("stolen", T0 + dt.timedelta(days=1))[0] == 2
        store.commit([make_hit(3)], T0 + dt.timedelta(days=2))
        assert store.db.execute("SELECT rowid FROM hits").fetchall() == [(1,)]
        assert alerts.route_new() == 1
        store.commit([make_hit(4)], T0 + dt.timedelta(days=2))
        assert alerts.route_new() == 1
        assert alerts.route_new() == 0
        assert alerts.queue is not None
        assert [i["hit_id"] for i in alerts.queue.items()] == [
            make_hit(n).hit_id for n in (1, 2, 3, 4)
        ]
    finally:
        alerts.stop()
        store.close()


def test_a_queue_that_cannot_be_written_keeps_the_mark_and_routes_later(tmp_path):
    db = tmp_path / "hits.db"
    store = HitStore(db)
    alerts = following(tmp_path, free_port(), db)
    try:
        store.commit([make_hit(1)], T0)
        assert alerts.queue is not None
        blocker = AlertQueue(alerts.path, alerts.config.retry)  # holds the write lock
        blocker._db.execute("PRAGMA busy_timeout=0")
        alerts.queue._db.execute("PRAGMA busy_timeout=0")
        blocker._db.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                alerts.route_new()
        finally:
            blocker._db.execute("ROLLBACK")
            blocker.close()
        assert alerts.queue.items() == []
        assert alerts.route_new() == 1  # read again from the same mark
        assert len(alerts.queue.items()) == 1
    finally:
        alerts.stop()
        store.close()


# ------------------------------------------------------------ kill -9 in a real collector


def service_config(root: Path, keys: Keys, port: int) -> CollectorConfig:
    (keys.collector_dir / "hook.secret").write_text(SECRET)
    return collector_config(root, keys).model_copy(update={"alerts": alerts_config(port)})


def _child(root: Path, port: int) -> None:
    """A collector whose alerts queue kills the process (-9) at its first enqueue of alerts:
    after the hits' commit, before their alerts are queued."""
    real = AlertQueue.enqueue

    def enqueue(self, entries, *args, **kw):  # type: ignore[no-untyped-def]
        entries = list(entries)
        if entries:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, entries, *args, **kw)

    AlertQueue.enqueue = enqueue  # type: ignore[method-assign]
    public, _ = load_keypair(root / "pki" / "collector-creds", "collector")
    keys = Keys(root / "pki", public)
    ctx = zmq.Context()
    service = CollectorService(service_config(root, keys, port), ctx=ctx)
    service.start()
    sock = ctx.socket(zmq.DEALER)
    make_curve_client(sock, *keys.edge("edge1"), keys.server_public)
    sock.connect(service.endpoint)
    sock.send_multipart(make_hit(1).encode())
    time.sleep(20)  # killed long before (a test's child: never reached when it works)
    sys.exit(3)


def test_a_collector_killed_between_the_commit_and_the_enqueue_alerts_once_after(tmp_path):
    keys = make_keys(tmp_path / "pki")
    keys.edge("edge1")
    port = free_port()
    child = subprocess.run([sys.executable, __file__, str(tmp_path), str(port)],
                           env=child_env(), capture_output=True, timeout=60)  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    cfg = service_config(tmp_path, keys, port)
    assert stored_ids(cfg.db_path) == [make_hit(1).hit_id]  # committed, its alert not queued
    rec = start_receiver(None, port=port)
    try:
        service = CollectorService(cfg, ctx=zmq.Context.instance())
        service.start()
        try:
            (got,) = rec.wait(1)
            assert got.doc["hit_id"] == make_hit(1).hit_id and got.signed
            wait_for(lambda: service.stats().get("alerts_delivered") == 1, 10, "the count")
        finally:
            service.stop()
        again = following(tmp_path, port, cfg.db_path, cfg.data_dir)  # and not again
        try:
            assert again.route_new() == 0
        finally:
            again.stop()
        items = AlertQueue(cfg.data_dir / "alerts.db", cfg.alerts.retry).items()  # type: ignore[union-attr]
        assert [(i["hit_id"], i["state"]) for i in items] == [(make_hit(1).hit_id, "done")]
        assert len(rec.requests) == 1
    finally:
        stop_receiver(rec)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    _child(Path(sys.argv[1]), int(sys.argv[2]))
    print(json.dumps({"unreachable": True}))
