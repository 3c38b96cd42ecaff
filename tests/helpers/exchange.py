"""Agencies exchanging over a real nats-server, for the exchange's tests.

`StandInGrants` has the method names of `edge.collector.agreements.Agreements` that the
exchange calls, over a list of grants the test changes as it goes; the lead swaps in
the real `Agreements` once the agreements module is merged.  `Agency` is one agency's
side: its master watchlist store, its hit store, its `Exchange`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fnmatch
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.collector.exchange.cameras import CameraShareSettings
from edge.collector.exchange.link import LinkSettings
from edge.collector.exchange.server_config import generate_nkey, render, routes, seed_file
from edge.collector.exchange.service import Exchange
from edge.collector.store import HitStore
from edge.core.link_protocol import HitMessage
from helpers.link import wait_for
from helpers.nats import MakeConfig, NatsServer, require_nats_server


@dataclass(frozen=True)
class StandInGrant:
    giver: str
    receiver: str
    lists: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    hits_back: bool = False
    cameras: tuple[str, ...] = ()
    search: bool = False
    agreement: str = "TEST-1"


@dataclass
class StandInGrants:
    """Grants in force, changed by the test (`Agreements`' method names, no validity times)."""

    agencies: dict[str, dict[str, str]]
    all: list[StandInGrant] = field(default_factory=list)

    def grants(self, giver: str, receiver: str, at: dt.datetime | None = None
               ) -> list[StandInGrant]:
        return [g for g in self.all if g.giver == giver and g.receiver == receiver]

    def list_granted(self, owner: str, list_name: str, receiver: str,
                     category: str | None = None, at: dt.datetime | None = None) -> bool:
        return any(any(fnmatch.fnmatchcase(list_name, p) for p in g.lists)
                   or (category is not None and category in g.categories)
                   for g in self.grants(owner, receiver))

    def hits_back(self, owner: str, list_name: str, receiver: str,
                  at: dt.datetime | None = None) -> bool:
        return any(g.hits_back and any(fnmatch.fnmatchcase(list_name, p) for p in g.lists)
                   for g in self.grants(owner, receiver))

    def sees_camera(self, viewer: str, owner: str, node: str, camera: str = "",
                    at: dt.datetime | None = None) -> bool:
        """As `Grant.covers_camera`: a NODE glob covers its cameras, NODE/CAMERA those."""
        return viewer == owner or any(
            fnmatch.fnmatchcase(f"{node}/{camera}" if "/" in glob else node, glob)
            for g in self.grants(owner, viewer) for glob in g.cameras)

    def partners(self, agency: str, at: dt.datetime | None = None) -> set[str]:
        return ({g.receiver for g in self.all if g.giver == agency}
                | {g.giver for g in self.all if g.receiver == agency})


def make_server_config(grants: StandInGrants, keys: dict[str, str]) -> MakeConfig:
    """The helper's config maker for the agencies' keys and the grants as they are now."""
    opened = routes(grants, keys)
    return lambda listen, http, store: render(keys, opened, store_dir=store, listen=listen,
                                              http=http)


class Agency:
    """One agency's collector, as far as the exchange goes."""

    def __init__(self, root: Path, name: str, url: str, grants: StandInGrants,
                 creds: Path, cameras: CameraShareSettings | None = None):
        """`cameras` (its hits_path is ignored: this agency's hits.db) shows partners our
        cameras as the grants say; None: only theirs are received."""
        self.name, self.root = name, root / name
        self.watchlists = self.root / "watchlists.db"
        self.hits = HitStore(self.root / "hits.db", agency_of_node=lambda node: name)
        self.lock = threading.Lock()
        self.committed: list[tuple[str, str]] = []  # (hit id, agency) as the sink was called
        self.exchange = Exchange(
            LinkSettings(agency=name, url=url, seed_file=seed_file(creds, name),
                         reconnect_wait_s=0.1, publish_timeout_s=2.0, ack_wait_s=3.0),
            db_path=self.root / "exchange.db", watchlists_path=self.watchlists,
            grants=lambda: grants, commit_hits=self.commit, poll_s=0.05,
            cameras=None if cameras is None else dataclasses.replace(
                cameras, hits_path=self.root / "hits.db"),
        )

    def commit(self, hits: Sequence[HitMessage], agency: str) -> None:
        """The stand-in of `HitStore.commit(hits, agency=agency)` on the writer thread."""
        with self.lock:
            self.hits.commit(hits, agency=agency)
            self.committed += [(h.hit_id, agency) for h in hits]

    def stored(self) -> list[tuple[str, str]]:
        """(hit id, watchlist) of the hits stored."""
        with self.lock:
            return [tuple(r) for r in self.hits.db.execute(  # type: ignore[misc]
                "SELECT hit_id, watchlist FROM hits ORDER BY rowid").fetchall()]

    def close(self) -> None:
        self.exchange.stop()
        self.hits.close()


@dataclass
class World:
    """A nats-server on loopback and one `Agency` (exchange) per agency, on its grants."""

    server: NatsServer
    grants: StandInGrants
    keys: dict[str, str]
    creds: Path
    agencies: dict[str, Agency]

    def regrant(self, *grants: StandInGrant, timeout: float = 5.0) -> None:
        """New grants in force: the server's config reloaded, each exchange told."""
        self.grants.all[:] = grants
        before = self.server.reloads()
        self.server.reload(make_server_config(self.grants, self.keys))
        wait_for(lambda: self.server.reloads() > before, timeout, "the server to reload")
        for a in self.agencies.values():
            a.exchange.agreements_changed()


@contextlib.contextmanager
def world_of(root: Path, names: Sequence[str], grants: Sequence[StandInGrant],
             **agency_kw: Any) -> Iterator[World]:
    """`names`' NKeys, a nats-server whose config opens `grants`, and their exchanges
    started (each `Agency(..., **agency_kw)`); all stopped afterwards."""
    require_nats_server()
    creds = root / "credentials"
    keys = {a: generate_nkey(creds, a) for a in names}
    stand_in = StandInGrants({a: {"name": a} for a in keys}, list(grants))
    server = NatsServer(root / "nats", make_server_config(stand_in, keys)).start()
    agencies: dict[str, Agency] = {}
    try:
        for name in names:
            agencies[name] = Agency(root, name, server.url, stand_in, creds, **agency_kw)
        for a in agencies.values():
            a.exchange.start()
        yield World(server, stand_in, keys, creds, agencies)
    finally:
        for a in agencies.values():
            a.close()
        server.stop()
