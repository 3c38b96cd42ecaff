"""The search end to end: a real collector (with its console) and real edge nodes (EdgeService,
their passes handed to `handle_event` as the camera pipeline hands them), CURVE on loopback,
the signing pair made by `anpr-collector keygen` and its collector.verify copied to the nodes.

A query finds the right reads on the right nodes and nothing past retention; a listed plate
(a hit, which left its node) is found among the collector's hits, once; an offline node is
listed; no case reference, no query; an operator is refused; a forged query is refused by
the node; the audit holds every step."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
import numpy as np
import pytest
import zmq
from helpers.booth import list_plates
from helpers.console import Client
from helpers.link import REPO, Keys, child_env, collector_config, make_keys, wait_for
from helpers.stand_ins import idle_engines

from edge.collector.agencies import AgencyConfig
from edge.collector.console.accounts import ConsoleDB
from edge.collector.console.config import ConsoleConfig
from edge.collector.console.server import ConsoleServer
from edge.collector.search import Searches, make_searches
from edge.collector.service import CollectorService
from edge.core.types import PlateEvent
from edge.node.config import CameraConfig, EdgeConfig
from edge.node.service import EdgeService

PASSWORD = "search password 1"
USERS = {"lt-inv": ("investigator", "lt-vsat"), "lt-op": ("operator", "lt-vsat")}
CAMERA = CameraConfig(id="lane-1", source="unused.mp4")
HOUR = 3600.0
LISTED = "LTW777"
# Per node: (plate, hours ago) passes; lt-a's 26 h old read is past its 24 h retention.
PASSES = {"lt-a": [("LTA123", 1), ("LTA123", 26), ("LTZ555", 2)],
          "lt-b": [("LTA123", 3), ("LTA128", 4)],
          "pl-a": [("LTA123", 1.5)]}  # another agency's node: no agreement  # fmt: skip


def event(text: str, t: float) -> PlateEvent:
    return PlateEvent(text=text, formatted=text, country="LT", confidence=0.9, first_seen=t,
                      last_seen=t + 1, frames=5, direction="approaching",
                      best_crop=np.full((40, 160, 3), 128, np.uint8), vehicle_type="car",
                      vehicle_colour="blue")  # fmt: skip


@dataclass
class World:
    keys: Keys
    service: CollectorService
    console: ConsoleServer
    searches: Searches
    nodes: dict[str, EdgeService]
    listed_at: float  # when lt-a saw the listed plate

    def client(self, name: str) -> Client:
        c = Client(self.console.url)
        c.sign_in(name, PASSWORD)
        return c

    def audit(self) -> list[dict]:
        db = ConsoleDB(self.console.database, default_agency="lt-vsat")
        try:
            return db.audit_trail(limit=1000)
        finally:
            db.close()

    def queries(self, node: str) -> int:
        worker = self.nodes[node].search
        assert worker is not None
        return worker.stats["queries"]


def _node(root: Path, keys: Keys, service: CollectorService, name: str) -> EdgeService:
    keys.edge(name)
    creds = keys.edge_dir(name)
    shutil.copy(keys.collector_dir / "collector.key", creds / "collector.key")
    shutil.copy(keys.collector_dir / "collector.verify", creds / "collector.verify")
    config = EdgeConfig.model_validate({
        "node_id": name, "state_dir": str(root / f"state-{name}"),
        "link": {"collector": service.endpoint, "credentials_dir": str(creds),
                 "heartbeat_s": 0.05}})  # fmt: skip
    return EdgeService(config, events_out=io.StringIO(), engines=idle_engines())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("search-e2e")
    keys = make_keys(root)  # the collector's CURVE pair, and the allow-list
    made = subprocess.run(
        [sys.executable, "-m", "edge.collector.cli", "keygen", "--dir", str(keys.collector_dir),
         "collector"], env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert (keys.collector_dir / "collector.sign").is_file()
    config = collector_config(root, keys).model_copy(update={
        "agencies": [AgencyConfig(name="lt-vsat", nodes=["lt-*"]),
                     AgencyConfig(name="pl-sg", nodes=["pl-*"])],
        "console": ConsoleConfig(port=0, poll_s=0.05)})  # fmt: skip
    config.search.timeout_s = 5.0
    ctx = zmq.Context()
    service = CollectorService(config, ctx=ctx)
    assert config.console is not None
    db = ConsoleDB(config.console.database_path(config.data_dir), default_agency="lt-vsat")
    for user, (role, agency) in USERS.items():
        db.add_user(user, PASSWORD, role, agency=agency)
    searches = make_searches(service, config, service.agreements.current, db.audit)
    assert searches is not None
    console = ConsoleServer(config, searches=searches)
    service.components.append(console)
    service.start()
    nodes = {name: _node(root, keys, service, name) for name in [*PASSES, "lt-c"]}
    now = time.time()
    listed_at = now - 0.5 * HOUR
    try:
        list_plates(nodes["lt-a"], LISTED)
        for name, node in nodes.items():
            node.start()
            for plate, hours in PASSES.get(name, []):
                node.handle_event(CAMERA, event(plate, now - hours * HOUR), now - hours * HOUR)
        nodes["lt-a"].handle_event(CAMERA, event(LISTED, listed_at), listed_at)  # a hit
        wait_for(lambda: set(nodes) <= service.connected_nodes(), what="the nodes heard")
        wait_for(lambda: nodes["lt-a"].outbox.backlog() == 0, what="the hit delivered")
        # lt-c goes offline: known to the collector, its connection gone
        nodes.pop("lt-c").stop()
        # (the ROUTER learns a peer is gone when a send to it fails: a frame no node reads)
        wait_for(lambda: not service.send_to_node("lt-c", [b"GONE?"]), what="lt-c gone")
        yield World(keys, service, console, searches, nodes, listed_at)
    finally:
        for node in nodes.values():
            node.stop()
        service.stop()
        db.close()
        ctx.term()


BODY = {"plate": "LTA123", "since": "2d", "case_ref": "CASE-14/2026",
        "legal_basis": "LED art. 8; CPC s. 123"}  # fmt: skip


def _search(c: Client, **kw: object) -> tuple[int, list[dict]]:
    status, _, raw = c.request("POST", "/api/search", {**BODY, **kw})
    if status != 200:
        return status, []
    return status, [json.loads(line) for line in raw.decode().splitlines()]


def _reads(events: list[dict]) -> list[dict]:
    return [r for e in events if e["event"] == "reads" for r in e["reads"]]


def test_a_query_finds_the_right_reads_on_the_right_nodes_and_nothing_past_retention(world):
    status, events = _search(world.client("lt-inv"))
    assert status == 200
    done = events[-1]
    assert done["event"] == "done"
    assert done["reads"] == {"lt-a": 1, "lt-b": 1}  # lt-a's 26 h old read: past retention
    assert done["offline"] == ["lt-c"]  # an offline node is listed
    assert done["collector"]["state"] == "done" and done["collector"]["reads"] == 0
    reads = _reads(events)
    assert sorted((r["node"], r["source"]) for r in reads) == [("lt-a", "node"),
                                                               ("lt-b", "node")]  # fmt: skip
    hours = sorted(round((time.time() - dt.datetime.fromisoformat(r["seen_at"]).timestamp())
                         / HOUR) for r in reads)  # fmt: skip
    assert hours == [1, 3]
    assert all(r["text"] == "LTA123" and r["crop_url"] for r in reads)
    # the other agency's node was never asked
    assert world.queries("pl-a") == 0
    states = {e["node"]: e["state"] for e in events if e["event"] == "node"}
    assert "pl-a" not in states


def test_a_wildcard_finds_each_node_s_reads(world):
    status, events = _search(world.client("lt-inv"), plate="LTA12?")
    assert status == 200
    assert sorted(r["text"] for r in _reads(events)) == ["LTA123", "LTA123", "LTA128"]


def test_a_listed_plate_is_found_among_the_collector_s_hits_once(world):
    # the same pass also kept as a read on lt-a (a node never does: a pass that hits a list
    # is a hit, not a read); the search shows it once, as the collector's hit
    seen = dt.datetime.fromtimestamp(world.listed_at, dt.UTC)
    assert world.nodes["lt-a"].outbox.record_read("lane-1", LISTED, seen_at=seen) is not None
    status, events = _search(world.client("lt-inv"), plate=LISTED)
    assert status == 200
    reads = _reads(events)
    assert len(reads) == 1
    (hit,) = reads
    assert hit["source"] == "collector" and hit["node"] == "lt-a"
    assert hit["watchlists"] == ["stolen"] and len(hit["hit_ids"]) == 1
    assert dt.datetime.fromisoformat(hit["seen_at"]) == seen
    done = events[-1]
    assert done["collector"] == {"state": "done", "reads": 1, "found": 1, "refused": ""}
    lt_a = next(e for e in events if e["event"] == "node" and e["node"] == "lt-a"
                and e["state"] == "done")  # fmt: skip
    assert lt_a["as_hits"] == 1 and lt_a["reads"] == 0
    status, crop = world.client("lt-inv").get(hit["crop_url"])
    assert status == 200 and crop[:3] == b"\xff\xd8\xff"


def test_no_case_reference_no_query(world):
    before = world.queries("lt-a")
    for missing in ("case_ref", "legal_basis"):
        status, _ = _search(world.client("lt-inv"), **{missing: ""})
        assert status == 400
    assert world.queries("lt-a") == before
    assert sum(r["action"] == "search refused" for r in world.audit()) >= 2


def test_an_operator_is_refused(world):
    before = world.queries("lt-a")
    status, _ = _search(world.client("lt-op"))
    assert status == 403
    assert world.queries("lt-a") == before


def test_a_forged_query_is_refused_by_the_node(world):
    real = world.searches._key
    world.searches._key = nacl.signing.SigningKey.generate()  # not the nodes' collector.verify
    try:
        status, events = _search(world.client("lt-inv"))
    finally:
        world.searches._key = real
    assert status == 200
    refused = events[-1]["refused"]
    assert set(refused) == {"lt-a", "lt-b"}
    assert all(why.startswith("forged") for why in refused.values())
    assert _reads(events) == []


def test_the_audit_holds_every_step(world):
    c = world.client("lt-inv")
    status, events = _search(c, case_ref="CASE-AUDIT-1")
    assert status == 200
    search_id = events[0]["search"]["id"]
    first = _reads(events)[0]
    assert c.get(first["crop_url"])[0] == 200
    rows = [r for r in world.audit() if search_id in r["detail"]]
    actions = [r["action"] for r in rows]
    assert {"search", "search result", "search read opened"} <= set(actions)
    query = next(r for r in rows if r["action"] == "search")
    assert query["user"] == "lt-inv" and "CASE-AUDIT-1" in query["detail"]
    assert "LED art. 8" in query["detail"] and "lt-a" in query["detail"]
    result = next(r for r in rows if r["action"] == "search result")["detail"]
    assert "lt-a: 1 reads returned (1 found)" in result
    assert "lt-b: 1 reads returned (1 found)" in result
    assert "lt-c: offline" in result and "the collector's hits: 0 hits returned" in result
    opened = next(r for r in rows if r["action"] == "search read opened")["detail"]
    assert "CASE-AUDIT-1" in opened and "LTA123" in opened
