"""The console shows each user their agency's: three agencies on one collector, hits of each
and a hit at lt-vsat's camera on pl-sg's list `pl-sg.stolen-pl`.  No URL of the console
shows, finds, exports, pictures or acknowledges a hit of another agency; every route of
`build_app` is named here, so that a new one is looked at before it is served."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers.console import Client, EventStream, console_hit
from helpers.link import wait_for

from edge.collector.agencies import AgencyConfig
from edge.collector.config import CollectorConfig
from edge.collector.console.accounts import ConsoleDB
from edge.collector.console.app import build_app
from edge.collector.console.config import ConsoleConfig
from edge.collector.console.server import ConsoleServer, watchlists_path
from edge.collector.store import HitStore, Seen
from edge.collector.watchlist.master import WatchlistStore
from edge.core.link_protocol import HitMessage
from edge.core.watchlist.entry import Entry

AGENCIES = [AgencyConfig(name="lt-vsat", nodes=["lt-*"]),
            AgencyConfig(name="pl-sg", nodes=["pl-*"]),
            AgencyConfig(name="lv-vp", nodes=["lv-*"])]  # fmt: skip
PASSWORD = "agency password 1"
USERS = {  # name: (role, agency)
    "lt-op": ("operator", "lt-vsat"), "pl-op": ("operator", "pl-sg"),
    "lv-op": ("operator", "lv-vp"), "lt-admin": ("admin", "lt-vsat"),
    "pl-admin": ("admin", "pl-sg"),
}  # fmt: skip


def _entry(list_name: str, plate: str, agency: str = "PL-SG") -> Entry:
    return Entry(0, plate, list_name, agency, "stolen_vehicle", 1, "stolen", "PL", None, None,
                 "test")  # fmt: skip


def _hit(plate: str, node: str, camera: str, watchlist: str, seconds: int = 0) -> HitMessage:
    seen = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5) + dt.timedelta(seconds=seconds)
    return console_hit(plate, node=node, camera=camera, watchlist=watchlist, seen_at=seen)


@dataclass
class World:
    config: CollectorConfig
    server: ConsoleServer
    store: HitStore
    hits: dict[str, HitMessage]  # lt, pl, x (lt-vsat's camera, pl-sg's list)
    entries: dict[str, int]  # list -> an entry id

    def client(self, name: str) -> Client:
        c = Client(self.server.url)
        c.sign_in(name, PASSWORD)
        return c

    def commit(self, *hits: HitMessage) -> None:
        new, _ = self.store.commit(hits)
        assert len(new) == len(hits)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("agencies")
    config = CollectorConfig(
        listen="tcp://127.0.0.1:0", data_dir=root / "data", credentials_dir=None,
        allowed_keys_dir=root / "allowed", console=ConsoleConfig(port=0, poll_s=0.05),
        agencies=AGENCIES,
    )  # fmt: skip
    store = HitStore(config.db_path, agency_of_node=config.agency_of_node)
    lists = WatchlistStore(watchlists_path(config), default_agency=config.default_agency)
    entries = {}
    for name, owner, plate in (("stolen", "lt-vsat", "LT111"), ("wanted", "pl-sg", "PL222"),
                               ("pl-sg.stolen-pl", "pl-sg", "PLX333")):  # fmt: skip
        entries[name] = lists.add(_entry(name, plate), create=True, agency=owner).id
    lists.close()
    hits = {
        "lt": _hit("LT111", "lt-edge1", "cam-a", "stolen", 1),
        "pl": _hit("PL222", "pl-edge1", "cam-b", "wanted", 2),
        "x": _hit("PLX333", "lt-edge1", "cam-a", "pl-sg.stolen-pl", 3),
    }
    store.commit(list(hits.values()))
    now = dt.datetime.now(dt.UTC)
    store.record_seen([Seen("lt-edge1", now, cameras={"cam-a"}),
                       Seen("pl-edge1", now, cameras={"cam-b"})])  # fmt: skip
    server = ConsoleServer(config)
    db = ConsoleDB(server.database, default_agency=config.default_agency)
    for name, (role, agency) in USERS.items():
        db.add_user(name, PASSWORD, role, agency=agency)
    db.close()
    server.start()
    try:
        yield World(config, server, store, hits, entries)
    finally:
        server.stop()
        store.close()


# What each user's agency may see of the three hits.
SEES = {"lt-op": {"lt", "x"}, "pl-op": {"pl", "x"}, "lv-op": set(),
        "lt-admin": {"lt", "x"}, "pl-admin": {"pl", "x"}}  # fmt: skip


def _ids(world: World, hits: list[dict[str, Any]]) -> set[str]:
    names = {h.hit_id: k for k, h in world.hits.items()}
    return {names[h["hit_id"]] for h in hits if h["hit_id"] in names}


def test_the_stored_hits_name_the_agencies_of_their_camera_and_list(world):
    rows = {r[0]: (r[1], r[2]) for r in world.store.db.execute(
        "SELECT hit_id, agency, list_agency FROM hits")}  # fmt: skip
    h = world.hits
    assert rows[h["lt"].hit_id] == ("lt-vsat", "lt-vsat")
    assert rows[h["pl"].hit_id] == ("pl-sg", "pl-sg")
    assert rows[h["x"].hit_id] == ("lt-vsat", "pl-sg")  # our camera, the partner's list


@pytest.mark.parametrize("user", sorted(SEES))
def test_each_user_sees_searches_and_exports_only_what_is_their_agency_s(world, user):
    c = world.client(user)
    want = SEES[user]
    status, live = c.get("/api/live")
    assert status == 200 and _ids(world, live["hits"]) == want
    status, found = c.get("/api/hits")
    assert status == 200 and _ids(world, found["hits"]) == want
    for key, hit in world.hits.items():  # by plate (its own index), node, camera, list, time
        shown = key in want
        for query in (f"plate={hit.plate.text}", f"plate={hit.plate.text[:3]}*",
                      f"camera={hit.node}/{hit.camera}", f"camera={hit.node}",
                      f"watchlist={hit.match.watchlist}",
                      "since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z"):  # fmt: skip
            status, found = c.get(f"/api/hits?{query}")
            assert status == 200, (query, found)
            assert (key in _ids(world, found["hits"])) == shown, (user, key, query)
        status, one = c.get(f"/api/hits/{hit.hit_id}")
        assert status == (200 if shown else 404), (user, key)
        if not shown:
            assert one == {"error": "no such hit"}  # as for one that is not there
        for kind in ("crop", "scene"):
            status, body = c.get(f"/api/hits/{hit.hit_id}/{kind}.jpg")
            assert status == (200 if shown else 404), (user, key, kind)
            if not shown:
                assert body == {"error": "no such picture"}
    status, headers, body = c.request("GET", "/api/hits.json")
    assert status == 200 and _ids(world, json.loads(body)) == want
    status, headers, body = c.request("GET", "/api/hits.csv")
    assert status == 200
    text = body.decode()
    for key, hit in world.hits.items():
        assert (hit.hit_id in text) == (key in want), (user, key)


def test_a_shown_hit_says_whose_camera_and_list_it_is(world):
    status, one = world.client("pl-op").get(f"/api/hits/{world.hits['x'].hit_id}")
    assert status == 200
    assert (one["camera_agency"], one["list_agency"]) == ("lt-vsat", "pl-sg")


def test_nobody_acknowledges_a_hit_they_cannot_see(world):
    lv, pl = world.client("lv-op"), world.client("pl-op")
    lt_hit = world.hits["lt"].hit_id
    for c in (lv, pl):
        status, body = c.post(f"/api/hits/{lt_hit}/ack", {"note": "mine"})
        assert (status, body) == (404, {"error": "no such hit"})
    acks = sqlite3.connect(f"file:{world.server.database}?mode=ro", uri=True)
    try:
        assert acks.execute("SELECT count(*) FROM acks WHERE hit_id = ?",
                            (lt_hit,)).fetchone()[0] == 0  # fmt: skip
    finally:
        acks.close()
    # the cross-agency hit: both agencies deal with it, and both see who took it
    status, ack = pl.post(f"/api/hits/{world.hits['x'].hit_id}/ack", {"note": "on it"})
    assert status == 200, ack
    status, one = world.client("lt-op").get(f"/api/hits/{world.hits['x'].hit_id}")
    assert [a["user"] for a in one["acks"]] == ["pl-op"]


def test_cameras_and_lists_are_those_of_the_user_s_agency(world):
    status, cams = world.client("lt-op").get("/api/cameras")
    assert status == 200 and [c["id"] for c in cams["cameras"]] == ["lt-edge1/cam-a"]
    assert cams["cameras"][0]["agency"] == "lt-vsat"
    status, cams = world.client("lv-op").get("/api/cameras")
    assert status == 200 and cams["cameras"] == []
    status, lists = world.client("pl-op").get("/api/watchlists")
    assert {x["name"]: x["agency"] for x in lists["lists"]} == {
        "pl-sg.stolen-pl": "pl-sg", "wanted": "pl-sg"}
    lt = world.client("lt-op")
    status, lists = lt.get("/api/watchlists")
    assert [x["name"] for x in lists["lists"]] == ["stolen"]
    status, body = lt.get("/api/watchlists/wanted/entries")
    assert (status, body) == (404, {"error": "no such list"})
    status, body = lt.get("/api/watchlists/stolen/entries")
    assert status == 200 and [e["plate"] for e in body["entries"]] == ["LT111"]


def test_what_an_agreement_grants_is_seen_and_nothing_more(world):
    console = world.server.console
    console.sees_camera = lambda viewer, owner, node, camera: (
        viewer == "lv-vp" and owner == "pl-sg" and node == "pl-edge1")
    try:
        lv = world.client("lv-op")
        status, found = lv.get("/api/hits")
        assert _ids(world, found["hits"]) == {"pl"}
        status, found = lv.get(f"/api/hits?plate={world.hits['pl'].plate.text}")
        assert _ids(world, found["hits"]) == {"pl"}
        assert lv.get(f"/api/hits/{world.hits['pl'].hit_id}/crop.jpg")[0] == 200
        assert lv.get(f"/api/hits/{world.hits['lt'].hit_id}")[0] == 404
        status, cams = lv.get("/api/cameras")
        assert [c["id"] for c in cams["cameras"]] == ["pl-edge1/cam-b"]
    finally:
        console.sees_camera = lambda *a: False
    assert world.client("lv-op").get(f"/api/hits/{world.hits['pl'].hit_id}")[0] == 404


def test_admins_change_only_their_agency_s_lists(world):
    lt_admin, pl_admin = world.client("lt-admin"), world.client("pl-admin")
    add = {"plate": "NEW123", "country": "PL", "category": "alert", "priority": "2",
           "agency": "PL-SG", "reason": "x"}  # fmt: skip
    for name in ("wanted", "pl-sg.stolen-pl"):  # pl-sg's lists
        status, body = lt_admin.post(f"/api/watchlists/{name}/entries", add)
        assert status == 403 and "pl-sg's" in body["error"], body
        status, body = lt_admin.post(f"/api/watchlists/{name}/import",
                                     {"text": "plate,category,priority\nAB123,alert,1\n",
                                      "agency": "LT", "filename": "x.csv"})  # fmt: skip
        assert status == 403 and "pl-sg's" in body["error"], body
        status, body = lt_admin.post(f"/api/entries/{world.entries[name]}/expire", {})
        assert status == 403 and "pl-sg's" in body["error"], body
    # an own list may not take a name that says it is another agency's
    status, body = lt_admin.post("/api/watchlists/pl-sg.mine/entries", add)
    assert status == 403 and "pl-sg's" in body["error"], body
    # its own: added, and the new list is its agency's
    status, body = lt_admin.post("/api/watchlists/lt-border/entries", add)
    assert status == 200, body
    status, lists = world.client("lt-op").get("/api/watchlists")
    assert {x["name"]: x["agency"] for x in lists["lists"]}["lt-border"] == "lt-vsat"
    assert "lt-border" not in {x["name"] for x in world.client("pl-op").get(
        "/api/watchlists")[1]["lists"]}  # fmt: skip
    status, body = pl_admin.post(f"/api/entries/{world.entries['wanted']}/expire", {})
    assert status == 200, body
    # operators change nothing
    status, body = world.client("pl-op").post("/api/watchlists/wanted/entries", add)
    assert status == 403


def test_admins_see_the_audit_of_their_agency(world):
    lt_admin, pl_admin = world.client("lt-admin"), world.client("pl-admin")
    world.client("lt-op").request("GET", "/api/hits.csv")  # an export: audited
    status, lt_rows = lt_admin.get("/api/audit")
    assert status == 200
    status, pl_rows = pl_admin.get("/api/audit")
    assert {r["agency"] for r in pl_rows["audit"]} == {"pl-sg"}
    assert {r["agency"] for r in lt_rows["audit"]} <= {"lt-vsat", ""}  # "": of no agency
    lt_users = {r["user"] for r in lt_rows["audit"]}
    assert "lt-op" in lt_users and not lt_users & {"pl-op", "pl-admin", "lv-op"}
    assert any(r["action"] == "export" and r["user"] == "lt-op" for r in lt_rows["audit"])


def test_the_live_stream_carries_only_what_the_user_sees(world):
    clients = {u: world.client(u) for u in ("lt-op", "pl-op", "lv-op")}
    streams = {u: EventStream(world.server.url, c.token) for u, c in clients.items()}
    try:
        hub = world.server.console.hub
        wait_for(lambda: hub.subscribers >= 3, 10, "the streams to subscribe")
        new = {
            "lt": _hit("LT444", "lt-edge1", "cam-a", "stolen", 10),
            "pl": _hit("PL555", "pl-edge1", "cam-b", "wanted", 11),
            "x": _hit("PLX666", "lt-edge1", "cam-a", "pl-sg.stolen-pl", 12),
            "end-lt": _hit("LT777", "lt-edge1", "cam-a", "stolen", 13),
            "end-pl": _hit("PL888", "pl-edge1", "cam-b", "wanted", 14),
            "end-lv": _hit("LV999", "lv-edge1", "cam-c", "lv-list", 15),
        }
        world.commit(*new.values())
        names = {h.hit_id: k for k, h in new.items()}

        def hits_until(user: str, last: str) -> list[str]:
            got: list[str] = []
            while not got or got[-1] != last:
                kind, data = streams[user].next_event()
                if kind == "hit":
                    got.append(names.get(data["hit_id"], data["hit_id"]))
            return got

        # in the order stored; the hidden ones, stored before the last, never came
        assert hits_until("lt-op", "end-lt") == ["lt", "x", "end-lt"]
        assert hits_until("pl-op", "end-pl") == ["pl", "x", "end-pl"]
        assert hits_until("lv-op", "end-lv") == ["end-lv"]
        # an acknowledgement goes to those who see its hit
        lt_hit, x_hit = new["lt"].hit_id, new["x"].hit_id
        assert clients["lt-op"].post(f"/api/hits/{lt_hit}/ack", {"note": "a"})[0] == 200
        assert clients["lt-op"].post(f"/api/hits/{x_hit}/ack", {"note": "b"})[0] == 200
        kind, data = streams["pl-op"].next_event()
        assert (kind, data["hit_id"]) == ("ack", x_hit)
    finally:
        for s in streams.values():
            s.close()


# ---------------------------------------------------------------- every route


# Each route of the console, as (path, method), and what guards it here.
ROUTES = {
    ("/", "GET"): "page", ("/login", "GET"): "page", ("/api/login", "POST"): "public",
    ("/api/logout", "POST"): "own", ("/api/me", "GET"): "own", ("/api/region", "GET"): "page",
    ("/api/me/language", "POST"): "own", ("/api/map/{layer:str}.geojson", "GET"): "page",
    ("/static", "GET"): "page",
    ("/api/live", "GET"): "hits", ("/api/events", "GET"): "stream", ("/api/hits", "GET"): "hits",
    ("/api/hits.{fmt:str}", "GET"): "hits", ("/api/hits/{hit_id:str}", "GET"): "hit",
    ("/api/hits/{hit_id:str}/{kind:str}.jpg", "GET"): "hit",
    ("/api/hits/{hit_id:str}/ack", "POST"): "hit", ("/api/cameras", "GET"): "cameras",
    ("/api/watchlists", "GET"): "lists", ("/api/watchlists/{name:str}/entries", "GET"): "list",
    ("/api/watchlists/{name:str}/entries", "POST"): "admin list",
    ("/api/watchlists/{name:str}/import", "POST"): "admin list",
    ("/api/entries/{entry_id:int}/expire", "POST"): "admin list",
    ("/api/audit", "GET"): "audit",
    # The search: investigators only (everyone here is not one: 403); a search is its
    # asker's (tests/collector/console/test_console_search.py: another's is 404).
    ("/api/search", "POST"): "search", ("/api/search/{search_id:str}", "GET"): "search",
    ("/api/search/{search_id:str}.{fmt:str}", "GET"): "search",
    ("/api/search/{search_id:str}/events", "GET"): "search",
    ("/api/search/{search_id:str}/retry", "POST"): "search",
    ("/api/search/{search_id:str}/reads/{n:int}/crop.jpg", "GET"): "search",
}  # fmt: skip


def _routes(world: World) -> set[tuple[str, str]]:
    app: Any = build_app(world.server.console)
    while not hasattr(app, "routes"):
        app = app.app
    out = set()
    for r in app.routes:
        for method in getattr(r, "methods", None) or {"GET"}:
            if method != "HEAD":
                out.add((r.path, method))
    return out


def test_every_route_of_the_console_is_named_here(world):
    """A new route fails this until it is added to ROUTES, and so to the test below."""
    assert _routes(world) == set(ROUTES)


def test_no_route_shows_another_agency_s_hit(world):
    """Every route, its parameters naming lt-vsat's own hit and list, called by pl-sg's
    operator and admin: nothing of that hit in any answer."""
    hidden = world.hits["lt"]
    secrets = (hidden.hit_id, hidden.plate.text, "LT111")
    values = {"hit_id": hidden.hit_id, "kind": "crop", "name": "stolen",
              "entry_id": str(world.entries["stolen"]), "search_id": "0" * 32,
              "n": "0", "layer": "towns"}  # fmt: skip
    for user in ("pl-op", "pl-admin", "lv-op"):
        c = world.client(user)
        for (path, method), what in sorted(ROUTES.items()):
            if what in ("stream", "public") or path == "/static" or path == "/api/logout":
                continue  # the stream: above; sign-in and out show no hit
            paths = [path]
            if "{fmt:str}" in path:
                paths = [path.replace("{fmt:str}", f) for f in ("csv", "json")]
            for p in paths:
                url = re.sub(r"\{(\w+):\w+\}", lambda m: values[m.group(1)], p)
                body = {"note": "x", "plate": "AB123", "category": "alert", "priority": "1",
                        "agency": "PL", "text": "plate,category,priority\nAB123,alert,1\n",
                        "filename": "a.csv"} if method == "POST" else None  # fmt: skip
                status, _, raw = c.request(method, url, body)
                text = raw.decode("utf-8", "replace")
                assert not any(s in text for s in secrets), (user, method, url, status)
                if what in ("hit", "list"):
                    assert status == 404, (user, method, url, status)
                if what in ("admin list", "search"):
                    assert status == 403, (user, method, url, status)
