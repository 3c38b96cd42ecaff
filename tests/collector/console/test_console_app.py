"""The console's web application in-process (Starlette's TestClient): its handlers on real
databases (ConsoleDB, the collector's hit store, the master watchlists) in a tmp data_dir,
no socket and no collector.  What needs real ports and real edges is in test_console_api."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.console import (
    ADMIN,
    OPERATOR,
    InProcess,
    console_hit,
    in_process,
    make_users,
)

from edge.collector.console import app as console_app
from edge.collector.console.app import COOKIE, NOT_BUILT, VENDOR
from edge.collector.console.config import ConsoleConfig


@pytest.fixture(scope="session")
def users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_users(tmp_path_factory.mktemp("console-users") / "console.db")


@pytest.fixture
def app(tmp_path: Path, users: Path) -> Iterator[InProcess]:
    """A console of its own, for a test that looks at what it changed (the audit, a lock)."""
    with in_process(tmp_path, users) as a:
        yield a


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory: pytest.TempPathFactory, users: Path) -> Iterator[InProcess]:
    """One console for the tests that change nothing another test looks at (opening one
    costs an argon2 hash: a fifth of a second; a request, milliseconds)."""
    with in_process(tmp_path_factory.mktemp("shared-console"), users) as a:
        yield a


def _sign_in(c, who) -> object:
    return c.post("/api/login", json={"name": who[0], "password": who[1]})


# ---------------------------------------------------------------- sessions and sign-in


PROTECTED = [
    "/api/me", "/api/live", "/api/events", "/api/hits", "/api/hits.csv", "/api/hits.json",
    "/api/hits/0190a0c0-0000-7000-8000-000000000000", "/api/hits/x/crop.jpg",
    "/api/cameras", "/api/region", "/api/watchlists", "/api/watchlists/stolen/entries",
    "/api/audit", "/static/app.js", "/static/index.html", "/api/map/towns.geojson",
    "/api/map/borders.geojson", "/static/vendor/leaflet/leaflet.js", "/api/me/language",
]  # fmt: skip


def test_nothing_is_served_without_a_session(shared_app):
    anon = shared_app.client()
    for path in PROTECTED:
        r = anon.get(path)
        assert (r.status_code, r.json()) == (401, {"error": "sign in first"}), path
    r = anon.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert anon.post("/api/hits/x/ack", json={"note": "mine"}).status_code == 401
    # A made-up or stolen-looking cookie is no session either.
    assert shared_app.client(cookies={COOKIE: "abc"}).get("/api/live").status_code == 401
    # What signing in needs is public, and says nothing.
    for path in ("/login", "/static/login.js", "/static/console.css"):
        assert anon.get(path).status_code == 200, path


def test_sign_in_sets_a_strict_cookie_and_sign_out_ends_the_session(app):
    c = app.client()
    r = _sign_in(c, OPERATOR)
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain HTTP; behind TLS it is marked Secure
    assert c.get("/api/me").json()["user"] == {"name": "olga", "display_name": "Olga Operator",
                                               "role": "operator", "agency": "local",
                                               "language": ""}  # fmt: skip
    token = c.cookies[COOKIE]
    assert c.post("/api/logout", json={}).status_code == 200
    assert app.client(cookies={COOKIE: token}).get("/api/live").status_code == 401
    actions = [(r["user"], r["action"]) for r in app.audit_rows()]
    assert actions == [("olga", "sign-in"), ("olga", "sign-out")]


@pytest.mark.parametrize(("scheme", "cookie_secure", "secure"), [
    ("https", None, True), ("http", None, False), ("http", True, True), ("https", False, False),
])  # fmt: skip
def test_the_cookie_is_secure_over_https_or_as_configured(
    tmp_path, users, scheme, cookie_secure, secure
):
    with in_process(tmp_path, users, ConsoleConfig(port=0, cookie_secure=cookie_secure)) as a:
        r = _sign_in(a.client(base_url=f"{scheme}://testserver"), ADMIN)
        assert r.status_code == 200
        assert ("secure" in r.headers["set-cookie"].lower()) is secure


def test_wrong_passwords_lock_the_name_out_for_a_while(app):
    c = app.client()
    for _ in range(5):
        r = c.post("/api/login", json={"name": "olga", "password": "not her password"})
        assert r.status_code == 401 and r.json()["error"] == "wrong name or password"
    r = _sign_in(c, OPERATOR)
    assert r.status_code == 429 and "try again" in r.json()["error"]
    assert int(r.headers["retry-after"]) >= 1
    assert c.get("/api/live").status_code == 401
    assert _sign_in(app.client(), ADMIN).status_code == 200  # others at the same desk may
    trail = [r["action"] for r in app.audit_rows()]
    assert trail.count("sign-in failed") == 5
    assert "sign-in refused" in trail


def test_unknown_user_and_wrong_password_answer_alike(app):
    c = app.client()
    for name in ("nobody", "olga"):
        r = c.post("/api/login", json={"name": name, "password": "x" * 12})
        assert (r.status_code, r.json()) == (401, {"error": "wrong name or password"})


def test_changes_must_be_json_from_the_page_itself(shared_app):
    c = shared_app.client(OPERATOR)
    r = c.post("/api/hits/x/ack", content=b"note=mine",
               headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 403 and "JSON" in r.json()["error"]
    r = c.post("/api/hits/x/ack", json={"note": "mine"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = c.post("/api/hits/x/ack", json={"note": "mine"}, headers={"Origin": shared_app.url})
    assert r.status_code == 404  # let through: there is no hit x
    r = c.post("/api/hits/x/ack", json={"note": "mine"},
               headers={"Origin": "https://console.example",
                        "X-Forwarded-Host": "console.example"})  # fmt: skip
    assert r.status_code == 404  # the page's origin as the proxy in front of it says


def test_pages_carry_a_strict_content_security_policy(shared_app):
    c = shared_app.client(OPERATOR)
    r = c.get("/")
    assert r.status_code == 200 and b"ANPR console" in r.content
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert c.get("/api/live").headers["cache-control"] == "no-store"


def test_the_regions_borders_and_towns_are_served_as_built(shared_app):
    """Natural Earth's countries of the region and its neighbours (cut to it), their land
    borders, and towns, as `make console-map` built them."""
    if not (VENDOR / "built.json").is_file():
        pytest.skip(f"{NOT_BUILT} (`make test` builds it)")
    c = shared_app.client(OPERATOR)
    r = c.get("/api/region")
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    region = r.json()
    assert region["type"] == "FeatureCollection" and "Natural Earth" in region["name"]
    isos = {f["properties"]["iso"] for f in region["features"]}
    assert {"EE", "LV", "LT", "PL", "BG", "TR", "BY", "UA", "RO", "GR", "RU", "MD"} <= isos
    for f in region["features"]:  # cut to the region: no Vladivostok
        for poly in f["geometry"]["coordinates"]:
            assert all(9 <= lon <= 47 and 33 <= lat <= 62 for lon, lat in poly[0]), f["properties"]
    assert c.get("/api/map/countries.geojson").json() == region
    (borders,) = c.get("/api/map/borders.geojson").json()["features"]
    assert borders["geometry"]["type"] == "MultiLineString"
    # Lithuania-Poland (the Suwałki gap) is a land border near 23.5 E, 54.0 N.
    assert any(abs(lon - 23.5) < 0.2 and abs(lat - 54.0) < 0.2
               for line in borders["geometry"]["coordinates"] for lon, lat in line)
    towns = c.get("/api/map/towns.geojson").json()["features"]
    names = {t["properties"]["name"] for t in towns}
    assert {"Vilnius", "Riga", "Warsaw", "Sofia", "Istanbul", "Kaliningrad"} <= names
    assert c.get("/api/map/roads.geojson").status_code == 404


def test_without_the_built_map_the_console_says_how_to_build_it(shared_app, monkeypatch,
                                                                tmp_path):
    monkeypatch.setattr(console_app, "VENDOR", tmp_path / "not-built")
    c = shared_app.client(OPERATOR)
    r = c.get("/api/map/borders.geojson")
    assert r.status_code == 503 and "make console-map" in r.json()["error"]
    assert c.get("/api/me").json()["map"]["built"] is False


def test_a_users_language_is_remembered(shared_app):
    c = shared_app.client(OPERATOR)
    me = c.get("/api/me").json()
    assert me["languages"] == ["en", "lt", "lv", "pl", "bg", "tr"]
    assert c.post("/api/me/language", json={"language": "lt"}).json() == {"language": "lt"}
    assert c.get("/api/me").json()["user"]["language"] == "lt"
    assert shared_app.console.db.user(OPERATOR[0]).language == "lt"
    r = c.post("/api/me/language", json={"language": "de"})
    assert r.status_code == 400 and "language must be one of" in r.json()["error"]
    assert c.post("/api/me/language", json={"language": ""}).json() == {"language": ""}
    assert shared_app.client(ADMIN).get("/api/me").json()["user"]["language"] == ""


# ---------------------------------------------------------------- hits


def test_a_hit_is_acknowledged_and_the_trail_kept(app):
    admin, operator = app.client(ADMIN), app.client(OPERATOR)
    r = admin.post("/api/watchlists/stolen/entries", json={
        "plate": "WX 12345", "country": "PL", "category": "stolen_vehicle", "priority": 1,
        "agency": "PL-KGP", "reason": "stolen Skoda, armed driver"})  # fmt: skip
    assert r.status_code == 200, r.text
    hit = console_hit("WX12345", entry_id=str(r.json()["id"]), reason="stolen Skoda, armed driver",
                      kind="fuzzy", distance=1, entry_plate="WX12845")  # fmt: skip
    app.add_hits(hit)
    shown = operator.get(f"/api/hits/{hit.hit_id}").json()
    assert shown["plate_formatted"] == "WX1 2345" and shown["agency"] == "PL-KGP"
    assert (shown["match_kind"], shown["match_distance"]) == ("fuzzy", 1)
    assert shown["acks"] == [] and shown["crop_bytes"] == len(hit.crop_jpeg)

    r = operator.post(f"/api/hits/{hit.hit_id}/ack", json={"note": "unit 7 en route"})
    assert r.status_code == 200, r.text
    ack = r.json()
    assert (ack["user"], ack["display_name"], ack["note"]) == (
        "olga", "Olga Operator", "unit 7 en route")  # fmt: skip
    assert app.console.hub.published == 1  # handed to every open page (test_console_api)
    board = operator.get("/api/live").json()
    assert board["last_rowid"] == 1
    (on_board,) = [h for h in board["hits"] if h["hit_id"] == hit.hit_id]
    assert [a["note"] for a in on_board["acks"]] == ["unit 7 en route"]
    r = operator.get(f"/api/hits/{hit.hit_id}/crop.jpg")
    assert r.content == hit.crop_jpeg and r.headers["content-type"] == "image/jpeg"
    assert operator.get(f"/api/hits/{hit.hit_id}/scene.jpg").content == hit.scene_jpeg
    assert operator.get(f"/api/hits/{hit.hit_id}/other.jpg").status_code == 404
    assert operator.get("/api/hits/nope/crop.jpg").status_code == 404
    assert operator.get("/api/hits/nope").status_code == 404
    # The trail: who acknowledged what and when, and nobody can rewrite it.
    (row,) = [r for r in app.audit_rows() if r["action"] == "acknowledge"]
    assert row["user"] == "olga" and hit.hit_id in row["detail"]
    db = sqlite3.connect(app.server.database)
    try:
        for sql in ("UPDATE acks SET note = 'nothing'", "DELETE FROM acks",
                    "UPDATE audit SET user = 'someone'", "DELETE FROM audit"):  # fmt: skip
            with pytest.raises(sqlite3.IntegrityError, match="kept as written"):
                db.execute(sql)
    finally:
        db.close()
    audit = admin.get("/api/audit").json()["audit"]
    assert audit[0]["action"] == "acknowledge"  # newest first
    assert operator.get("/api/audit").status_code == 403


def test_an_unknown_hit_cannot_be_acknowledged(shared_app):
    r = shared_app.client(OPERATOR).post("/api/hits/no-such-hit/ack", json={"note": ""})
    assert (r.status_code, r.json()) == (404, {"error": "no such hit"})


T0 = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)


def test_search_by_wildcard_time_camera_and_list_and_export(app):
    a = [
        console_hit("WX12345", seen_at=T0, priority=2),
        console_hit("WX12999", seen_at=T0 + dt.timedelta(hours=1), watchlist="border",
                    kind="wildcard", entry_plate="WX12*", camera="cam-south",
                    reason="=HYPERLINK(\"http://x\")"),
        console_hit("KR77777", seen_at=T0 + dt.timedelta(hours=2), priority=5),
    ]  # fmt: skip
    b = [console_hit("WX12345", node="edge-b", camera="cam-x",
                     seen_at=T0 + dt.timedelta(hours=3))]
    app.add_hits(*a)
    app.add_hits(*b)
    c = app.client(OPERATOR)

    def ids(query: str) -> list[str]:
        r = c.get(f"/api/hits?{query}")
        assert r.status_code == 200, r.text
        return [h["hit_id"] for h in r.json()["hits"]]

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

    r = c.get("/api/hits.csv?plate=WX*")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [r["hit_id"] for r in rows] == [b[0].hit_id, a[1].hit_id, a[0].hit_id]
    assert rows[1]["reason"] == "'=HYPERLINK(\"http://x\")"  # not a formula in a spreadsheet
    assert rows[1]["match_kind"] == "wildcard" and rows[1]["plate_formatted"] == "WX1 2999"
    r = c.get("/api/hits.json?camera=edge-b")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    exported = json.loads(r.content)
    assert [h["hit_id"] for h in exported] == [b[0].hit_id]
    assert exported[0]["acks"] == [] and exported[0]["lat"] == pytest.approx(52.2297)
    assert c.get("/api/hits.xml").status_code == 404
    exports = [r for r in app.audit_rows() if r["action"] == "export"]
    assert len(exports) == 2 and "plate" in exports[0]["detail"]


# ---------------------------------------------------------------- watchlists


def test_admin_imports_adds_and_expires_watchlist_entries(app):
    admin, operator = app.client(ADMIN), app.client(OPERATOR)
    text = ("plate,country,category,priority,reason\n"
            "LV AB 1234,LV,stolen_vehicle,2,stolen van\n"
            "KR 55555,PL,wanted_person,1,armed\n")  # fmt: skip
    assert operator.post("/api/watchlists/border/import", json={"text": text}).status_code == 403
    r = admin.post("/api/watchlists/border/import",
                   json={"text": text, "agency": "LV-VP", "filename": "border.csv"})
    assert r.status_code == 200, r.text
    assert (r.json()["added"], r.json()["changed"]) == (2, 0)
    r = admin.post("/api/watchlists/border/entries", json={
        "plate": "TR 34 ABC 99", "country": "TR", "category": "alert", "priority": "3",
        "agency": "TR-EGM", "reason": "customs", "valid_until": "2099-01-01"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["plate"] == "TR34ABC99" and r.json()["list"] == "border"
    entries = operator.get("/api/watchlists/border/entries").json()["entries"]
    by_plate = {e["plate"]: e for e in entries}
    assert by_plate["LVAB1234"]["agency"] == "LV-VP"
    assert by_plate["LVAB1234"]["added_by"] == "ada"
    assert by_plate["TR34ABC99"]["reason"] == "customs"
    assert operator.get("/api/watchlists/border/entries?plate=55*").json()["entries"] == []
    assert [e["plate"] for e in operator.get(
        "/api/watchlists/border/entries?plate=*555*").json()["entries"]] == ["KR55555"]
    kr = by_plate["KR55555"]["id"]
    assert operator.post(f"/api/entries/{kr}/expire", json={}).status_code == 403
    r = admin.post(f"/api/entries/{kr}/expire", json={})
    assert r.status_code == 200 and r.json()["id"] == kr and r.json()["valid_until"], r.text
    (listed,) = operator.get("/api/watchlists").json()["lists"]
    assert (listed["name"], listed["entries"]) == ("border", 3)
    # A bad file: every problem named, nothing imported.
    r = admin.post("/api/watchlists/border/import",
                   json={"text": "plate,category\nAB,alert\n,alert\n"})
    assert r.status_code == 400 and "nothing imported" in r.json()["error"]
    assert {p["line"] for p in r.json()["problems"]} == {2, 3}
    assert operator.get("/api/watchlists").json()["lists"][0]["entries"] == 3
    assert admin.post("/api/entries/999999/expire", json={}).status_code == 404
    assert admin.post(f"/api/entries/{2**63}/expire", json={}).status_code == 404
    r = admin.post("/api/watchlists/border/entries", json={"plate": "*1"})
    assert r.status_code == 400 and "plate" in r.json()["error"]
    actions = [r["action"] for r in app.audit_rows()]
    assert actions.count("watchlist import") == 1
    assert actions.count("watchlist add") == 1 and actions.count("watchlist expire") == 1


# ---------------------------------------------------------------- bad parameters


BAD_GETS = [
    "/api/hits?plate=*%3F*",  # no letter or digit to search by
    "/api/hits?since=yesterday",
    "/api/hits?until=2026-13-01",
    "/api/hits?limit=abc",
    "/api/hits?limit=0",
    "/api/hits?limit=-1",
    "/api/hits?limit=99999999999999999999",
    "/api/hits.csv?since=yesterday",
    "/api/watchlists/border/entries?after=-1",
    "/api/watchlists/border/entries?after=x",
    "/api/watchlists/border/entries?plate=a-b",
    "/api/audit?before=x",
]


@pytest.mark.parametrize("path", BAD_GETS)
def test_a_bad_parameter_is_a_400_that_says_what_is_wrong(shared_app, path):
    r = shared_app.client(ADMIN).get(path)
    assert r.status_code == 400, r.text
    assert r.json()["error"]


BAD_POSTS = [
    ("/api/hits/x/ack", b"not json", "not JSON"),
    ("/api/hits/x/ack", b"[1]", "JSON object"),
    ("/api/hits/x/ack", b'{"note": ["a"]}', "note must be text"),
    ("/api/hits/x/ack", json.dumps({"note": "n" * 1001}).encode(), "longer than"),
    ("/api/login", b'{"name": 5.5, "password": {}}', "password must be text"),
    ("/api/watchlists/border/entries",
     b'{"plate": "AB123", "category": "alert", "agency": "PL", "priority": "high"}', "priority"),
]


@pytest.mark.parametrize(("path", "body", "says"), BAD_POSTS)
def test_a_bad_body_is_a_400_that_says_what_is_wrong(shared_app, path, body, says):
    r = shared_app.client(ADMIN).post(path, content=body,
                                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert says in r.json()["error"]
