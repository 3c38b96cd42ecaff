"""Health to the centre: a node's heartbeats reach a real collector, and `anpr-collector nodes`
shows the nodes that are late or unhealthy."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest
import zmq
from helpers.link import make_keys, start_collector, wait_for
from test_health import camera_factory, frozen

from edge.collector.cli import judge_node, main
from edge.collector.store import HitStore, Seen
from edge.core.status import NodeStatus
from edge.node.config import EdgeConfig
from edge.node.service import EdgeService

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
FROZEN = {"camera": "a", "kind": "frozen", "detail": "picture unchanged"}


def node(last_seen: dt.datetime | None, status: dict | None = None) -> dict:
    return {"node": "n", "last_seen": None if last_seen is None else last_seen.isoformat(),
            "status": status, "cameras": [], "address": None}


def beat(node: str = "n", **fields) -> dict:
    """A node's status as the collector stores it: a validated NodeStatus's JSON."""
    fields.setdefault("health", {"ok": True, "problems": []})
    return NodeStatus.model_validate({"node": node, **fields}).model_dump(mode="json")


def judged(n: dict, late_after_s: float | None = None) -> tuple[str, list[str]]:
    health = judge_node(n, NOW, late_after_s)
    return health.verdict, health.reasons


def test_late_is_three_of_the_nodes_own_heartbeats_and_never_below_30_s():
    assert judged(node(NOW - dt.timedelta(seconds=29))) == ("ok", [])
    verdict, why = judged(node(NOW - dt.timedelta(seconds=31)))
    assert verdict == "late" and "not heard for 31 s (late after 30 s)" in why[0]
    slow_beats = beat(heartbeat_s=60)
    assert judged(node(NOW - dt.timedelta(seconds=170), slow_beats))[0] == "ok"
    assert judged(node(NOW - dt.timedelta(seconds=190), slow_beats))[0] == "late"
    assert judged(node(NOW - dt.timedelta(seconds=10)), late_after_s=5)[0] == "late"
    assert judged(node(None)) == ("late", ["never heard"])


def test_unhealthy_is_what_the_node_says_is_wrong():
    status = beat(health={"ok": False, "problems": [FROZEN]})
    assert judged(node(NOW, status)) == ("unhealthy", ["camera a: frozen (picture unchanged)"])
    assert judge_node(node(NOW, status), NOW).problems[0].camera == "a"
    assert judged(node(NOW, beat())) == ("ok", [])
    assert judged(node(NOW, beat(health={"ok": False}))) == ("unhealthy", ["unhealthy"])
    late = judged(node(NOW - dt.timedelta(minutes=5), status))
    assert late[0] == "late" and late[1][1].startswith("camera a: frozen")


def test_a_stored_status_that_does_not_validate_is_unreadable_and_no_failure():
    """Rows an older collector stored unchecked: said to be unreadable, never a traceback."""
    for raw in ({"health": {"ok": False, "problems": 5}}, "{not json", "[" * 100_000, [1, 2],
                {"node": "n", "health": {"ok": "yes"}}):
        health = judge_node(node(NOW, raw), NOW)  # type: ignore[arg-type]
        assert (health.verdict, health.reasons, health.status) == (
            "unhealthy", ["unreadable status"], None), raw
    late = judged(node(NOW - dt.timedelta(minutes=5), {"health": 5}))
    assert late[0] == "late" and late[1][1:] == ["unreadable status"]


def test_a_status_an_older_node_sent_is_read_as_it_was_written():
    """Problems were lines of text: each is kept, with its camera, and reads as before."""
    old = {"node": "n", "heartbeat_s": 10, "health": {"ok": False, "problems": [
        "camera a: frozen (picture unchanged)", "store at 93% of its disk budget"]},
        "cameras": {"a": {"state": "frozen", "ok": False, "fps": 0}}}  # fmt: skip
    health = judge_node(node(NOW, json.dumps(old)), NOW)  # as the nodes table holds it
    assert health.reasons == ["camera a: frozen (picture unchanged)",
                              "store at 93% of its disk budget"]
    assert [p.camera for p in health.problems] == ["a", None]


def test_nodes_lists_late_and_unhealthy_ones_and_problems_alone_exits_1(tmp_path, capsys):
    path = tmp_path / "hits.db"
    store = HitStore(path)
    now = dt.datetime.now(dt.UTC)
    well = {"heartbeat_s": 10, "cameras": {"north": {"state": "live", "ok": True, "fps": 24.96}},
            "outbox": {"backlog": 0}, "disk": {"used_fraction": 0.12}}
    sick = {"health": {"ok": False, "problems": [
                {"camera": "south", "kind": "black", "detail": "picture black"}]},
            "heartbeat_s": 10, "cameras": {"south": {"state": "black", "ok": False, "fps": 0}},
            "outbox": {"backlog": 4}, "disk": {"used_fraction": 0.5}}  # fmt: skip
    store.record_seen([
        Seen("edge-ok", now, "10.0.0.1", beat("edge-ok", **well), {"north"}),
        Seen("edge-sick", now, "10.0.0.2", beat("edge-sick", **sick), {"south"}),
        Seen("edge-gone", now - dt.timedelta(minutes=10), "10.0.0.3", beat("edge-gone", **well),
             {"north"}),
        # as an older collector may have stored it
        Seen("edge-odd", now, "10.0.0.4", {"health": {"ok": False, "problems": 5}}, {"north"}),
    ])
    store.close()
    assert main(["nodes", "--db", str(path)]) == 0
    out = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
           if not line.startswith(" ")}
    assert " OK " in out["edge-ok"] and "north live 25.0 fps" in out["edge-ok"]
    assert "disk 12%" in out["edge-ok"]
    assert " UNHEALTHY " in out["edge-sick"] and "south BLACK" in out["edge-sick"]
    assert " LATE " in out["edge-gone"]
    assert " UNHEALTHY " in out["edge-odd"] and "backlog ?" in out["edge-odd"]
    assert main(["nodes", "--db", str(path), "--problems"]) == 1
    text = capsys.readouterr().out
    assert "edge-ok" not in text and "! camera south: black (picture black)" in text
    assert "! not heard for 6" in text  # 600 s
    assert "! unreadable status" in text
    assert main(["nodes", "--db", str(path), "--json", "--problems"]) == 1
    verdicts = {n["node"]: n["verdict"] for n in json.loads(capsys.readouterr().out)}
    assert verdicts == {"edge-sick": "unhealthy", "edge-gone": "late", "edge-odd": "unhealthy"}


@pytest.mark.models
def test_a_nodes_heartbeats_reach_the_collector_with_its_cameras_health(tmp_path, engines,
                                                                       capsys):
    keys = make_keys(tmp_path / "pki")
    ctx = zmq.Context()
    collector = start_collector(tmp_path / "pki", keys, ctx)
    keys.edge("edge-7")
    creds = keys.edge_dir("edge-7")
    shutil.copy(keys.collector_dir / "collector.key", creds / "collector.key")
    config = EdgeConfig.model_validate({
        "node_id": "edge-7", "state_dir": str(tmp_path / "state"), "analysis_fps": 2,
        "cameras": [{"id": "gate", "source": "rtsp://gate.invalid/s"}],
        "link": {"collector": collector.endpoint, "credentials_dir": str(creds),
                 "heartbeat_s": 0.2}})
    service = EdgeService(config, engines=engines,
                          source_factory=camera_factory(frozen, []))
    db = collector.config.db_path
    try:
        service.start()
        n = wait_for(_readonly(db, "gate"), 20, "a heartbeat with the frozen camera")
        status = NodeStatus.model_validate(n["status"])
        assert status.config == service.config_hash
        assert set(status.models) >= {"plates"}
        assert status.outbox is not None and status.outbox.budget_bytes == 2048 * 1024**2
        assert status.disk is not None and status.disk.free_bytes > 0
        assert status.cameras["gate"].fps > 0
        assert status.health.ok is False
        assert any((p.camera, p.kind) == ("gate", "frozen") for p in status.health.problems)
        assert status.link is not None and status.link.heartbeats >= 1
    finally:
        service.stop()
        collector.stop()
        ctx.term()
    assert main(["nodes", "--db", str(db), "--problems"]) == 1
    out = capsys.readouterr().out
    assert "edge-7" in out and "UNHEALTHY" in out and "! camera gate: frozen" in out


def _readonly(db, camera: str):
    """A condition: the node row whose last status shows `camera` frozen, else None."""

    def find() -> dict | None:
        if not db.exists():
            return None
        store = HitStore(db, readonly=True)
        try:
            nodes = store.nodes()
        finally:
            store.close()
        for n in nodes:
            cams = (n.get("status") or {}).get("cameras") or {}
            if cams.get(camera, {}).get("state") == "frozen":
                return n
        return None

    return find
