"""Three agencies on loopback, each with its own collector, one NATS server between them,
and a real edge node of lt-vsat: what the issue's agreements say is what flows.

pl-sg shares its list `stolen-pl` with lt-vsat (hits back); lv-vp is a partner of lt-vsat
only. The edge gets pl-sg's list through lt-vsat's collector and reads a listed plate;
the hit shows to lt-vsat's and pl-sg's operators and to nobody at lv-vp, reaches pl-sg's
webhook (which fails once) and lt-vsat's duty mailbox; pl-sg expires the entry and the
edge stops matching it; the NATS server is killed mid-flow and nothing is lost or
doubled; the agreement is revoked and the edge's copy of the list is gone.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from helpers.alerts import SECRET, Mailbox, make_cert, smtp_server, start_receiver, stop_receiver
from helpers.booth import Booth, edge_credentials, engines, node_config
from helpers.console import Client
from helpers.link import free_port, make_hit, make_keys, wait_for
from helpers.nats import NatsServer

from edge.collector.agreements import Agreements
from edge.collector.config import CollectorConfig
from edge.collector.console.accounts import ConsoleDB
from edge.collector.console.server import make_component as make_console
from edge.collector.exchange.server_config import generate_nkey, server_config
from edge.collector.service import CollectorService
from edge.collector.sharing import AgreementsService
from edge.collector.watchlist.cli import make_component as make_watchlists
from edge.collector.watchlist.master import WatchlistStore
from edge.core.keys import make_curve_client
from edge.core.watchlist.entry import Entry
from edge.node.config import WatchlistConfig
from edge.node.service import EdgeService

LT, PL, LV = "lt-vsat", "pl-sg", "lv-vp"
PASSWORD = "a long test password"
PLATE = "AB123CD"  # what the booth's car reads as
SHARED = f"{PL}.stolen-pl"  # pl-sg's list as lt-vsat and its edges hold it

AGENCIES = f"""
{LT}: {{name: "State Border Guard Service of Lithuania", country: LT}}
{PL}: {{name: "Polish Border Guard, Podlaskie division", country: PL}}
{LV}: {{name: "State Police of Latvia", country: LV}}
"""
LT_PL = f"""
agreement: LT-PL-TEST-1
title: Border Guard cooperation, Podlaskie
parties: [{LT}, {PL}]
valid_from: 2026-01-01T00:00:00Z
grants:
  - from: {PL}
    to: {LT}
    lists: [stolen-pl]
    hits_back: true
"""
LT_LV = f"""
agreement: LT-LV-TEST-1
title: Police cooperation, Latvian border
parties: [{LT}, {LV}]
valid_from: 2026-01-01T00:00:00Z
grants:
  - from: {LV}
    to: {LT}
    lists: [wanted-lv]
    hits_back: true
"""


class Site:
    """One agency's centre: its collector (with watchlists, console, exchange, alerts)."""

    def __init__(self, root: Path, agency: str, agreements: Path, nats_keys: Path,
                 alerts: dict | None = None):
        self.agency, self.root = agency, root / agency
        self.keys = make_keys(self.root / "pki")
        creds = self.keys.collector_dir
        generate_nkey(creds, agency)
        shutil.copy(creds / f"nats-{agency}.pub", nats_keys)  # the server knows public keys
        (creds / "hook.secret").write_text(SECRET)
        snapshot = free_port()
        self.config_doc = {
            "listen": "tcp://127.0.0.1:0", "data_dir": str(self.root / "data"),
            "credentials_dir": str(creds), "allowed_keys_dir": str(self.keys.allowed_dir),
            "heartbeat_flush_s": 0.05, "agencies": [{"name": agency, "nodes": ["*"]}],
            "agreements_dir": str(agreements),
            "watchlists": {"snapshot": f"tcp://127.0.0.1:{snapshot}",
                           "publish": f"tcp://127.0.0.1:{snapshot + 1}", "poll_s": 0.02},
            "console": {"port": 0, "poll_s": 0.05},
            "alerts": alerts,
        }  # fmt: skip
        self.service: CollectorService | None = None
        db = ConsoleDB(self.root / "data" / "console.db", default_agency=agency)
        db.add_user(f"op-{agency}", PASSWORD, "operator", agency=agency)
        db.close()

    def start(self, nats_url: str) -> Site:
        doc = {**self.config_doc, "exchange": {"url": nats_url, "reconnect_wait_s": 0.1}}
        config = CollectorConfig.model_validate({k: v for k, v in doc.items() if v is not None})
        self.config = config
        self.agreements = AgreementsService(config.agreements_dir, poll_s=0.05)
        self.console = make_console(config, self.agreements.current)
        self.ctx = zmq.Context()
        self.service = CollectorService(config, ctx=self.ctx, agreements=self.agreements,
                                        components=[make_watchlists(config), self.console])
        self.service.start()
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.ctx.term()
            self.service = None

    def lists(self) -> WatchlistStore:
        return WatchlistStore(self.root / "data" / "watchlists.db", default_agency=self.agency)

    def operator(self) -> Client:
        client = Client(self.console.url)
        client.sign_in(f"op-{self.agency}", PASSWORD)
        return client

    def _hits(self, columns: str) -> list[tuple]:
        db = sqlite3.connect(self.root / "data" / "hits.db")
        try:
            return [tuple(r) for r in db.execute(f"SELECT {columns} FROM hits ORDER BY rowid")]
        finally:
            db.close()

    def stored(self) -> list[tuple]:
        """(hit id, list, camera agency, list agency) of what this collector stored."""
        return self._hits("hit_id, watchlist, agency, list_agency")

    def revisions(self) -> list[int]:
        return [r[0] for r in self._hits("revision")]

    def active_lists(self) -> set[str]:
        store = self.lists()
        try:
            return {name for name, info in store.lists().items() if info.active}
        finally:
            store.close()


def _plates(client: Client) -> list[str]:
    status, body = client.get("/api/hits?plate=" + PLATE)
    assert status == 200, body
    return [h["hit_id"] for h in body["hits"]]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict]:
    agreements = tmp_path / "agreements"  # the same signed files at each centre
    agreements.mkdir()
    (agreements / "agencies.yaml").write_text(AGENCIES)
    (agreements / "lt-vsat--pl-sg.yaml").write_text(LT_PL)
    (agreements / "lt-vsat--lv-vp.yaml").write_text(LT_LV)
    nats_keys = tmp_path / "nats-keys"
    nats_keys.mkdir()
    cert = make_cert(tmp_path / "tls")
    hook = start_receiver(cert, [503])  # pl-sg's own system: fails once, then takes it
    box = Mailbox()
    controller = pytest.importorskip("aiosmtpd.controller").Controller
    with smtp_server(controller, box) as smtp_port:
        fast = {"first_delay_s": 0.05, "max_delay_s": 0.2}
        sites = {
            LT: Site(tmp_path, LT, agreements, nats_keys, alerts={"retry": fast, "routes": [
                {"agency": LT, "email": [{
                    "name": "duty", "smtp_host": "127.0.0.1", "smtp_port": smtp_port,
                    "starttls": False, "allow_plain_loopback": True,
                    "from": "anpr@vsat.example", "to": ["duty@vsat.example"],
                    "lists": ["*"], "max_priority": 2}]}]}),
            PL: Site(tmp_path, PL, agreements, nats_keys, alerts={"retry": fast, "routes": [
                {"agency": PL, "webhooks": [{
                    "name": "hq", "url": hook.url, "secret_file": "hook.secret",
                    "ca_file": str(cert.cert), "lists": ["stolen-pl"]}]}]}),
            LV: Site(tmp_path, LV, agreements, nats_keys),
        }  # fmt: skip
        nats = NatsServer(tmp_path / "nats", lambda listen, http, store: server_config(
            Agreements.load(agreements), nats_keys, store_dir=store, listen=listen, http=http))
        nats.start()
        try:
            for site in sites.values():
                site.start(nats.url)
            yield {"sites": sites, "nats": nats, "agreements": agreements, "hook": hook,
                   "box": box}
        finally:
            for site in sites.values():
                site.stop()
            nats.stop()
            stop_receiver(hook)


def _edge(tmp_path: Path, site: Site, booth: Booth) -> EdgeService:
    """lt-vsat's node at Kalvarija: its replica synced from lt-vsat's collector, its camera
    started once the first snapshot is in (the booth's car is there from the first frame)."""
    creds = edge_credentials(site.keys, "lt-kalvarija-1")
    config = node_config(tmp_path / "edge", collector=site.service.endpoint,
                         credentials=creds, node_id="lt-kalvarija-1")
    config = config.model_copy(update={"watchlists": WatchlistConfig(
        collector=site.config.watchlists.snapshot, startup_wait_s=30)})
    return EdgeService(config, engines=engines(booth), source_factory=lambda camera: booth)


def _edge_matches(edge: EdgeService) -> list[str]:
    return [m.entry.list for m in edge.replica.build_matcher().match(PLATE)]


def _send(site: Site, node: str, hits: list, before_each=None) -> None:
    """Hits from another of lt-vsat's nodes, over its own CURVE link."""
    sock = site.ctx.socket(zmq.DEALER)
    sock.linger = 0
    make_curve_client(sock, *site.keys.edge(node), site.keys.server_public)
    sock.connect(site.service.endpoint)
    try:
        for n, h in enumerate(hits):
            if before_each is not None:
                before_each(n)
            sock.send_multipart(h.encode())
        wait_for(lambda: {h.hit_id for h in hits} <= {r[0] for r in site.stored()}, 15,
                 f"{site.agency} storing the hits of {node}")
    finally:
        sock.close()


def test_a_shared_list_flows_to_the_partner_and_its_hits_back_to_the_owner(world, tmp_path):
    sites, nats = world["sites"], world["nats"]
    lt, pl, lv = sites[LT], sites[PL], sites[LV]
    store = pl.lists()
    store.import_entries("stolen-pl", [Entry(0, PLATE, "stolen-pl", "KWP Białystok",
                                             "stolen_vehicle", priority=1, reason="stolen")])
    store.import_entries("internal", [Entry(0, "XX999", "internal", "KWP", "case")])
    store.close()
    # pl-sg's list reaches lt-vsat's collector; `internal` never, and lv-vp gets nothing.
    wait_for(lambda: SHARED in lt.active_lists(), 10, "pl-sg's list at lt-vsat's collector")
    assert lt.active_lists() == {SHARED} and lv.active_lists() == set()

    # ...and from it lt-vsat's edge, whose camera then reads the listed plate.
    booth = Booth()
    edge = _edge(tmp_path, lt, booth)
    edge.start()
    try:
        assert _edge_matches(edge) == [SHARED]
        wait_for(lambda: pl.stored(), 15, "the edge's hit at pl-sg")
        booth.leave.set()  # the car drives off: the pass's event completes the hit
        wait_for(lambda: pl.revisions() == [1], 15, "the completed hit at pl-sg")
        [(hit_id, _, camera_agency, list_agency)] = lt.stored()
        assert (camera_agency, list_agency) == (LT, PL)
        assert pl.stored() == [(hit_id, "stolen-pl", LT, PL)]
        assert lv.stored() == []
        # Operators: lt-vsat's (its camera) and pl-sg's (its list) see it; lv-vp's do not.
        assert _plates(lt.operator()) == [hit_id]
        assert _plates(pl.operator()) == [hit_id]
        assert _plates(lv.operator()) == []
        got = world["hook"].wait(2)  # pl-sg's own system: a 503, then delivered, signed
        assert [r.status for r in got][:2] == [503, 200] and all(r.signed for r in got)
        assert {r.doc["hit_id"] for r in got} == {hit_id}
        mail = world["box"].wait(1)  # lt-vsat's duty officer: a P1 hit at its camera
        assert PLATE in mail[0].content.decode(errors="replace")

        # NATS killed while hits flow from another node: each stored at pl-sg once.
        more = [make_hit(n, node="lt-kalvarija-2", priority=3) for n in range(10)]
        more = [dataclasses.replace(h, match=dataclasses.replace(h.match, watchlist=SHARED))
                for h in more]
        _send(lt, "lt-kalvarija-2", more, lambda n: nats.kill() if n == 5 else None)
        nats.start()
        want = sorted([hit_id] + [h.hit_id for h in more])
        wait_for(lambda: sorted(r[0] for r in pl.stored()) == want, 30,
                 "every hit at pl-sg after NATS came back")
        assert sorted(r[0] for r in pl.stored()) == want  # none twice

        # pl-sg expires the entry: lt-vsat's edge stops matching it.
        store = pl.lists()
        store.expire([e.id for e in store.entries("stolen-pl")])
        store.close()
        wait_for(lambda: _edge_matches(edge) == [], 20, "the expiry at lt-vsat's edge")

        # The agreement revoked (its file removed): lt-vsat's copy is gone, from its
        # collector and from its edge.
        (world["agreements"] / "lt-vsat--pl-sg.yaml").unlink()
        wait_for(lambda: SHARED not in lt.active_lists(), 10, "the copy gone at lt-vsat")
        wait_for(lambda: SHARED not in edge.replica.policies(), 20, "the copy gone at the edge")
        assert edge.replica.count(SHARED) == 0
    finally:
        edge.stop()
        booth.close()
