"""Cameras whose place and health a partner sees, over a real nats-server: pl-sg shows lt-vsat
its node pl-e1; lt-vsat's collector holds them, its console shows them to lt-vsat only."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.exchange import (
    Agency,
    StandInGrant,
    World,
    world_of,
)
from helpers.link import wait_for
from pydantic import ValidationError
from starlette.testclient import TestClient

from edge.collector.agencies import AgencyConfig
from edge.collector.config import CollectorConfig
from edge.collector.console.accounts import ConsoleDB
from edge.collector.console.app import COOKIE, build_app
from edge.collector.console.config import ConsoleConfig
from edge.collector.console.server import ConsoleServer
from edge.collector.exchange.cameras import (
    CameraReceiver,
    CameraSender,
    CameraShareSettings,
    read_partner_cameras,
    setup_schema,
)
from edge.collector.exchange.config import ExchangeConfig
from edge.collector.exchange.link import Link, LinkSettings
from edge.collector.exchange.messages import (
    CameraReport,
    CameraReports,
    decode_camera_reports,
    encode_camera_reports,
)
from edge.collector.exchange.outbox import Outbox
from edge.collector.exchange.server_config import seed_file
from edge.collector.exchange.service import Exchange
from edge.collector.store import Seen
from edge.core.status import CameraState, CameraStatus, Health, NodeStatus, Place, Problem

LT, PL, LV = "lt-vsat", "pl-sg", "lv-vp"
DEADLINE = 5.0  # generous for a loaded 2-core machine; the flow itself takes well under 1 s
SHOW = StandInGrant(PL, LT, cameras=("pl-e1",))  # pl-sg shows lt-vsat its node pl-e1
FAST = CameraShareSettings(Path("unused"), poll_s=0.05, refresh_s=30.0, min_gap_s=0.2)
GATE = Place(lat=53.1325, lon=23.1688, road="DK8 km 12", direction="to LT")



@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with world_of(tmp_path, (LT, PL, LV), [SHOW], cameras=FAST) as w:
        yield w


def camera(state: CameraState = CameraState.LIVE, place: Place | None = None,
           fps: float = 10.0) -> CameraStatus:
    good = state in (CameraState.LIVE, CameraState.ENDED, CameraState.STOPPED)
    return CameraStatus(state=state, ok=good, fps=fps, place=place,
                        since=dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC))


def beat(agency: Agency, node: str, cameras: dict[str, CameraStatus]) -> None:
    """A heartbeat from `node`, stored as the collector's writer stores one."""
    problems = [Problem.of_camera(c, s.state) for c, s in cameras.items() if not s.ok]
    status = NodeStatus(node=node, heartbeat_s=5.0, cameras=cameras,
                        health=Health(ok=not problems, problems=problems))
    with agency.lock:
        agency.hits.record_seen([Seen(node, dt.datetime.now(dt.UTC),
                                      status=status.model_dump(mode="json"),
                                      cameras=set(cameras))])


def held(agency: Agency, now: float | None = None) -> dict[str, dict[str, Any]]:
    """The partners' cameras `agency`'s exchange holds, by id."""
    path = agency.root / "exchange.db"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {c["id"]: c for c in read_partner_cameras(db, now)}
    finally:
        db.close()


def beat_pl(pl: Agency, cam_a: CameraState = CameraState.LIVE) -> None:
    beat(pl, "pl-e1", {"cam-a": camera(cam_a, GATE), "cam-b": camera(fps=4.5)})
    beat(pl, "pl-e2", {"cam-c": camera(place=GATE)})  # granted to no one


def sent_camera_nodes(agency: Agency) -> dict[str, set[str]]:
    """By partner, the (node/camera)s `agency` ever queued a camera message about (its
    record of what it told each partner: sent messages leave the outbox, bodies and all)."""
    db = sqlite3.connect(agency.root / "exchange.db")
    try:
        out: dict[str, set[str]] = {}
        for partner, node, camera in db.execute("SELECT partner, node, camera FROM camera_shares"):
            out.setdefault(partner, set()).add(f"{node}/{camera}")
        return out
    finally:
        db.close()


@pytest.fixture
def console(world: World, tmp_path: Path) -> Iterator[dict[str, TestClient]]:
    """lt-vsat's console (its collector serves lt-vsat and lv-vp), a client per agency."""
    lt = world.agencies[LT]
    config = CollectorConfig(
        listen="tcp://127.0.0.1:0", data_dir=lt.root, credentials_dir=None,
        allowed_keys_dir=tmp_path / "allowed", console=ConsoleConfig(port=0),
        agencies=[AgencyConfig(name=LT, nodes=["lt-*"]), AgencyConfig(name=LV, nodes=["lv-*"])],
    )  # fmt: skip
    server = ConsoleServer(config, agreements=lambda: world.grants)  # type: ignore[arg-type]
    db = ConsoleDB(server.database, default_agency=LT)
    for name, agency in (("lt-op", LT), ("lv-op", LV)):
        db.add_user(name, "a long password 1", "operator", agency=agency)
    db.close()
    opened = server.open()
    app = build_app(opened)
    clients = {}
    for name in ("lt-op", "lv-op"):
        c = TestClient(app, follow_redirects=False)
        user = opened.db.user(name)
        assert user is not None
        c.cookies.set(COOKIE, opened.db.new_session(user, "testclient"))
        clients[name] = c
    try:
        yield clients
    finally:
        server.stop()


def api_cameras(client: TestClient) -> dict[str, dict[str, Any]]:
    r = client.get("/api/cameras")
    assert r.status_code == 200, r.text
    return {c["id"]: c for c in r.json()["cameras"]}


def test_granted_cameras_reach_the_partner_and_show_to_the_granted_agency_only(
        world: World, console: dict[str, TestClient]) -> None:
    pl, lt, lv = world.agencies[PL], world.agencies[LT], world.agencies[LV]
    beat_pl(pl)
    wait_for(lambda: set(held(lt)) == {"pl-e1/cam-a", "pl-e1/cam-b"}, DEADLINE,
             "pl-e1's cameras at lt-vsat")
    a = held(lt)["pl-e1/cam-a"]
    assert (a["lat"], a["lon"], a["road"], a["direction"]) == (53.1325, 23.1688, "DK8 km 12",
                                                               "to LT")
    assert (a["agency"], a["partner"], a["stale"]) == (PL, True, False)
    assert (a["health"], a["state"], a["fps"], a["problems"]) == ("live", "live", 10.0, [])
    assert a["last_seen"] is not None and a["receiver"] == LT
    assert held(lt)["pl-e1/cam-b"]["fps"] == 4.5
    # pl-e2 is granted to no one: it never left pl-sg's collector; lv-vp got nothing
    assert sent_camera_nodes(pl) == {LT: {"pl-e1/cam-a", "pl-e1/cam-b"}}
    assert held(lv) == {} and held(pl) == {}
    # lt-vsat's console: to lt-vsat's operator, as pl-sg's; to lv-vp's (same collector), none
    shown = api_cameras(console["lt-op"])
    assert set(shown) == {"pl-e1/cam-a", "pl-e1/cam-b"}
    assert shown["pl-e1/cam-a"]["agency"] == PL and shown["pl-e1/cam-a"]["partner"] is True
    assert "receiver" not in shown["pl-e1/cam-a"]
    assert api_cameras(console["lv-op"]) == {}


def test_a_state_change_arrives_within_the_deadline(world: World) -> None:
    pl, lt = world.agencies[PL], world.agencies[LT]
    beat_pl(pl)
    wait_for(lambda: "pl-e1/cam-a" in held(lt), DEADLINE, "cam-a at lt-vsat")
    t0 = time.monotonic()
    beat_pl(pl, CameraState.DEAD)
    wait_for(lambda: held(lt)["pl-e1/cam-a"]["state"] == "dead", DEADLINE, "cam-a dead")
    took = time.monotonic() - t0
    a = held(lt)["pl-e1/cam-a"]
    assert a["health"] == "unhealthy" and a["problems"] == ["camera cam-a: dead"]
    assert held(lt)["pl-e1/cam-b"]["health"] == "live"  # the node's other camera is fine
    assert took < 2.0  # poll 0.05 s, gap 0.2 s: well under a second on an idle machine


def test_a_forgotten_camera_is_withdrawn_and_a_revoked_grant_forgets_them(
        world: World, console: dict[str, TestClient]) -> None:
    pl, lt = world.agencies[PL], world.agencies[LT]
    beat_pl(pl)
    wait_for(lambda: set(held(lt)) == {"pl-e1/cam-a", "pl-e1/cam-b"}, DEADLINE, "the cameras")
    world.regrant(StandInGrant(PL, LT, cameras=("pl-e1/cam-a",)))  # narrowed to one camera
    wait_for(lambda: set(held(lt)) == {"pl-e1/cam-a"}, DEADLINE, "cam-b forgotten")
    # pl-sg's collector forgets its node: the owner's withdrawal reaches lt-vsat (the grant
    # is still in force there, so only the message can have done it)
    with pl.lock:
        pl.hits.forget_nodes(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    wait_for(lambda: held(lt) == {}, DEADLINE, "cam-a withdrawn")
    db = sqlite3.connect(lt.root / "exchange.db")
    try:
        # forgotten, remembered as withdrawn (its seq); cam-b went either way, by our own
        # check of the narrowed grant (deleted) or by pl-sg's withdrawal (active 0)
        assert db.execute("SELECT node, camera, active FROM partner_cameras WHERE camera = "
                          "'cam-a'").fetchall() == [("pl-e1", "cam-a", 0)]
    finally:
        db.close()
    beat_pl(pl)  # heard again: shown again
    wait_for(lambda: set(held(lt)) == {"pl-e1/cam-a"}, DEADLINE, "cam-a again")
    assert set(api_cameras(console["lt-op"])) == {"pl-e1/cam-a"}
    world.regrant()  # the agreement revoked: no route, so lt-vsat forgets them on its own
    wait_for(lambda: held(lt) == {}, DEADLINE, "lt-vsat to forget pl-sg's cameras")
    assert api_cameras(console["lt-op"]) == {}


def test_a_camera_unheard_for_three_intervals_is_shown_stale(
        world: World, console: dict[str, TestClient]) -> None:
    pl, lt = world.agencies[PL], world.agencies[LT]
    beat_pl(pl)
    wait_for(lambda: "pl-e1/cam-a" in held(lt), DEADLINE, "cam-a at lt-vsat")
    later = time.time() + 3 * FAST.refresh_s + 5  # the owner's refreshes stopped coming
    a = held(lt, now=later)["pl-e1/cam-a"]
    assert a["stale"] is True and a["health"] == "late"
    assert a["problems"][0].startswith("not heard from pl-sg for ")
    assert held(lt, now=time.time() + 2 * FAST.refresh_s)["pl-e1/cam-a"]["stale"] is False


def test_malformed_camera_messages_are_dead_lettered_and_the_flow_goes_on(world: World) -> None:
    lt = world.agencies[LT]
    good = CameraReports(owner=PL, epoch="e1", seq=1, refresh_s=30.0, cameras=(
        CameraReport(node="pl-e1", camera="cam-z", health="live", place=GATE),))
    head = b'{"v": 1, "kind": "cameras", "epoch": "e", "seq": 1, "refresh_s": 30, '
    bad = {
        "bad:json": b'{"kind": "cameras", ',
        "bad:lat": head + b'"owner": "pl-sg", "cameras": [{"node": "pl-e1", "camera": "x", '
                          b'"health": "live", "place": {"lat": 200.0, "lon": 1.0}}]}',
        "bad:key": head + b'"owner": "pl-sg", "cameras": [], "evil": 1}',
        "bad:owner": head + b'"owner": "lv-vp", "cameras": []}',  # pl-sg speaks for lv-vp
        "bad:health": head + b'"owner": "pl-sg", "cameras": [{"node": "pl-e1", '
                             b'"camera": "x", "health": "fine"}]}',
    }

    async def send() -> None:
        link = Link(LinkSettings(agency=PL, url=world.server.url,
                                 seed_file=seed_file(world.creds, PL)))
        await link.connect()
        try:
            for msg_id, body in bad.items():
                await link.publish("in.lt-vsat.from.pl-sg.camera", body, msg_id)
            await link.publish("in.lt-vsat.from.pl-sg.camera", encode_camera_reports(good),
                               good.msg_id)
        finally:
            await link.close()

    asyncio.run(send())
    wait_for(lambda: "pl-e1/cam-z" in held(lt), DEADLINE, "the good message")
    dead = lt.exchange.dead_letters()
    assert [i for _, i, _ in dead] == list(bad)
    reasons = dict((i, r) for _, i, r in dead)
    assert "not JSON" in reasons["bad:json"] and "lat" in reasons["bad:lat"]
    assert "evil" in reasons["bad:key"] and "lv-vp" in reasons["bad:owner"]
    assert "health" in reasons["bad:health"]


# ---------------------------------------------------------------- without a server


@dataclasses.dataclass
class Fixed:
    """Grants that do not change: pl-sg shows lt-vsat these cameras (NODE/CAMERA globs)."""

    shown: tuple[str, ...] = ("pl-e1",)

    def partners(self, agency: str, at: dt.datetime | None = None) -> set[str]:
        return {LT} if agency == PL else {PL}

    def sees_camera(self, viewer: str, owner: str, node: str, camera: str = "",
                    at: dt.datetime | None = None) -> bool:
        return viewer == owner or (viewer, owner) == (LT, PL) and any(
            (f"{node}/{camera}" if "/" in g else node) == g for g in self.shown)


def report(state: CameraState = CameraState.LIVE, fps: float = 10.0,
           camera: str = "cam-a") -> CameraReport:
    return CameraReport(node="pl-e1", camera=camera, health="live", state=state, fps=fps)


def test_the_sender_is_bounded_per_camera_and_refreshes_each(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "exchange.db")
    setup_schema(outbox)
    settings = CameraShareSettings(tmp_path / "hits.db", refresh_s=30.0, min_gap_s=1.0)
    sender = CameraSender(PL, outbox, settings)
    grants = Fixed()
    t = 1_000_000.0
    assert sender.sync(grants, {("pl-e1", "cam-a"): report()}, t) == 1  # the grant starts
    assert sender.sync(grants, {("pl-e1", "cam-a"): report(fps=9.0)}, t + 0.5) == 0
    # a camera flapping live/dead every 0.1 s for 10 s: at most one message a second
    sent = 0
    for i in range(100):
        state = CameraState.DEAD if i % 2 == 0 else CameraState.LIVE
        sent += sender.sync(grants, {("pl-e1", "cam-a"): report(state)}, t + 1 + i * 0.1)
    assert 5 <= sent <= 11
    # unchanged but for its figures: again only after refresh_s
    quiet = t + 100
    assert sender.sync(grants, {("pl-e1", "cam-a"): report()}, quiet) == 1  # refresh due
    assert sender.sync(grants, {("pl-e1", "cam-a"): report(fps=3.0)}, quiet + 29) == 0
    assert sender.sync(grants, {("pl-e1", "cam-a"): report(fps=3.0)}, quiet + 30) == 1
    # the grant narrowed to another camera: cam-a withdrawn, once
    grants.shown = ("pl-e1/cam-b",)
    cams = {("pl-e1", "cam-a"): report(), ("pl-e1", "cam-b"): report(camera="cam-b")}
    assert sender.sync(grants, cams, quiet + 31) == 1
    last = outbox.db.execute("SELECT body FROM outbox ORDER BY id DESC LIMIT 1").fetchone()[0]
    m = decode_camera_reports(last)
    assert [r.camera for r in m.cameras] == ["cam-b"] and m.withdrawn == (("pl-e1", "cam-a"),)
    assert sender.sync(grants, cams, quiet + 32) == 0
    # sent camera messages leave the outbox after a while; nothing else does
    outbox.add_one(LT, "in.lt-vsat.from.pl-sg.hit", "hit:1", b"hit")
    rows = outbox.db.execute("SELECT id FROM outbox ORDER BY id").fetchall()
    with outbox.transaction():
        outbox.mark_sent([r[0] for r in rows[:-2]])  # the last camera message and the hit not
    assert [r[0] for r in outbox.db.execute("SELECT msg_id FROM outbox ORDER BY id")] == [
        m.msg_id, "hit:1"]
    assert sender.purge_sent(time.time() + 1) == len(rows) - 2  # their ids, kept for dedupe
    outbox.close()


def test_the_collector_s_exchange_shares_the_cameras_of_its_hits_db(tmp_path: Path) -> None:
    config = ExchangeConfig(agency=PL, camera_refresh_s=10)
    exchange = Exchange.from_config(
        config, default_agency=PL, credentials_dir=tmp_path, data_dir=tmp_path / "data",
        watchlists_path=tmp_path / "data" / "watchlists.db", grants=Fixed,  # type: ignore[arg-type]
        commit_hits=lambda hits, agency: None)
    assert exchange.camera_settings == CameraShareSettings(tmp_path / "data" / "hits.db",
                                                           refresh_s=10.0)
    with pytest.raises(ValidationError):
        ExchangeConfig(camera_refresh_s=0.5)


def test_the_receiver_ignores_older_messages_and_keeps_only_what_is_granted(
        tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "exchange.db")
    setup_schema(outbox)
    now = [1000.0]
    receiver = CameraReceiver(LT, outbox, clock=lambda: now[0])
    grants = Fixed()

    def message(seq: int, *reports: CameraReport, epoch: str = "e1") -> CameraReports:
        return CameraReports(owner=PL, epoch=epoch, seq=seq, refresh_s=30.0, cameras=reports)

    assert receiver.apply(PL, message(2, report(CameraState.DEAD)), grants) == "applied"
    assert receiver.apply(PL, message(1, report(CameraState.LIVE)), grants) == "duplicate"
    assert [c["state"] for c in read_partner_cameras(outbox.db, now[0])] == ["dead"]
    not_shown = CameraReport(node="pl-e9", camera="x", health="live")
    assert receiver.apply(PL, message(3, not_shown), grants) == "not granted"
    assert [c["id"] for c in read_partner_cameras(outbox.db, now[0])] == ["pl-e1/cam-a"]
    # a fresh epoch (the owner's exchange.db made anew) starts its numbers again
    assert receiver.apply(PL, message(1, report(), epoch="e2"), grants) == "applied"
    assert [c["state"] for c in read_partner_cameras(outbox.db, now[0])] == ["live"]
    grants.shown = ()
    assert receiver.check_grants(grants) == 1
    assert read_partner_cameras(outbox.db, now[0]) == []
    outbox.close()
