"""The collector's search (edge.collector.search) against minimal nodes on loopback: real
CURVE links, queries signed and verified, answers streamed; scope, audit, offline and slow
nodes, retries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from helpers.console import make_jpeg
from helpers.link import Keys, collector_config, make_keys, wait_for
from helpers.search import MiniNode, attach, mini_node, signing_keys

from edge.collector.agencies import AgencyConfig
from edge.collector.search import (
    DONE,
    OFFLINE,
    REFUSED,
    SLOW,
    Search,
    Searches,
    SearchRefused,
    SearchRequest,
)
from edge.collector.service import CollectorService
from edge.collector.store import HitStore, Seen
from edge.core.keys import generate_signing_keypair

NOW = dt.datetime.now(dt.UTC)
AGENCIES = [AgencyConfig(name="lt-vsat", nodes=["lt-*"]),
            AgencyConfig(name="pl-sg", nodes=["pl-*"])]  # fmt: skip


class AuditLog:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def __call__(self, user: str, action: str, detail: str = "", address: str | None = None,
                 *, agency: str = "") -> None:  # fmt: skip
        self.rows.append((user, action, detail, agency))

    def actions(self) -> list[str]:
        return [r[1] for r in self.rows]


@dataclass
class Net:
    root: Path
    keys: Keys
    ctx: zmq.Context
    service: CollectorService
    searches: Searches
    audit: AuditLog
    nodes: dict[str, MiniNode]

    def node(self, name: str, **kw: object) -> MiniNode:
        n = mini_node(self.root, self.keys, self.service, name, **kw)
        self.nodes[name] = n
        return n

    def connect(self, n: MiniNode) -> None:
        n.start(self.ctx)
        wait_for(lambda: n.name in self.service.connected_nodes(), what=f"{n.name} heard")


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    keys = make_keys(tmp_path)
    signing_keys(keys)
    config = collector_config(tmp_path, keys).model_copy(update={"agencies": AGENCIES})
    config.search.timeout_s = 2.0
    ctx = zmq.Context()
    service = CollectorService(config, ctx=ctx)
    audit = AuditLog()
    searches = attach(service, audit)
    service.start()
    net = Net(tmp_path, keys, ctx, service, searches, audit, {})
    try:
        yield net
    finally:
        for n in net.nodes.values():
            n.stop()
        service.stop()
        ctx.term()


def _reads(plate: str, camera: str, *hours_ago: float) -> list:
    return [(plate, NOW - dt.timedelta(hours=h), camera, "north", 0.9, make_jpeg(plate))
            for h in hours_ago]  # fmt: skip


def _ask(net: Net, plate: str = "LTA123", agency: str = "lt-vsat", **kw: object) -> Search:
    request = SearchRequest(**{"pattern": plate, "since": NOW - dt.timedelta(days=2),
                               "until": NOW + dt.timedelta(minutes=1), "case_ref": "CASE-1",
                               "legal_basis": "LED art. 8", **kw})  # type: ignore[arg-type]
    return net.searches.begin(request, "ivan", agency)


def _settle(search: Search, timeout: float = 10.0) -> list[dict]:
    events: list[dict] = []
    wait_for(lambda: (events.extend(search.events_after(len(events), 0.2)[0]) or
                      (events and events[-1]["event"] == "done")), timeout, "search settled")
    return events


def test_a_search_finds_the_right_reads_on_the_right_nodes_and_nothing_past_retention(net):
    a, b = net.node("lt-a", retention_h=24), net.node("lt-b")
    a.add_reads(_reads("LTA123", "cam-1", 1, 5, 30) + _reads("LTB999", "cam-1", 2))
    b.add_reads(_reads("LTA123", "cam-9", 3) + _reads("LTC777", "cam-9", 4))
    for n in (a, b):
        net.connect(n)
    search = _ask(net)
    events = _settle(search)
    assert events[0]["event"] == "search"
    found = {(f.node, f.read.camera, round((NOW - f.read.seen_at).total_seconds() / 3600))
             for f in search.reads}  # fmt: skip
    assert found == {("lt-a", "cam-1", 1), ("lt-a", "cam-1", 5), ("lt-b", "cam-9", 3)}
    assert all(f.read.text == "LTA123" and f.read.crop_jpeg for f in search.reads)
    assert {s.node: (s.state, s.reads) for s in search.nodes.values()} == {
        "lt-a": (DONE, 2), "lt-b": (DONE, 1)}
    done = events[-1]
    assert done["reads"] == {"lt-a": 2, "lt-b": 1} and done["offline"] == []
    reads_events = [e for e in events if e["event"] == "reads"]
    assert sum(len(e["reads"]) for e in reads_events) == 3


def test_wildcards_go_to_the_nodes_as_typed_normalised(net):
    a = net.node("lt-a")
    a.add_reads(_reads("LTA123", "cam-1", 1) + _reads("LTA129", "cam-1", 2)
                + _reads("LTB123", "cam-1", 3))  # fmt: skip
    net.connect(a)
    search = _ask(net, "lta 12?")
    _settle(search)
    assert search.mode == "wildcard" and search.pattern == "LTA12?"
    assert sorted(f.read.text for f in search.reads) == ["LTA123", "LTA129"]


def test_an_offline_node_is_listed_and_asked_again_when_it_returns(net):
    a, late = net.node("lt-a"), net.node("lt-late")
    a.add_reads(_reads("LTA123", "cam-1", 1))
    late.add_reads(_reads("LTA123", "cam-7", 2))
    net.connect(a)
    # lt-late is known (in the nodes table) but not connected now
    store = HitStore(net.service.config.db_path)
    store.record_seen([Seen("lt-late", NOW)])
    store.close()
    search = _ask(net, retry_offline=True)
    events = _settle(search)
    assert events[-1]["offline"] == ["lt-late"]
    assert search.nodes["lt-late"].state == OFFLINE
    net.connect(late)
    wait_for(lambda: search.nodes["lt-late"].state == DONE, what="lt-late asked again")
    assert {f.node for f in search.reads} == {"lt-a", "lt-late"}
    assert "search retry" in net.audit.actions()


def test_a_slow_node_is_listed_and_its_late_answer_still_counts(net):
    a, slow = net.node("lt-a"), net.node("lt-slow")
    slow.add_reads(_reads("LTA123", "cam-2", 1))
    slow.hold.clear()
    for n in (a, slow):
        net.connect(n)
    search = _ask(net)
    events = _settle(search)
    assert events[-1]["slow"] == ["lt-slow"] and search.nodes["lt-slow"].state == SLOW
    slow.hold.set()
    wait_for(lambda: search.nodes["lt-slow"].state == DONE, what="the late answer")
    assert search.nodes["lt-slow"].late and len(search.reads) == 1
    assert "search late answer" in net.audit.actions()


def test_the_scope_is_the_agency_s_nodes_and_what_agreements_grant(net):
    for name in ("lt-a", "pl-a"):
        net.connect(net.node(name))
    assert [n for n, _ in net.searches.scope("lt-vsat")] == ["lt-a"]
    assert [n for n, _ in net.searches.scope("pl-sg")] == ["pl-a"]
    with pytest.raises(SearchRefused, match="not nodes lt-vsat may search: pl-a"):
        _ask(net, nodes=("pl-a",))
    search = _ask(net)
    _settle(search)
    assert list(search.nodes) == ["lt-a"]
    assert net.nodes["pl-a"].queries == []


@pytest.mark.parametrize("missing", ["case_ref", "legal_basis"])
def test_no_case_reference_or_legal_basis_no_query(net, missing):
    a = net.node("lt-a")
    net.connect(a)
    with pytest.raises(SearchRefused, match="mandatory"):
        _ask(net, **{missing: "  "})
    assert a.queries == [] and net.audit.actions() == ["search refused"]


def test_a_query_signed_with_another_key_is_refused_by_the_node(net, tmp_path):
    a = net.node("lt-a")
    a.add_reads(_reads("LTA123", "cam-1", 1))
    net.connect(a)
    forger = tmp_path / "forger"
    net.searches._key = generate_signing_keypair(forger, "collector")[0]
    search = _ask(net)
    _settle(search)
    assert search.nodes["lt-a"].state == REFUSED and "forged" in search.nodes["lt-a"].refused
    assert search.reads == [] and a.queries == []


def test_the_audit_holds_the_query_and_each_node_s_count(net):
    a = net.node("lt-a")
    a.add_reads(_reads("LTA123", "cam-1", 1, 2))
    net.connect(a)
    search = _ask(net)
    _settle(search)
    wait_for(lambda: "search result" in net.audit.actions(), what="the result audited")
    query = next(r for r in net.audit.rows if r[1] == "search")
    assert query[0] == "ivan" and query[3] == "lt-vsat"
    for part in (search.id, "'CASE-1'", "'LED art. 8'", "exact LTA123", "nodes: lt-a"):
        assert part in query[2]
    result = next(r for r in net.audit.rows if r[1] == "search result")
    assert "lt-a: 2 reads returned (2 found)" in result[2]
