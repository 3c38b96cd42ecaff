"""The console's HTTP API on the full stack: a real collector with its console on loopback, hits
sent and watchlists synced by real edges over CURVE.  Only what needs real ports, real edges
or the real server is here; the handlers themselves are tested in-process (test_console_app)."""

from __future__ import annotations

import time

import zmq
from helpers.console import (
    ADMIN,
    OPERATOR,
    Client,
    EventStream,
    console_hit,
    live_status,
    start_stack,
)
from helpers.link import wait_for

from edge.core.keys import generate_keypair
from edge.core.link_protocol import CameraLocation
from edge.node.watchlist.sync import WatchlistSync


def test_cookie_is_secure_when_the_proxy_says_https(stack):
    status, headers, _ = Client(stack.url).request(
        "POST", "/api/login", {"name": ADMIN[0], "password": ADMIN[1]},
        headers={"X-Forwarded-Proto": "https"},
    )  # fmt: skip
    assert status == 200 and "secure" in headers["set-cookie"].lower()


def test_a_hit_from_an_edge_streams_to_the_page_then_is_acknowledged(stack):
    admin = stack.client(ADMIN)
    status, added = admin.post("/api/watchlists/stolen/entries", {
        "plate": "WX 12345", "country": "PL", "category": "stolen_vehicle", "priority": 1,
        "agency": "PL-KGP", "reason": "stolen Skoda, armed driver"})  # fmt: skip
    assert status == 200, added
    operator = stack.client(OPERATOR)
    events = EventStream(stack.url, operator.token)
    watcher = EventStream(stack.url, admin.token)
    outbox = stack.edge("edge-a")
    try:
        wait_for(lambda: stack.console.console.hub.subscribers == 2, 10, "both streams")
        hit = console_hit("WX12345", entry_id=str(added["id"]), reason="stolen Skoda, armed driver",
                          kind="fuzzy", distance=1, entry_plate="WX12845")  # fmt: skip
        sent = time.monotonic()
        outbox.add_hit(hit)
        kind, data = events.next_event()
        took = time.monotonic() - sent
        assert kind == "hit"
        assert took < 1.0, f"the hit took {took:.2f} s to reach the page"
        assert data["hit_id"] == hit.hit_id
        assert data["plate_formatted"] == "WX1 2345" and data["country"] == "PL"
        assert data["watchlist"] == "stolen" and data["agency"] == "PL-KGP"
        assert data["reason"] == "stolen Skoda, armed driver" and data["priority"] == 1
        assert (data["match_kind"], data["match_distance"]) == ("fuzzy", 1)
        assert (data["node"], data["camera"], data["road"]) == ("edge-a", "cam-north", "S8 km 12")
        assert data["acks"] == [] and data["crop_bytes"] == len(hit.crop_jpeg)

        status, ack = operator.post(f"/api/hits/{hit.hit_id}/ack", {"note": "unit 7 en route"})
        assert status == 200, ack
        assert (ack["user"], ack["display_name"], ack["note"]) == (
            "olga", "Olga Operator", "unit 7 en route")  # fmt: skip
        for stream in (events, watcher):  # everybody's page learns who took it
            kinds = [stream.next_event() for _ in range(2 if stream is watcher else 1)]
            assert ("ack", ack) in kinds
    finally:
        events.close()
        watcher.close()
    board = operator.get("/api/live")[1]
    (shown,) = [h for h in board["hits"] if h["hit_id"] == hit.hit_id]
    assert [a["note"] for a in shown["acks"]] == ["unit 7 en route"]


def test_cameras_by_place_and_health(stack):
    edge_a = stack.edge("edge-a", status=live_status("cam-north"))
    frozen = {"camera": "cam-x", "kind": "frozen", "detail": "picture unchanged"}
    sick = {"heartbeat_s": 0.2, "health": {"ok": False, "problems": [frozen]},
            "cameras": {"cam-x": {"state": "frozen", "ok": False, "fps": 0.0,
                                  "detail": "picture unchanged"}}}  # fmt: skip
    stack.edge("edge-b", status=sick)
    hit = console_hit("LT777", location=CameraLocation(54.687, 25.279, "A1 km 3", "to Kaunas"))
    edge_a.add_hit(hit)
    wait_for(lambda: stack.stored(hit.hit_id), 20, "the hit to be stored")
    c = stack.client(OPERATOR)

    def cams() -> dict[str, dict]:
        return {x["id"]: x for x in c.get("/api/cameras")[1]["cameras"]}

    wait_for(lambda: {"edge-a/cam-north", "edge-b/cam-x"} <= set(cams())
             and cams()["edge-a/cam-north"]["last_hit_at"], 10, "both cameras heard")  # fmt: skip
    got = cams()
    north, x = got["edge-a/cam-north"], got["edge-b/cam-x"]
    assert north["health"] == "live" and north["fps"] == 12.5
    assert (north["lat"], north["lon"], north["road"]) == (54.687, 25.279, "A1 km 3")
    assert x["health"] == "unhealthy"
    assert x["problems"] == ["camera cam-x: frozen (picture unchanged)"]
    assert (x["lat"], x["lon"], x["label"]) == (54.35, 23.35, "Kalvarija border crossing")


def test_a_camera_only_in_the_config_is_late_until_heard(tmp_path):
    from edge.collector.console.config import CameraPlace, ConsoleConfig

    s = start_stack(tmp_path, ConsoleConfig(port=0, cameras=[
        CameraPlace(node="edge-z", camera="gate", lat=41.7, lon=26.5, label="Kapikule")]))
    try:
        (cam,) = s.client(OPERATOR).get("/api/cameras")[1]["cameras"]
        assert (cam["id"], cam["health"]) == ("edge-z/gate", "late")
        assert cam["problems"] == ["never heard"]
        assert cam["label"] == "Kapikule" and cam["last_seen"] is None
    finally:
        s.close()
        s.ctx.destroy(linger=0)


def test_admin_watchlist_changes_reach_an_edge(stack):
    admin = stack.client(ADMIN)
    edge_keys = generate_keypair(stack.root / "wl-edge", "wl-edge")
    (stack.keys.allowed_dir / "wl-edge.key").write_bytes(
        (stack.root / "wl-edge" / "wl-edge.key").read_bytes())
    ctx = zmq.Context()
    wl = stack.config.watchlists
    edge = WatchlistSync(stack.root / "edge-lists.db", wl.snapshot, stack.keys.server_public,
                         edge_keys, ctx=ctx, updates_endpoint=wl.publish)  # fmt: skip
    edge.start()
    try:
        text = ("plate,country,category,priority,reason\n"
                "LV AB 1234,LV,stolen_vehicle,2,stolen van\n"
                "KR 55555,PL,wanted_person,1,armed\n")  # fmt: skip
        status, body = admin.post("/api/watchlists/border/import",
                                  {"text": text, "agency": "LV-VP", "filename": "border.csv"})
        assert status == 200, body
        status, added = admin.post("/api/watchlists/border/entries", {
            "plate": "TR 34 ABC 99", "country": "TR", "category": "alert", "priority": "3",
            "agency": "TR-EGM", "reason": "customs", "valid_until": "2099-01-01"})  # fmt: skip
        assert status == 200, added
        assert edge.wait_synced(20), "the edge did not sync"
        wait_for(lambda: edge.matcher.match("TR34ABC99") and edge.matcher.match("KR55555"),
                 10, "the entries to reach the edge")  # fmt: skip
        kr = {e["plate"]: e["id"] for e in admin.get(
            "/api/watchlists/border/entries")[1]["entries"]}["KR55555"]
        status, body = admin.post(f"/api/entries/{kr}/expire", {})
        assert status == 200, body
        wait_for(lambda: not edge.matcher.match("KR55555"), 10, "the expiry to reach the edge")
        assert edge.matcher.match("TR34ABC99") and edge.matcher.match("LVAB1234")
    finally:
        edge.stop()
        edge.replica.close()
        ctx.destroy(linger=0)


def test_collector_run_serves_the_console_and_stops_on_sigterm(tmp_path):
    """`anpr-collector run` with a console: section; a user made with `anpr-collector user`."""
    import os
    import signal
    import subprocess
    import sys

    from helpers.link import child_env, free_port, make_keys

    keys = make_keys(tmp_path)
    port = free_port()
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"listen: tcp://127.0.0.1:{free_port()}\ndata_dir: {tmp_path / 'data'}\n"
        f"credentials_dir: {keys.collector_dir}\nallowed_keys_dir: {keys.allowed_dir}\n"
        f"console: {{port: {port}}}\n"
    )
    cli = [sys.executable, "-m", "edge.collector.cli"]
    env = child_env()
    added = subprocess.run([*cli, "user", "add", "olga", "--role", "operator", "--config",
                            str(config), "--password-stdin"], input="operator password 1\n",
                           capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert added.returncode == 0, added.stderr
    log = tmp_path / "collector.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*cli, "run", "--config", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        wait_for(lambda: "collector listening on" in log.read_text() or proc.poll() is not None,
                 30, "the collector to start")  # fmt: skip
        assert proc.poll() is None, log.read_text()
        assert f"console on http://127.0.0.1:{port}" in log.read_text()
        c = Client(f"http://127.0.0.1:{port}")
        assert c.get("/api/live")[0] == 401
        c.sign_in("olga", "operator password 1")
        assert c.get("/api/live") == (200, {"hits": [], "last_rowid": 0})
        events = EventStream(c.url, c.token)  # an open stream must not hold up the stop
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
        events.close()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
