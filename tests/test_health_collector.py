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
from edge.node.config import EdgeConfig
from edge.node.service import EdgeService

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def node(last_seen: dt.datetime | None, status: dict | None = None) -> dict:
    return {"node": "n", "last_seen": None if last_seen is None else last_seen.isoformat(),
            "status": status, "cameras": [], "address": None}


def test_late_is_three_of_the_nodes_own_heartbeats_and_never_below_30_s():
    assert judge_node(node(NOW - dt.timedelta(seconds=29)), NOW) == ("ok", [])
    verdict, why = judge_node(node(NOW - dt.timedelta(seconds=31)), NOW)
    assert verdict == "late" and "not heard for 31 s (late after 30 s)" in why[0]
    slow_beats = {"heartbeat_s": 60}
    assert judge_node(node(NOW - dt.timedelta(seconds=170), slow_beats), NOW)[0] == "ok"
    assert judge_node(node(NOW - dt.timedelta(seconds=190), slow_beats), NOW)[0] == "late"
    assert judge_node(node(NOW - dt.timedelta(seconds=10)), NOW, late_after_s=5)[0] == "late"
    assert judge_node(node(None), NOW) == ("late", ["never heard"])


def test_unhealthy_is_what_the_node_says_is_wrong():
    status = {"health": {"ok": False, "problems": ["camera a: frozen (picture unchanged)"]}}
    assert judge_node(node(NOW, status), NOW) == (
        "unhealthy", ["camera a: frozen (picture unchanged)"])
    assert judge_node(node(NOW, {"health": {"ok": True, "problems": []}}), NOW) == ("ok", [])
    late = judge_node(node(NOW - dt.timedelta(minutes=5), status), NOW)
    assert late[0] == "late" and late[1][1].startswith("camera a: frozen")


def test_nodes_lists_late_and_unhealthy_ones_and_problems_alone_exits_1(tmp_path, capsys):
    path = tmp_path / "hits.db"
    store = HitStore(path)
    now = dt.datetime.now(dt.UTC)
    well = {"health": {"ok": True, "problems": []}, "heartbeat_s": 10,
            "cameras": {"north": {"state": "live", "fps": 24.96}},
            "outbox": {"backlog": 0}, "disk": {"used_fraction": 0.12}}
    sick = {"health": {"ok": False, "problems": ["camera south: black (picture black)"]},
            "heartbeat_s": 10, "cameras": {"south": {"state": "black", "fps": 0}},
            "outbox": {"backlog": 4}, "disk": {"used_fraction": 0.5}}
    store.record_seen([
        Seen("edge-ok", now, "10.0.0.1", well, {"north"}),
        Seen("edge-sick", now, "10.0.0.2", sick, {"south"}),
        Seen("edge-gone", now - dt.timedelta(minutes=10), "10.0.0.3", well, {"north"}),
    ])
    store.close()
    assert main(["nodes", "--db", str(path)]) == 0
    out = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
           if not line.startswith(" ")}
    assert " OK " in out["edge-ok"] and "north live 25.0 fps" in out["edge-ok"]
    assert "disk 12%" in out["edge-ok"]
    assert " UNHEALTHY " in out["edge-sick"] and "south BLACK" in out["edge-sick"]
    assert " LATE " in out["edge-gone"]
    assert main(["nodes", "--db", str(path), "--problems"]) == 1
    text = capsys.readouterr().out
    assert "edge-ok" not in text and "! camera south: black" in text
    assert "! not heard for 6" in text  # 600 s
    assert main(["nodes", "--db", str(path), "--json", "--problems"]) == 1
    verdicts = {n["node"]: n["verdict"] for n in json.loads(capsys.readouterr().out)}
    assert verdicts == {"edge-sick": "unhealthy", "edge-gone": "late"}


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
        status = n["status"]
        assert status["config"] == service.config_hash
        assert set(status["models"]) >= {"plates"}
        assert status["outbox"]["budget_bytes"] == 2048 * 1024**2
        assert "backlog" in status["outbox"] and "free_bytes" in status["disk"]
        assert status["cameras"]["gate"]["fps"] > 0
        assert status["health"]["ok"] is False
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
