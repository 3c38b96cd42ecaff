"""A search reaches a partner's nodes through the partner's collector, over the exchange.

Two collectors (lt-vsat and pl-sg, a CollectorService each with its own agreements
directory: each side's own copy), a real nats-server between them configured from the
agreements, and minimal nodes (helpers.search.MiniNode) on each collector's CURVE link,
each trusting only its own collector's search key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from helpers.console import make_jpeg
from helpers.exchange import StandInGrant, StandInGrants
from helpers.link import Keys, collector_config, make_keys, wait_for
from helpers.nats import NatsServer
from helpers.search import MiniNode, attach, mini_node, signing_keys

from edge.collector.agencies import AgencyConfig
from edge.collector.agreements import Agreements
from edge.collector.exchange.config import ExchangeConfig
from edge.collector.exchange.search_relay import SearchRelay, attach_relay
from edge.collector.exchange.search_wire import (
    AnswerHeader,
    NodeReport,
    RelayQuery,
    decode_answer,
    decode_query,
    encode_answer,
    encode_query,
    read_header,
)
from edge.collector.exchange.server_config import Route, generate_nkey, routes, server_config
from edge.collector.search import (
    DONE,
    OFFLINE,
    PARTNER,
    REFUSED,
    UNREACHABLE,
    Search,
    Searches,
    SearchRequest,
)
from edge.collector.service import CollectorService
from edge.collector.sharing import AgreementsService
from edge.core.errors import ProtocolError
from edge.core.search import SearchRead

LT, PL = "lt-vsat", "pl-sg"
NOW = dt.datetime.now(dt.UTC)
AGENCIES = f"""
{LT}: {{name: "State Border Guard Service of Lithuania", country: LT}}
{PL}: {{name: "Polish Border Guard", country: PL}}
"""


def agreement(search: bool) -> str:
    return f"""
agreement: LT-PL-SEARCH-1
title: Search of the Podlaskie cameras
parties: [{LT}, {PL}]
valid_from: 2026-01-01T00:00:00Z
grants:
  - from: {PL}
    to: {LT}
    cameras: ["pl-a*"]
    search: {str(search).lower()}
"""


class AuditLog:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str | None, str]] = []

    def __call__(self, user: str, action: str, detail: str = "", address: str | None = None,
                 *, agency: str = "") -> None:  # fmt: skip
        self.rows.append((user, action, detail, address, agency))

    def of(self, action: str) -> list[tuple[str, str, str, str | None, str]]:
        return [r for r in self.rows if r[1] == action]


class Site:
    """One agency's collector with its search, the relay, and its own agreements."""

    def __init__(self, root: Path, agency: str, nats_keys: Path, search_granted: bool):
        self.agency, self.root = agency, root / agency
        self.keys: Keys = make_keys(self.root)
        signing_keys(self.keys)
        generate_nkey(self.keys.collector_dir, agency)
        shutil.copy(self.keys.collector_dir / f"nats-{agency}.pub", nats_keys)
        self.agreements_dir = self.root / "agreements"
        self.agreements_dir.mkdir()
        (self.agreements_dir / "agencies.yaml").write_text(AGENCIES)
        (self.agreements_dir / "lt-pl.yaml").write_text(agreement(search_granted))
        self.audit = AuditLog()
        self.nodes: dict[str, MiniNode] = {}
        self.service: CollectorService | None = None

    def start(self, url: str) -> Site:
        config = collector_config(self.root, self.keys).model_copy(update={
            "agencies": [AgencyConfig(name=self.agency, nodes=[f"{self.agency[:2]}-*"])],
            "agreements_dir": self.agreements_dir,
            "exchange": ExchangeConfig(url=url, reconnect_wait_s=0.1)})  # fmt: skip
        config.search.timeout_s = 2.0
        self.ctx = zmq.Context()
        self.service = CollectorService(config, ctx=self.ctx,
                                        agreements=AgreementsService(self.agreements_dir))
        self.searches: Searches = attach(self.service, self.audit)
        relay = attach_relay(self.searches, self.service, config,
                             self.service.agreements.current, self.audit)  # fmt: skip
        assert relay is not None
        self.relay: SearchRelay = relay
        self.service.start()
        wait_for(lambda: self.service is not None and self.service.exchange is not None
                 and self.service.exchange.link.ready, 15, f"{self.agency}'s stream")
        return self

    def node(self, name: str, reads: list | None = None, start: bool = True) -> MiniNode:
        assert self.service is not None
        n = mini_node(self.root, self.keys, self.service, name)
        if reads:
            n.add_reads(reads)
        self.nodes[name] = n
        if start:
            self.connect(n)
        return n

    def connect(self, n: MiniNode) -> None:
        n.start(self.ctx)
        wait_for(lambda: self.service is not None
                 and n.name in self.service.connected_nodes(), what=f"{n.name} heard")

    def stop(self) -> None:
        for n in self.nodes.values():
            n.stop()
        self.nodes = {}
        if self.service is not None:
            self.service.stop()
            self.ctx.term()
            self.service = None

    def search_messages_in_stream(self) -> int:
        """Messages of the search kinds our stream still holds."""
        assert self.service is not None and self.service.exchange is not None
        ex = self.service.exchange
        assert ex.link.js is not None and ex._loop is not None

        async def count() -> int:
            info = await ex.link.js.stream_info("ANPR_IN", subjects_filter="in.*.from.*.>")
            subjects = info.state.subjects or {}
            return sum(n for s, n in subjects.items() if s.rsplit(".", 1)[1].startswith("search"))

        return asyncio.run_coroutine_threadsafe(count(), ex._loop).result(10)


def _reads(plate: str, camera: str, *hours_ago: float) -> list:
    return [(plate, NOW - dt.timedelta(hours=h), camera, "north", 0.9, make_jpeg(plate))
            for h in hours_ago]  # fmt: skip


@pytest.fixture
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict]:
    pl_grants = getattr(request, "param", True)  # pl-sg's own copy grants search
    nats_keys = tmp_path / "nats-keys"
    nats_keys.mkdir()
    lt = Site(tmp_path, LT, nats_keys, True)
    pl = Site(tmp_path, PL, nats_keys, pl_grants)
    # The server from lt-vsat's copy (which grants search): the routes are open either way.
    nats = NatsServer(tmp_path / "nats", lambda listen, http, store: server_config(
        Agreements.load(lt.agreements_dir), nats_keys, store_dir=store, listen=listen,
        http=http))  # fmt: skip
    nats.start()
    try:
        lt.start(nats.url)
        pl.start(nats.url)
        yield {"lt": lt, "pl": pl, "nats": nats}
    finally:
        lt.stop()
        pl.stop()
        nats.stop()


def _ask(site: Site, plate: str = "LTA123", **kw: object) -> Search:
    request = SearchRequest(**{"pattern": plate, "since": NOW - dt.timedelta(days=2),
                               "until": NOW + dt.timedelta(minutes=1), "case_ref": "CASE-7",
                               "legal_basis": "LED art. 8; LT-PL-SEARCH-1", **kw})  # type: ignore[arg-type]
    return site.searches.begin(request, "ivan", LT)


def _settle(search: Search, timeout: float = 15.0) -> list[dict]:
    events: list[dict] = []
    wait_for(lambda: (events.extend(search.events_after(len(events), 0.2)[0]) or
                      (events and events[-1]["event"] == "done")), timeout, "search settled")
    return events


def test_a_partners_nodes_answer_our_investigator_through_its_collector(world):
    lt, pl = world["lt"], world["pl"]
    lt.node("lt-1", _reads("LTA123", "cam-1", 1) + _reads("LTB999", "cam-1", 2))
    a1 = pl.node("pl-a1", _reads("LTA123", "cam-p", 3, 5) + _reads("PLX111", "cam-p", 4))
    a2 = pl.node("pl-a2", _reads("LTA123", "cam-q", 6))  # granted, and gone offline:
    a2.stop()
    wait_for(lambda: not pl.service.send_to_node("pl-a2", [b"ping"]), 10, "pl-a2 gone")
    b1 = pl.node("pl-b1", _reads("LTA123", "cam-r", 7))  # not named by the grant
    search = _ask(lt)
    events = _settle(search)

    found = sorted((f.node, f.agency, f.read.camera) for f in search.reads)
    assert found == [("lt-1", LT, "cam-1"), ("pl-a1", PL, "cam-p"), ("pl-a1", PL, "cam-p")]
    assert all(f.read.text == "LTA123" and f.read.crop_jpeg == make_jpeg("LTA123")
               for f in search.reads)  # the crops came across the exchange
    states = {n: (s.state, s.via, s.reads) for n, s in search.nodes.items()}
    assert states == {"lt-1": (DONE, "", 1), PL: (DONE, "", 0),
                      "pl-a1": (DONE, PL, 2), "pl-a2": (OFFLINE, PL, 0)}
    assert search.nodes[PL].source == PARTNER and search.nodes[PL].total == 2
    done = events[-1]
    assert done["reads"] == {"lt-1": 1, "pl-a1": 2} and done["offline"] == ["pl-a2"]
    assert done["partners"] == {PL: {"state": DONE, "refused": "", "nodes": 2}}
    assert done["unreachable"] == []
    # pl-sg's node took pl-sg's signed query (it trusts only pl-sg's key), pl-b1 none.
    assert len(a1.queries) == 1 and a1.refused == []
    assert b1.queries == [] and b1.refused == [] and a2.queries == []
    # pl-sg's own audit trail holds the query: the asker's agency and user, case, basis.
    [row] = pl.audit.of("search")
    user, _, detail, address, agency = row
    assert (user, address, agency) == (f"{LT}:ivan", f"exchange:{LT}", PL)
    assert "CASE-7" in detail and "LED art. 8" in detail and "LTA123" in detail
    assert "pl-a1" in detail and "pl-a2" in detail and "pl-b1" not in detail
    wait_for(lambda: pl.audit.of("search result"), 10, "pl-sg's result row")
    assert "pl-a1: 2 reads returned" in pl.audit.of("search result")[0][2]
    # ...and ours the partner asked, and what came back.
    assert "pl-sg (a partner" in lt.audit.of("search")[0][2]
    result = lt.audit.of("search result")[0][2]
    assert "pl-a1: 2 reads returned" in result and "pl-a2: offline" in result
    # The reads travelled, and are not kept in either stream.
    wait_for(lambda: pl.search_messages_in_stream() == 0 and
             lt.search_messages_in_stream() == 0, 10, "search messages deleted")

    # pl-a2 comes back: asked again through pl-sg.
    a2 = pl.node("pl-a2")
    asked = lt.searches.retry(search.id, "ivan")
    assert asked == ["pl-a2"]
    wait_for(lambda: search.nodes["pl-a2"].state == DONE, 15, "pl-a2 answering on a retry")
    assert sorted(f.node for f in search.reads) == ["lt-1", "pl-a1", "pl-a1", "pl-a2"]
    assert len(a2.queries) == 1 and b1.queries == []


@pytest.mark.parametrize("world", [False], indirect=True)
def test_a_partner_whose_copy_does_not_grant_search_refuses_and_audits_it(world):
    lt, pl = world["lt"], world["pl"]
    lt.node("lt-1", _reads("LTA123", "cam-1", 1))
    a1 = pl.node("pl-a1", _reads("LTA123", "cam-p", 3))
    search = _ask(lt)
    events = _settle(search)
    p = search.nodes[PL]
    assert p.state == REFUSED and "grants lt-vsat search" in p.refused
    assert [f.node for f in search.reads] == ["lt-1"]
    assert events[-1]["partners"][PL]["state"] == REFUSED
    assert a1.queries == []
    [row] = pl.audit.of("search refused")
    user, _, detail, address, agency = row
    assert (user, address, agency) == (f"{LT}:ivan", f"exchange:{LT}", PL)
    assert "CASE-7" in detail and "LED art. 8" in detail
    assert pl.audit.of("search") == []
    assert "refused" in lt.audit.of("search result")[0][2]


def test_a_partner_away_is_listed_unreachable_and_the_search_does_not_hang(world):
    lt, pl, nats = world["lt"], world["pl"], world["nats"]
    lt.node("lt-1", _reads("LTA123", "cam-1", 1))
    pl.stop()  # the partner's collector is down; NATS holds the query for it
    search = _ask(lt)
    events = _settle(search, timeout=lt.searches.timeout_s + 5)
    assert search.nodes[PL].state == UNREACHABLE
    assert events[-1]["unreachable"] == [PL] and events[-1]["reads"] == {"lt-1": 1}
    assert "partner unreachable" in lt.audit.of("search result")[0][2]

    nats.kill()  # the exchange away: unreachable at once, not after the time-out
    wait_for(lambda: not lt.service.exchange.link.connected.is_set(), 10, "disconnected")
    search = _ask(lt)
    _settle(search, timeout=lt.searches.timeout_s)
    assert search.nodes[PL].state == UNREACHABLE
    assert "not connected" in search.nodes[PL].refused


# ---------------------------------------------------------------------- units


def test_a_search_grant_opens_queries_one_way_and_answers_the_other():
    grants = StandInGrants({LT: {}, PL: {}}, [StandInGrant(PL, LT, cameras=("pl-*",),
                                                           search=True)])  # fmt: skip
    assert routes(grants, [LT, PL]) == {Route(PL, LT), Route(LT, PL)}
    no_search = StandInGrants({LT: {}, PL: {}}, [StandInGrant(PL, LT, cameras=("pl-*",))])
    assert routes(no_search, [LT, PL]) == {Route(PL, LT)}


def test_the_wire_formats_round_trip_and_refuse_what_is_off():
    q = RelayQuery(id="a" * 32, agency=LT, requested_by="ivan", case_ref="C", legal_basis="B",
                   pattern="LTA123", mode="exact", since=NOW, until=NOW, issued_at=NOW,
                   nodes=("pl-a1",))  # fmt: skip
    assert decode_query(encode_query(q)) == q
    with pytest.raises(ProtocolError):
        decode_query(encode_query(q).replace(b'"exact"', b'"regex"'))
    with pytest.raises(ProtocolError):
        decode_query(b'{"v": 1, "kind": "search", "extra": 1}')
    read = SearchRead(text="LTA123", formatted="LTA 123", country="LT", confidence=0.9,
                      seen_at=NOW, camera="cam-1", direction="north", vehicle_type="car",
                      vehicle_colour="blue", lat=53.1, lon=23.2, crop_jpeg=make_jpeg("x"))
    header = AnswerHeader(id="b" * 32, event="reads", node="pl-a1", seq=3,
                          reads=(read_header(read),))  # fmt: skip
    body = encode_answer(header, [read.crop_jpeg])
    got = decode_answer(body)
    assert got.header == header and got.reads[0].crop_jpeg == read.crop_jpeg
    assert got.reads[0].seen_at == read.seen_at
    for bad in (body[:-1], b"XXXX" + body[4:], body + b"x"):
        with pytest.raises(ProtocolError):
            decode_answer(bad)
    plan = AnswerHeader(id="b" * 32, event="plan", nodes=(NodeReport(node="pl-a1",
                                                                     state="asked"),))
    assert decode_answer(encode_answer(plan)).header == plan
