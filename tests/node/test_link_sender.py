"""Edge sender against a collector in the same process (threads, real sockets on loopback)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from helpers.link import (
    Keys,
    collector_config,
    free_port,
    make_hit,
    start_collector,
    stored_ids,
    wait_for,
)

from edge.collector.hits import HitQuery, HitReader
from edge.collector.nodes import judge_node
from edge.collector.service import CollectorService
from edge.collector.store import HitStore
from edge.core.status import NodeStatus
from edge.node.outbox import Outbox
from edge.node.sender import HitSender


def _sender(keys: Keys, outbox: Outbox, endpoint: str, ctx, node="edge1", allowed=True, **kw):
    public, secret = keys.edge(node, allowed=allowed)
    kw.setdefault("ack_timeout_s", 1.0)
    kw.setdefault("reconnect_max_s", 0.2)
    return HitSender(
        outbox, endpoint, node_id=node, public_key=public, secret_key=secret,
        server_key=keys.server_public, ctx=ctx, **kw,
    )  # fmt: skip


def _nodes(service: CollectorService) -> list[dict]:
    store = HitStore(service.config.db_path, readonly=True)
    try:
        return store.nodes()
    finally:
        store.close()


def test_hits_are_delivered_once_and_leave_the_outbox(tmp_path, keys, ctx):
    service = start_collector(tmp_path, keys, ctx)
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    sender = _sender(keys, outbox, service.endpoint, ctx)
    try:
        sender.start()
        for n in range(60):
            outbox.add_hit(make_hit(n, priority=n % 3))
        wait_for(lambda: outbox.backlog() == 0, what="the outbox to empty")
        ids = stored_ids(service.config.db_path)
        assert sorted(ids) == sorted(make_hit(n).hit_id for n in range(60))
        assert service.stats()["stored"] == 60
        assert sender.stats.acked == 60 and sender.error is None
    finally:
        sender.stop()
        service.stop()
        outbox.close()
    reader = HitReader(service.config.db_path)
    (row,) = reader.search(HitQuery(since=make_hit(5).seen_at), 1, newest_first=False)
    assert row.plate_formatted == "AB 00005" and row.road == "A4 km 112"
    assert reader.picture(make_hit(5).hit_id, "scene") == make_hit(5).scene_jpeg
    reader.close()


def test_heartbeats_tell_the_collector_about_node_and_cameras(tmp_path, keys, ctx):
    service = start_collector(tmp_path, keys, ctx)
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    status = NodeStatus.model_validate({
        "node": "edge1", "heartbeat_s": 0.05, "health": {"ok": True},
        "cameras": {"cam-north": {"state": "live", "ok": True, "fps": 12.5},
                    "cam-south": {"state": "dead", "ok": False, "fps": 0}},
        "config": "ab12"})  # fmt: skip
    sender = _sender(keys, outbox, service.endpoint, ctx, status=lambda: status, heartbeat_s=0.05)
    sender.start()
    try:

        def heard():
            store = HitStore(service.config.db_path, readonly=True)
            try:
                return [n for n in store.nodes() if n["node"] == "edge1" and n["status"]]
            finally:
                store.close()

        (node,) = wait_for(heard, what="the heartbeat to be recorded")
        assert {c["camera"] for c in node["cameras"]} == {"cam-north", "cam-south"}
        assert node["status"]["config"] == "ab12"
        assert node["status"]["outbox"]["backlog"] == 0  # the sender adds its own figures
        assert node["address"] == "127.0.0.1"
        # a good heartbeat round-trips: what is stored is the status sent, and the link's
        stored = NodeStatus.model_validate(node["status"])
        assert stored.cameras == status.cameras and stored.health == status.health
        assert stored.link is not None and stored.link.heartbeats >= 0
        assert service.stats().get("refused", 0) == 0
    finally:
        sender.stop()
        service.stop()
        outbox.close()


def test_a_failing_status_callback_does_not_stop_heartbeats(tmp_path, keys, ctx, caplog):
    service = start_collector(tmp_path, keys, ctx)
    outbox = Outbox(tmp_path / "edge" / "outbox.db")

    def broken():
        raise RuntimeError("camera thread gone")

    sender = _sender(keys, outbox, service.endpoint, ctx, status=broken, heartbeat_s=0.05)
    sender.start()
    try:
        wait_for(lambda: service.stats().get("heartbeats", 0) >= 2, what="heartbeats")
        assert "status callback failed" in caplog.text
        # and the collector hears that the node cannot say how it is, not that it is well
        (node,) = wait_for(lambda: [n for n in _nodes(service) if n["status"]], what="stored")
        health = judge_node(node, dt.datetime.now(dt.UTC))
        assert health.verdict == "unhealthy"
        assert health.reasons == ["node status unavailable (RuntimeError('camera thread gone'))"]
    finally:
        sender.stop()
        service.stop()
        outbox.close()


def test_unknown_key_delivers_nothing_and_is_logged(tmp_path, keys, ctx, caplog):
    caplog.set_level(logging.WARNING)
    service = start_collector(tmp_path, keys, ctx)
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    outbox.add_hit(make_hit(1, node="intruder"))
    sender = _sender(keys, outbox, service.endpoint, ctx, node="intruder", allowed=False,
                     heartbeat_s=0.05)  # fmt: skip
    sender.start()
    try:
        wait_for(lambda: service.stats().get("connections_refused", 0) >= 1, what="refusal")
        wait_for(lambda: "refused this node's key" in caplog.text, what="the edge's log line")
        assert stored_ids(service.config.db_path) == []
        assert outbox.backlog() == 1  # still waiting, not lost
        assert sender.stats.acked == 0 and sender.stats.sent == 0 and sender.stats.heartbeats == 0
        assert "not on the allow-list" in caplog.text
    finally:
        sender.stop()
        service.stop()
        outbox.close()


def test_edge_whose_key_is_added_later_gets_through(tmp_path, keys, ctx):
    service = start_collector(tmp_path, keys, ctx)
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    outbox.add_hit(make_hit(1, node="newcomer"))
    sender = _sender(keys, outbox, service.endpoint, ctx, node="newcomer", allowed=False,
                     max_backoff_s=0.5)  # fmt: skip
    sender.start()
    try:
        wait_for(lambda: service.stats().get("connections_refused", 0) >= 1, what="refusal")
        d = keys.edge_dir("newcomer")
        (keys.allowed_dir / "newcomer.key").write_bytes((d / "newcomer.key").read_bytes())
        wait_for(lambda: outbox.backlog() == 0, what="delivery once allowed")
        assert stored_ids(service.config.db_path) == [make_hit(1).hit_id]
    finally:
        sender.stop()
        service.stop()
        outbox.close()


def test_a_node_cannot_pose_as_another(tmp_path, keys, ctx):
    keys.edge("edge2")  # edge2 exists and is allowed; edge1 tries to send in its name
    service = start_collector(tmp_path, keys, ctx)
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    outbox.add_hit(make_hit(1, node="edge2"))
    outbox.add_hit(make_hit(2, node="edge1"))
    sender = _sender(keys, outbox, service.endpoint, ctx, node="edge1")
    sender.start()
    try:
        wait_for(lambda: outbox.stats()["held"] == 1 and outbox.backlog() == 0, what="refusal")
        assert stored_ids(service.config.db_path) == [make_hit(2).hit_id]
        assert service.stats()["refused_impersonation"] == 1
        assert sender.stats.rejected == 1
    finally:
        sender.stop()
        service.stop()
        outbox.close()


def test_an_edge_still_on_version_1_is_understood(tmp_path, keys, ctx):
    service = start_collector(tmp_path, keys, ctx)
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    sender = _sender(keys, outbox, service.endpoint, ctx, protocol_version=1)
    sender.start()
    try:
        outbox.add_hit(make_hit(1))
        wait_for(lambda: outbox.backlog() == 0, what="delivery")
    finally:
        sender.stop()
        service.stop()
        outbox.close()
    reader = HitReader(service.config.db_path)
    (row,) = reader.search(HitQuery(since=make_hit(1).seen_at), newest_first=False)
    reader.close()
    assert row.version == 1 and row.plate_text == "AB00001" and row.scene_bytes == 0


def test_hit_the_collector_already_has_is_acked_not_stored_twice(tmp_path, keys, ctx):
    # The collector committed these, then died before its ack went out.
    config = collector_config(tmp_path, keys)
    store = HitStore(config.db_path)
    store.commit([make_hit(n) for n in range(5)])
    store.close()
    service = start_collector(tmp_path, keys, ctx)
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    for n in range(10):
        outbox.add_hit(make_hit(n))
    sender = _sender(keys, outbox, service.endpoint, ctx)
    sender.start()
    try:
        wait_for(lambda: outbox.backlog() == 0, what="delivery")
        assert service.stats()["duplicates"] == 5 and service.stats()["stored"] == 5
        ids = stored_ids(config.db_path)
        assert len(ids) == len(set(ids)) == 10
    finally:
        sender.stop()
        service.stop()
        outbox.close()


def test_outage_then_restart_delivers_everything_highest_priority_first(tmp_path, keys, ctx):
    port = free_port()
    listen = f"tcp://127.0.0.1:{port}"
    config = collector_config(tmp_path, keys, listen)
    service = CollectorService(config, ctx=ctx)
    service.start()
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    sender = _sender(keys, outbox, listen, ctx, window=4)
    sender.start()
    try:
        outbox.add_hit(make_hit(0))
        wait_for(lambda: outbox.backlog() == 0, what="first delivery")
        service.stop()  # the collector is down: hits pile up on the edge
        for n in range(1, 41):
            outbox.add_hit(make_hit(n, priority=1 if n % 4 == 0 else 5))
        wait_for(lambda: not sender.stats.link_up, what="the edge to notice")
        assert outbox.backlog() == 40
        service = CollectorService(config, ctx=ctx)
        service.start()
        wait_for(lambda: outbox.backlog() == 0, what="delivery after the outage")
        ids = stored_ids(config.db_path)
        assert len(ids) == len(set(ids)) == 41
        urgent = {make_hit(n).hit_id for n in range(4, 41, 4)}
        assert set(ids[1:11]) == urgent  # all ten priority-1 hits came first
    finally:
        sender.stop()
        service.stop()
        outbox.close()


def test_reads_never_leave_the_node(tmp_path, keys, ctx):
    service = start_collector(tmp_path, keys, ctx)
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    for i in range(20):
        outbox.record_read("cam1", f"NOHIT{i}")
    outbox.add_hit(make_hit(1))
    sender = _sender(keys, outbox, service.endpoint, ctx)
    sender.start()
    try:
        wait_for(lambda: outbox.backlog() == 0, what="delivery")
        assert service.stats()["stored"] == 1
        assert sender.stats.sent == 1
    finally:
        sender.stop()
        service.stop()
        outbox.close()
    assert len(Outbox(Path(tmp_path / "edge" / "outbox.db")).reads(100)) == 20
