"""The console's search (edge.collector.console.search_api) on a real collector and console on
loopback, with minimal CURVE nodes answering: investigators only, streamed NDJSON and SSE,
results, export with the case reference, crops audited, and the CLI printing JSON lines."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from helpers.console import Client, make_jpeg
from helpers.link import REPO, Keys, child_env, collector_config, make_keys, wait_for
from helpers.search import MiniNode, attach, mini_node, signing_keys

from edge.collector.agencies import AgencyConfig
from edge.collector.console.accounts import ConsoleDB
from edge.collector.console.config import ConsoleConfig
from edge.collector.console.server import ConsoleServer
from edge.collector.service import CollectorService

NOW = dt.datetime.now(dt.UTC)
PASSWORD = "search password 1"
USERS = {"lt-inv": ("investigator", "lt-vsat"), "lt-inv2": ("investigator", "lt-vsat"),
         "lt-op": ("operator", "lt-vsat"), "lt-admin": ("admin", "lt-vsat"),
         "pl-inv": ("investigator", "pl-sg")}  # fmt: skip


@dataclass
class World:
    root: Path
    keys: Keys
    service: CollectorService
    console: ConsoleServer
    nodes: dict[str, MiniNode]

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


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("search")
    keys = make_keys(root)
    signing_keys(keys)
    config = collector_config(root, keys).model_copy(update={
        "agencies": [AgencyConfig(name="lt-vsat", nodes=["lt-*"]),
                     AgencyConfig(name="pl-sg", nodes=["pl-*"])],
        "console": ConsoleConfig(port=0, poll_s=0.05)})  # fmt: skip
    config.search.timeout_s = 3.0
    ctx = zmq.Context()
    service = CollectorService(config, ctx=ctx)
    db = ConsoleDB(config.console.database_path(config.data_dir), default_agency="lt-vsat")
    for name, (role, agency) in USERS.items():
        db.add_user(name, PASSWORD, role, agency=agency)
    db.close()
    console = ConsoleServer(config, searches=attach(service, None))
    service.components.append(console)
    service.start()
    console.console.searches._audit = console.console.db.audit  # the console's trail
    nodes = {}
    for name, plate_hours in (("lt-a", [1, 26]), ("lt-b", [3])):
        n = mini_node(root, keys, service, name, retention_h=24)
        n.add_reads([("LTA123", NOW - dt.timedelta(hours=h), "cam-1", "north", 0.9,
                      make_jpeg(f"LTA123 {h}")) for h in plate_hours]
                    + [("LTZ555", NOW - dt.timedelta(hours=2), "cam-1", "south", 0.8,
                        make_jpeg("LTZ555"))])  # fmt: skip
        n.start(ctx)
        nodes[name] = n
    wait_for(lambda: {"lt-a", "lt-b"} <= service.connected_nodes(), what="nodes heard")
    try:
        yield World(root, keys, service, console, nodes)
    finally:
        for n in nodes.values():
            n.stop()
        service.stop()
        ctx.term()


BODY = {"plate": "LTA123", "since": "2d", "case_ref": "CASE-42/2026",
        "legal_basis": "LED art. 8; CPC s. 123"}  # fmt: skip


def _search(c: Client, **kw: object) -> tuple[int, list[dict], str]:
    status, headers, raw = c.request("POST", "/api/search", {**BODY, **kw})
    if status != 200:
        return status, [json.loads(raw)], ""
    assert headers["content-type"].startswith("application/x-ndjson")
    return status, [json.loads(line) for line in raw.decode().splitlines()], headers["x-search-id"]


def test_an_investigator_s_search_streams_the_reads_node_by_node(world):
    status, events, sid = _search(world.client("lt-inv"))
    assert status == 200
    assert events[0]["event"] == "search" and events[0]["search"]["case_ref"] == "CASE-42/2026"
    assert events[-1]["event"] == "done"
    assert events[-1]["reads"] == {"lt-a": 1, "lt-b": 1}  # lt-a's 26 h old read: retention
    reads = [r for e in events if e["event"] == "reads" for r in e["reads"]]
    assert sorted(r["node"] for r in reads) == ["lt-a", "lt-b"]
    assert all(r["text"] == "LTA123" and r["crop_url"] for r in reads)
    states = {(e["source"], e["node"]): e["state"] for e in events if e["event"] == "node"}
    # the collector's own hits are a source of their own (none here: no hit stored)
    assert states == {("node", "lt-a"): "done", ("node", "lt-b"): "done",
                      ("collector", "collector"): "done"}
    assert events[-1]["collector"] == {"state": "done", "reads": 0, "found": 0, "refused": ""}


def test_operators_and_admins_are_refused(world):
    asked = {n: len(x.queries) for n, x in world.nodes.items()}
    for name in ("lt-op", "lt-admin"):
        status, [body], _ = _search(world.client(name))
        assert status == 403 and "investigator" in body["error"]
    assert {n: len(x.queries) for n, x in world.nodes.items()} == asked


@pytest.mark.parametrize("missing", ["case_ref", "legal_basis"])
def test_no_case_reference_no_query(world, missing):
    asked = {n: len(x.queries) for n, x in world.nodes.items()}
    status, [body], _ = _search(world.client("lt-inv"), **{missing: ""})
    assert status == 400 and "mandatory" in body["error"]
    assert {n: len(x.queries) for n, x in world.nodes.items()} == asked
    assert any(r["action"] == "search refused" and "mandatory" in r["detail"]
               for r in world.audit())  # fmt: skip


def test_results_export_and_crops_are_the_asker_s_and_audited(world):
    c = world.client("lt-inv")
    _, events, sid = _search(c)
    status, whole = c.get(f"/api/search/{sid}")
    assert status == 200 and whole["settled"] and len(whole["reads"]) == 2
    status, raw = c.get(f"/api/search/{sid}.csv")
    rows = list(csv.reader(io.StringIO(raw.decode())))
    assert rows[0][:2] == ["search_id", "case_ref"] and len(rows) == 3
    assert all(r[1] == "CASE-42/2026" for r in rows[1:])
    seen = [r[rows[0].index("seen_at")] for r in rows[1:]]
    assert seen == sorted(seen)  # the journey, in time order
    status, headers, raw = c.request("GET", f"/api/search/{sid}.json")
    assert "CASE-42_2026" in headers["content-disposition"]
    assert json.loads(raw)["case_ref"] == "CASE-42/2026"
    url = whole["reads"][0]["crop_url"]
    status, jpeg = c.get(url)
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    trail = world.audit()
    actions = {r["action"] for r in trail if sid in r["detail"]}
    assert {"search", "search result", "search export", "search read opened"} <= actions
    opened = next(r for r in trail if r["action"] == "search read opened")
    assert opened["user"] == "lt-inv" and "CASE-42/2026" in opened["detail"]
    for other in ("lt-inv2", "pl-inv"):  # another investigator: no such search
        o = world.client(other)
        for path in (f"/api/search/{sid}", f"/api/search/{sid}.csv", url,
                     f"/api/search/{sid}/events"):  # fmt: skip
            assert o.get(path)[0] == 404, (other, path)


def test_the_events_stream_replays_the_search_as_server_sent_events(world):
    c = world.client("lt-inv")
    _, events, sid = _search(c)
    status, headers, raw = c.request("GET", f"/api/search/{sid}/events")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    kinds = [line.split(": ", 1)[1] for line in raw.decode().splitlines()
             if line.startswith("event: ")]  # fmt: skip
    assert kinds == [e["event"] for e in events]


def test_a_partner_s_investigator_sees_only_its_own_nodes(world):
    status, [body], _ = _search(world.client("pl-inv"))
    assert status == 400 and "no node pl-sg may search" in body["error"]


def test_the_cli_prints_the_search_as_json_lines(world):
    proc = subprocess.run(
        [sys.executable, "-m", "edge.collector.cli", "--log-level", "WARNING", "search", "LTA123",
         "--since", "2d", "--case", "CASE-CLI", "--basis", "LED art. 8", "--user", "lt-inv",
         "--password-stdin", "--url", world.console.url],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, env=child_env(),
        cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["event"] == "search" and lines[0]["search"]["case_ref"] == "CASE-CLI"
    assert lines[-1]["event"] == "done" and lines[-1]["reads"] == {"lt-a": 1, "lt-b": 1}
    proc = subprocess.run(
        [sys.executable, "-m", "edge.collector.cli", "search", "LTA123", "--since", "2d",
         "--case", "X", "--basis", "Y", "--user", "lt-op", "--password-stdin", "--url",
         world.console.url], input=PASSWORD + "\n", capture_output=True, text=True,
        timeout=60, env=child_env(), cwd=REPO)  # fmt: skip
    assert proc.returncode == 2 and "403" in proc.stderr
