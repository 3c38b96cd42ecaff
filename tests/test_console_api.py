"""The console's HTTP API against a real collector on loopback, hits sent by real edges."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3
import time

import pytest
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

PROTECTED = [
    "/api/me", "/api/live", "/api/events", "/api/hits", "/api/hits.csv", "/api/hits.json",
    "/api/hits/0190a0c0-0000-7000-8000-000000000000", "/api/hits/x/crop.jpg",
    "/api/cameras", "/api/region", "/api/watchlists", "/api/watchlists/stolen/entries",
    "/api/audit", "/static/app.js", "/static/index.html", "/static/region.geojson",
]  # fmt: skip


def test_nothing_is_served_without_a_session(stack):
    anon = Client(stack.url)
    for path in PROTECTED:
        status, body = anon.get(path)
        assert status == 401, path
        assert body == {"error": "sign in first"}, path
    status, headers, _ = anon.request("GET", "/")
    assert status == 303 and headers["location"] == "/login"
    status, body = anon.post("/api/hits/x/ack", {"note": "mine"})
    assert status == 401
    # A made-up or stolen-looking cookie is no session either.
    forged = Client(stack.url)
    status, _, _ = forged.request("GET", "/api/live", headers={"Cookie": "anpr_console=abc"})
    assert status == 401
    # What signing in needs is public, and says nothing.
    for path in ("/login", "/static/login.js", "/static/console.css"):
        assert anon.get(path)[0] == 200, path


def test_sign_in_sets_a_strict_cookie_and_sign_out_ends_the_session(stack):
    c = Client(stack.url)
    status, headers, body = c.request(
        "POST", "/api/login", {"name": OPERATOR[0], "password": OPERATOR[1]}
    )
    assert status == 200, body
    cookie = headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain HTTP on loopback; behind TLS it is marked Secure
    assert c.get("/api/me")[1]["user"] == {"name": "olga", "display_name": "Olga Operator",
                                           "role": "operator"}  # fmt: skip
    token = c.token
    assert c.post("/api/logout")[0] == 200
    again = Client(stack.url)
    status, _, _ = again.request("GET", "/api/live", headers={"Cookie": f"anpr_console={token}"})
    assert status == 401


def test_cookie_is_secure_when_the_proxy_says_https(stack):
    status, headers, _ = Client(stack.url).request(
        "POST", "/api/login", {"name": ADMIN[0], "password": ADMIN[1]},
        headers={"X-Forwarded-Proto": "https"},
    )  # fmt: skip
    assert status == 200 and "secure" in headers["set-cookie"].lower()


def test_wrong_passwords_lock_the_name_out_for_a_while(stack):
    c = Client(stack.url)
    for _ in range(5):
        status, body = c.post("/api/login", {"name": "olga", "password": "not her password"})
        assert status == 401 and body["error"] == "wrong name or password"
    status, body = c.post("/api/login", {"name": "olga", "password": OPERATOR[1]})
    assert status == 429 and "try again" in body["error"]
    assert c.get("/api/live")[0] == 401
    stack.client(ADMIN)  # others at the same desk (address) still sign in
    trail = _audit_rows(stack)
    assert [r["action"] for r in trail].count("sign-in failed") == 5
    assert "sign-in refused" in [r["action"] for r in trail]


def test_unknown_user_and_wrong_password_answer_alike(stack):
    c = Client(stack.url)
    assert c.post("/api/login", {"name": "nobody", "password": "x" * 12}) == (
        401, {"error": "wrong name or password"})  # fmt: skip
    assert c.post("/api/login", {"name": "olga", "password": "x" * 12}) == (
        401, {"error": "wrong name or password"})  # fmt: skip


def test_changes_must_be_json_from_the_page_itself(stack):
    c = stack.client(OPERATOR)
    status, _, body = c.request("POST", "/api/hits/x/ack", b"note=mine",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403 and b"JSON" in body
    status, _, _ = c.request("POST", "/api/hits/x/ack", {"note": "mine"},
                             headers={"Origin": "https://evil.example"})  # fmt: skip
    assert status == 403
    status, _, _ = c.request("POST", "/api/hits/x/ack", {"note": "mine"},
                             headers={"Origin": stack.url})  # fmt: skip
    assert status == 404  # let through: there is no hit x


def test_pages_carry_a_strict_content_security_policy(stack):
    c = stack.client(OPERATOR)
    status, headers, body = c.request("GET", "/")
    assert status == 200 and b"ANPR console" in body
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    _, headers, _ = c.request("GET", "/api/live")
    assert headers["cache-control"] == "no-store"


def _audit_rows(stack) -> list[dict]:  # noqa: F811
    db = sqlite3.connect(f"file:{stack.console.database}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY id")]
    finally:
        db.close()


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
    assert operator.get(f"/api/hits/{hit.hit_id}/crop.jpg")[1] == hit.crop_jpeg
    assert operator.get(f"/api/hits/{hit.hit_id}/scene.jpg")[1] == hit.scene_jpeg
    assert operator.get(f"/api/hits/{hit.hit_id}/other.jpg")[0] == 404
    assert operator.get("/api/hits/nope/crop.jpg")[0] == 404
    # The trail: who acknowledged what and when, and nobody can rewrite it.
    (row,) = [r for r in _audit_rows(stack) if r["action"] == "acknowledge"]
    assert row["user"] == "olga" and hit.hit_id in row["detail"]
    db = sqlite3.connect(stack.console.database)
    try:
        for sql in ("UPDATE acks SET note = 'nothing'", "DELETE FROM acks",
                    "UPDATE audit SET user = 'someone'", "DELETE FROM audit"):  # fmt: skip
            with pytest.raises(sqlite3.IntegrityError, match="kept as written"):
                db.execute(sql)
    finally:
        db.close()
    audit = admin.get("/api/audit")[1]["audit"]
    assert audit[0]["action"] == "acknowledge"  # newest first
    assert operator.get("/api/audit")[0] == 403


def test_an_unknown_hit_cannot_be_acknowledged(stack):
    status, body = stack.client(OPERATOR).post("/api/hits/no-such-hit/ack", {"note": ""})
    assert status == 404 and body == {"error": "no such hit"}


def _send(stack, hits, node="edge-a"):  # noqa: F811
    outbox = stack.edge(node)
    for h in hits:
        outbox.add_hit(h)
    wait_for(lambda: all(stack.stored(h.hit_id) for h in hits), 20, "hits to be stored")


T0 = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)


def test_search_by_wildcard_time_camera_and_list_and_export(stack):
    a = [
        console_hit("WX12345", seen_at=T0, priority=2),
        console_hit("WX12999", seen_at=T0 + dt.timedelta(hours=1), watchlist="border",
                    kind="wildcard", entry_plate="WX12*", camera="cam-south",
                    reason="=HYPERLINK(\"http://x\")"),
        console_hit("KR77777", seen_at=T0 + dt.timedelta(hours=2), priority=5),
    ]  # fmt: skip
    b = [console_hit("WX12345", node="edge-b", camera="cam-x",
                     seen_at=T0 + dt.timedelta(hours=3))]
    _send(stack, a, "edge-a")
    _send(stack, b, "edge-b")
    c = stack.client(OPERATOR)

    def ids(query: str) -> list[str]:
        status, body = c.get(f"/api/hits?{query}")
        assert status == 200, body
        return [h["hit_id"] for h in body["hits"]]

    assert ids("plate=WX12345") == [b[0].hit_id, a[0].hit_id]  # most recently seen first
    assert ids("plate=wx%2012345%20") == [b[0].hit_id, a[0].hit_id]  # as people type it
    assert ids("plate=WX12*") == [b[0].hit_id, a[1].hit_id, a[0].hit_id]
    assert ids("plate=%3FX12999") == [a[1].hit_id]  # ?X12999
    assert ids("plate=*777*") == [a[2].hit_id]
    assert ids("since=2026-05-01T08:30:00Z&until=2026-05-01T10:30:00Z") == [
        a[2].hit_id, a[1].hit_id]  # fmt: skip
    assert ids("since=2026-05-01T11:30:00%2B02:00") == [b[0].hit_id, a[2].hit_id]  # 09:30 UTC
    assert ids("camera=edge-a/cam-south") == [a[1].hit_id]
    assert ids("camera=edge-b") == [b[0].hit_id]
    assert ids("watchlist=border") == [a[1].hit_id]
    assert ids("plate=WX*&camera=edge-a/cam-north") == [a[0].hit_id]
    assert ids("limit=2") == [b[0].hit_id, a[2].hit_id]
    assert ids("plate=wx*&camera=edge-a/cam-north") == [a[0].hit_id]
    assert c.get("/api/hits?plate=*%3F*")[0] == 400  # no letter or digit to search by
    assert c.get("/api/hits?since=yesterday")[0] == 400

    status, headers, raw = c.request("GET", "/api/hits.csv?plate=WX*")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert "attachment" in headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert [r["hit_id"] for r in rows] == [b[0].hit_id, a[1].hit_id, a[0].hit_id]
    assert rows[1]["reason"] == "'=HYPERLINK(\"http://x\")"  # not a formula in a spreadsheet
    assert rows[1]["match_kind"] == "wildcard" and rows[1]["plate_formatted"] == "WX1 2999"
    status, headers, raw = c.request("GET", "/api/hits.json?camera=edge-b")
    assert status == 200 and headers["content-type"].startswith("application/json")
    exported = json.loads(raw)
    assert [h["hit_id"] for h in exported] == [b[0].hit_id]
    assert exported[0]["acks"] == [] and exported[0]["lat"] == pytest.approx(52.2297)
    assert c.get("/api/hits.xml")[0] == 404
    exports = [r for r in _audit_rows(stack) if r["action"] == "export"]
    assert len(exports) == 2 and "plate" in exports[0]["detail"]


def test_cameras_by_place_and_health(stack):
    edge_a = stack.edge("edge-a", status=live_status("cam-north"))
    sick = {"heartbeat_s": 0.2,
            "health": {"ok": False, "problems": ["camera cam-x: frozen (picture unchanged)"]},
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


def test_region_outline_is_shipped(stack):
    status, region = stack.client(OPERATOR).get("/api/region")
    assert status == 200 and region["type"] == "FeatureCollection"
    isos = {f["properties"]["iso"] for f in region["features"]}
    assert {"EE", "LV", "LT", "PL", "BG", "TR"} <= isos
    assert "approximate" in region["name"]


def test_admin_watchlist_changes_reach_an_edge(stack):
    admin, operator = stack.client(ADMIN), stack.client(OPERATOR)
    edge_keys = generate_keypair(stack.root / "wl-edge", "wl-edge")
    (stack.keys.allowed_dir / "wl-edge.key").write_bytes(
        (stack.root / "wl-edge" / "wl-edge.key").read_bytes())
    ctx = zmq.Context()
    wl = stack.config.watchlists
    edge = WatchlistSync(stack.root / "edge-lists.db", wl["snapshot"], stack.keys.server_public,
                         edge_keys, ctx=ctx, updates_endpoint=wl["publish"])  # fmt: skip
    edge.start()
    try:
        text = ("plate,country,category,priority,reason\n"
                "LV AB 1234,LV,stolen_vehicle,2,stolen van\n"
                "KR 55555,PL,wanted_person,1,armed\n")  # fmt: skip
        status, body = operator.post("/api/watchlists/border/import", {"text": text})
        assert status == 403
        status, body = admin.post("/api/watchlists/border/import",
                                  {"text": text, "agency": "LV-VP", "filename": "border.csv"})
        assert status == 200, body
        assert (body["added"], body["changed"]) == (2, 0)
        status, added = admin.post("/api/watchlists/border/entries", {
            "plate": "TR 34 ABC 99", "country": "TR", "category": "alert", "priority": "3",
            "agency": "TR-EGM", "reason": "customs", "valid_until": "2099-01-01"})  # fmt: skip
        assert status == 200, added
        assert edge.wait_synced(20), "the edge did not sync"
        wait_for(lambda: edge.matcher.match("TR34ABC99") and edge.matcher.match("KR55555"),
                 10, "the entries to reach the edge")  # fmt: skip
        entries = operator.get("/api/watchlists/border/entries")[1]["entries"]
        by_plate = {e["plate"]: e for e in entries}
        assert by_plate["LVAB1234"]["agency"] == "LV-VP"
        assert by_plate["LVAB1234"]["added_by"] == "ada"
        assert by_plate["TR34ABC99"]["reason"] == "customs"
        assert operator.get("/api/watchlists/border/entries?plate=55*")[1]["entries"] == []
        assert [e["plate"] for e in operator.get(
            "/api/watchlists/border/entries?plate=*555*")[1]["entries"]] == ["KR55555"]
        kr = by_plate["KR55555"]["id"]
        assert operator.post(f"/api/entries/{kr}/expire", {})[0] == 403
        status, body = admin.post(f"/api/entries/{kr}/expire", {})
        assert status == 200, body
        wait_for(lambda: not edge.matcher.match("KR55555"), 10, "the expiry to reach the edge")
        assert edge.matcher.match("TR34ABC99")
        (listed,) = operator.get("/api/watchlists")[1]["lists"]
        assert (listed["name"], listed["entries"]) == ("border", 3)
        # A bad file: every problem named, nothing imported.
        status, body = admin.post("/api/watchlists/border/import",
                                  {"text": "plate,category\nAB,alert\n,alert\n"})  # fmt: skip
        assert status == 400 and "nothing imported" in body["error"]
        assert {p["line"] for p in body["problems"]} == {2, 3}
        assert operator.get("/api/watchlists")[1]["lists"][0]["entries"] == 3
        assert admin.post("/api/entries/999999/expire", {})[0] == 404
        status, body = admin.post("/api/watchlists/border/entries", {"plate": "*1"})
        assert status == 400 and "plate" in body["error"]
    finally:
        edge.stop()
        edge.replica.close()
        ctx.destroy(linger=0)
    actions = [r["action"] for r in _audit_rows(stack)]
    assert actions.count("watchlist import") == 1
    assert "watchlist add" in actions and "watchlist expire" in actions


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
