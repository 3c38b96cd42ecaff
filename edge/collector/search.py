"""The collector's search of the nodes' reads: a signed query out, the answers streamed back.

The reads stay on the nodes; a search sends them the question (`edge.core.search`,
signed with the collector's search key) over each node's CURVE link, and each node
answers with what it holds.  `Searches.begin` asks every node the investigator's agency
may search (its own, and partners' whose agreement grants search) and returns a `Search`
whose events (`node` states, `reads`, `done`) a caller follows as they come.  A node not
connected is `offline` at once; one that has not finished answering within `timeout_s`
is `slow`; both are listed, and asked again when they return (`retry_offline`) or when
the investigator says so (`Searches.retry`).  The collector is a source of its own
(`COLLECTOR`, edge.collector.search_hits): a pass that hit a list is a hit the collector
holds, not a read left on a node, so a search also searches the hits in the agency's
scope, first, and streams them as the "collector" source's reads; a node's read of a pass
the collector holds as a hit (a node keeps none: it keeps a read only for a pass that hit
no list) is shown once, as the hit.  Every step goes to the audit trail: the
query (who, agency, case, basis, what, when, which nodes), what each node returned, the
retries, and (from the console) every read opened and every export.

Searches and their reads are held in memory, a bounded number (`keep`) and bytes of
crops (`max_crop_bytes`), the oldest settled searches forgotten first: the nodes keep
the reads, and the audit trail keeps what was asked and found.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import nacl.signing

from edge.collector.agreements import Agreements
from edge.collector.config import CollectorConfig
from edge.collector.search_hits import FoundHit, HitSearch, pass_key
from edge.collector.service import CollectorService
from edge.core.errors import ProtocolError
from edge.core.keys import KeyFileError, credentials_dir, load_signing_key
from edge.core.search import (
    SearchAnswer,
    SearchQuery,
    SearchRead,
    decode_answer,
    new_query_id,
    sign_query,
)
from edge.core.times import TimeOutOfRange, format_time, parse_iso, utc_now
from edge.core.watchlist.entry import FieldError, is_wildcard, parse_pattern

log = logging.getLogger(__name__)

# A node's state in a search: asked and not yet answering, answering, done (answered in
# full), refused (the node said no, and why), offline (not connected), slow (not done
# within the time-out).  The last four are settled; a late answer still counts.
ASKED, ANSWERING, DONE, REFUSED, OFFLINE, SLOW = (
    "asked", "answering", "done", "refused", "offline", "slow")  # fmt: skip
PENDING = (ASKED, ANSWERING)
COLLECTOR = "collector"  # the source of the collector's own hits (not a node: `source`)
# A partner agency whose collector is asked for its nodes over the exchange
# (edge.collector.exchange.search_relay): a row of its own, `source` PARTNER, named by the
# agency; asked, then done (its nodes, `via` it, are listed as they come), refused (the
# partner said no, and why), or unreachable (the exchange or the partner is away).
PARTNER = "partner"
UNREACHABLE = "unreachable"
MAX_CASE_REF = 128
MAX_BASIS = 500
_AUDIT_ROW = 1800  # characters of an audit row's detail (ConsoleDB keeps 2000)
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class SearchRefused(ValueError):
    """A search that cannot be asked (the message says why, for the investigator)."""


class Partners(Protocol):
    """The partners' part of a search (edge.collector.exchange.search_relay.SearchRelay)."""

    def partners_for(self, agency: str) -> list[str]: ...

    def ask(self, search: Search, partner: str, nodes: tuple[str, ...]) -> None: ...


class Audit(Protocol):
    """Where every step goes: `ConsoleDB.audit`."""

    def __call__(self, user: str, action: str, detail: str = "", address: str | None = None,
                 *, agency: str = "") -> None: ...  # fmt: skip


Send = Callable[[str, list[bytes]], bool]  # CollectorService.send_to_node
# The collector's hits for a query, an agency and the nodes asked (HitSearch.find).
FindHits = Callable[[SearchQuery, str, tuple[str, ...]], tuple[list[FoundHit], int]]


@dataclass(frozen=True)
class SearchRequest:
    """What an investigator asks: a plate over a time range, with a case and a legal basis.

    `pattern` as typed (normalised here); `mode` exact, wildcard (`?`, `*`) or fuzzy
    (`max_distance`, the watchlist distance); `nodes` empty: every node in scope."""

    pattern: str
    since: dt.datetime
    until: dt.datetime
    case_ref: str
    legal_basis: str
    mode: str = ""  # "": wildcard when the pattern has ? or *, else exact
    max_distance: float = 0.0
    cameras: tuple[str, ...] = ()
    area: tuple[float, float, float, float] | None = None
    nodes: tuple[str, ...] = ()
    retry_offline: bool = False  # ask offline and slow nodes again when they return
    max_rows: int = 1000  # per node


def parse_when(text: str, now: dt.datetime) -> dt.datetime:
    """'90s', '30m', '2h', '2d', '1w' before `now`, or an ISO 8601 time (UTC if no zone)."""
    m = _RELATIVE.match(text.strip())
    if m:
        return now - dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        return parse_iso(text.strip())
    except (TimeOutOfRange, ValueError):
        raise SearchRefused(f"{text[:40]!r} is neither a duration (30m, 2h, 2d) nor an ISO "
                            "8601 time") from None  # fmt: skip


def request_from_json(body: dict[str, Any], now: dt.datetime) -> SearchRequest:
    """A SearchRequest from the console's JSON (`plate`, `since`, `case_ref`, `legal_basis`;
    optional `until`, `mode`, `max_distance`, `cameras`, `area`, `nodes`, `retry_offline`,
    `max_rows`); SearchRefused says what is wrong."""

    def text(key: str, limit: int, default: str = "") -> str:
        value = body.get(key, default)
        if value is None:
            value = default
        if not isinstance(value, str) or len(value) > limit:
            raise SearchRefused(f"{key} must be text of at most {limit} characters")
        return value

    def names(key: str) -> tuple[str, ...]:
        value = body.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SearchRefused(f"{key} must be a list of names")
        return tuple(value)

    def number(key: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):  # fmt: skip
            raise SearchRefused(f"{key} must be a number")
        return float(value)

    area = body.get("area")
    if area is not None:
        if not isinstance(area, list) or len(area) != 4:
            raise SearchRefused("area must be [min_lat, min_lon, max_lat, max_lon]")
        area = tuple(number("area", v) for v in area)
    max_rows = body.get("max_rows", 1000)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise SearchRefused("max_rows must be a whole number of at least 1")
    since_text = text("since", 64)
    if not since_text:
        raise SearchRefused("say since when (since: 2d, or an ISO 8601 time)")
    until_text = text("until", 64)
    return SearchRequest(
        pattern=text("plate", 64), since=parse_when(since_text, now),
        until=parse_when(until_text, now) if until_text else now,
        case_ref=text("case_ref", MAX_CASE_REF), legal_basis=text("legal_basis", MAX_BASIS),
        mode=text("mode", 16), max_distance=number("max_distance", body.get("max_distance", 0)),
        cameras=names("cameras"), area=area, nodes=names("nodes"),  # type: ignore[arg-type]
        retry_offline=bool(body.get("retry_offline", False)), max_rows=max_rows,
    )  # fmt: skip


@dataclass
class NodeState:
    """One node's part in a search."""

    node: str
    agency: str
    state: str
    query_id: str = ""
    reads: int = 0  # reads received
    total: int = 0  # reads the node found (may exceed those sent)
    refused: str = ""
    retention_h: float = 0.0
    asked: int = 0  # times asked
    deadline: float = 0.0  # monotonic
    next_seq: int = 0
    late: bool = False  # answered after it was listed slow
    source: str = "node"  # or COLLECTOR: the collector's own hits, or PARTNER
    as_hits: int = 0  # reads left out: passes the collector holds as hits (shown as those)
    via: str = ""  # a partner's node: the partner whose collector asks it for us

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "source": self.source, "agency": self.agency,
                "via": self.via,
                "state": self.state, "as_hits": self.as_hits,
                "reads": self.reads, "total": self.total, "refused": self.refused,
                "retention_h": self.retention_h, "asked": self.asked,
                "late": self.late}  # fmt: skip


@dataclass(frozen=True)
class FoundRead:
    """A read a node returned, or a hit the collector holds (`source`), numbered in its
    search (`n`, from 0); `node` is where the pass was read either way."""

    n: int
    node: str
    agency: str
    read: SearchRead
    source: str = "node"  # or COLLECTOR
    hit_ids: tuple[str, ...] = ()  # the collector's: one per list the pass hit
    watchlists: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        r = self.read
        hit = ({"hit_ids": list(self.hit_ids), "watchlists": list(self.watchlists)}
               if self.source == COLLECTOR else {})  # fmt: skip
        return {"n": self.n, "source": self.source, **hit, "node": self.node,
                "agency": self.agency, "text": r.text,
                "formatted": r.formatted, "country": r.country, "confidence": r.confidence,
                "seen_at": format_time(r.seen_at), "camera": r.camera,
                "direction": r.direction, "vehicle_type": r.vehicle_type,
                "vehicle_colour": r.vehicle_colour, "lat": r.lat, "lon": r.lon,
                "crop": bool(r.crop_jpeg)}  # fmt: skip


@dataclass
class Search:
    """One search: what was asked, each node's state, the reads so far, and its events.

    Events are only appended (`events_after` follows them); each is a JSON object with
    `event`: `search` (first), `node` (a node's state changed), `reads` (a node's next
    reads), `done` (no node pending: per-node counts, offline and slow ones)."""

    id: str
    request: SearchRequest
    pattern: str
    mode: str
    user: str
    agency: str
    created: dt.datetime
    nodes: dict[str, NodeState]
    reads: list[FoundRead] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    crop_bytes: int = 0
    collector: NodeState | None = None  # the collector's own hits, where it searches them
    hit_passes: set[tuple[str, str, str, str]] = field(default_factory=set)
    partner_nodes: tuple[str, ...] = ()  # the nodes named for partners (empty: all granted)
    audit_agency: str = ""  # the agency its audit rows name ("": `agency`)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    @property
    def settled(self) -> bool:
        return not any(s.state in PENDING for s in self.nodes.values())

    def summary(self) -> dict[str, Any]:
        r = self.request
        return {"id": self.id, "pattern": self.pattern, "mode": self.mode,
                "max_distance": r.max_distance, "since": format_time(r.since),
                "until": format_time(r.until), "cameras": list(r.cameras),
                "area": None if r.area is None else list(r.area), "case_ref": r.case_ref,
                "legal_basis": r.legal_basis, "requested_by": self.user, "agency": self.agency,
                "created": format_time(self.created), "retry_offline": r.retry_offline,
                "nodes": [s.to_json() for s in self.nodes.values()],
                "collector": None if self.collector is None else self.collector.to_json(),
                }  # fmt: skip

    def counts(self) -> dict[str, Any]:
        """Reads per node, and the nodes offline, slow and refused; each partner's state."""
        states = [s for s in self.nodes.values() if s.source != PARTNER]
        partners = [s for s in self.nodes.values() if s.source == PARTNER]
        c = self.collector
        return {"collector": None if c is None else {"state": c.state, "reads": c.reads,
                                                      "found": c.total, "refused": c.refused},
                "reads": {s.node: s.reads for s in states if s.state == DONE},
                "found": {s.node: s.total for s in states if s.state == DONE},
                "offline": [s.node for s in states if s.state == OFFLINE],
                "slow": [s.node for s in states if s.state == SLOW],
                "pending": [s.node for s in states if s.state in PENDING],
                "refused": {s.node: s.refused for s in states if s.state == REFUSED},
                "partners": {s.node: {"state": s.state, "refused": s.refused, "nodes": s.total}
                             for s in partners},
                "unreachable": [s.node for s in partners if s.state == UNREACHABLE]}  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        with self._cond:
            return {"search": self.summary(), "settled": self.settled, "counts": self.counts(),
                    "reads": [f.to_json() for f in self.reads]}  # fmt: skip

    def events_after(self, n: int, timeout: float) -> tuple[list[dict[str, Any]], bool]:
        """The events from the `n`th on (waiting up to `timeout` for one), and whether the
        search is settled with nothing more to say after them."""
        with self._cond:
            if len(self.events) <= n:
                self._cond.wait(timeout)
            return self.events[n:], self.settled

    def _emit(self, event: dict[str, Any]) -> None:  # under _cond
        self.events.append(event)
        self._cond.notify_all()

    def _node_event(self, s: NodeState) -> None:
        self._emit({"event": "node", **s.to_json()})

    # For the partners' part (search_relay), under `lock`:
    emit, node_event = _emit, _node_event

    @property
    def lock(self) -> threading.Condition:
        return self._cond

    @property
    def audited_as(self) -> str:
        return self.audit_agency or self.agency


def known_nodes(db_path: Path) -> Callable[[], list[str]]:
    """The nodes of the collector's nodes table (`hits.db`), read when called."""

    def read() -> list[str]:
        try:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        except sqlite3.OperationalError:
            return []  # no database yet: no node heard
        try:
            return [r[0] for r in db.execute("SELECT node FROM nodes ORDER BY node")]
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

    return read


class Searches:
    """The searches of one collector: asked, followed, audited.

    `send(node, frames)` sends on the node's link (False: not connected); `nodes()` the
    nodes known; `agency_of_node` who owns each; `agreements()` those in force; `audit`
    where every step is written; `hits` searches the collector's own hits (None: it does
    not)."""

    def __init__(
        self,
        *,
        send: Send,
        signing_key: nacl.signing.SigningKey,
        nodes: Callable[[], Iterable[str]],
        agency_of_node: Callable[[str], str | None],
        agreements: Callable[[], Agreements] = Agreements.empty,
        audit: Audit | None = None,
        timeout_s: float = 10.0,
        keep: int = 50,
        max_crop_bytes: int = 256 * 1024 * 1024,
        max_rows: int = 1000,
        clock: Callable[[], dt.datetime] = utc_now,
        hits: FindHits | None = None,
    ):
        self._hits = hits
        self.closing: list[Callable[[], None]] = []  # called at stop (the hits' reader)
        self._send = send
        self._key = signing_key
        self._nodes = nodes
        self._agency_of_node = agency_of_node
        self._agreements = agreements
        self._audit = audit
        self.timeout_s = timeout_s
        self.keep = keep
        self.max_crop_bytes = max_crop_bytes
        self.max_rows = max_rows
        self._clock = clock
        self._lock = threading.Lock()
        self._searches: OrderedDict[str, Search] = OrderedDict()
        self._by_query: dict[str, Search] = {}
        self._returned: list[str] = []  # nodes heard again, for the worker to look at
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters: dict[str, int] = {"answers_refused": 0}
        self.partners: Partners | None = None  # partners' nodes over the exchange, if on

    # ------------------------------------------------------------ a collector component

    def start(self, ctx: object = None) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="search", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for close in self.closing:
            close()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ asking

    def scope(self, agency: str) -> list[tuple[str, str]]:
        """(node, owner) of each node `agency` may search, now: its own, and partners'
        whose agreement in force grants search of that node."""
        agreements = self._agreements()
        out = []
        for node in sorted(set(self._nodes())):
            owner = self._agency_of_node(node)
            if owner is not None and (owner == agency
                                      or agreements.may_search(agency, owner, node)):  # fmt: skip
                out.append((node, owner))
        return out

    def begin(self, request: SearchRequest, user: str, agency: str,
              address: str | None = None, *, own_hits: bool = True,
              audit_agency: str = "") -> Search:  # fmt: skip
        """Ask the nodes in scope; the audit has the query before any node is asked.
        Raises SearchRefused (nothing asked, the refusal audited) for a request that
        cannot be asked.  `own_hits` False: not the collector's hits (a partner's query);
        `audit_agency`: the agency its audit rows name (default `agency`)."""
        try:
            search = self._make(request, user, agency)
        except SearchRefused as e:
            self._write(user, "search refused", f"{e}; case {request.case_ref!r}", address,
                        audit_agency or agency)  # fmt: skip
            raise
        search.audit_agency = audit_agency
        agency = search.audited_as
        r = request
        head = (f"search {search.id}: case {r.case_ref!r}, basis {r.legal_basis!r}, "
                f"{search.mode} {search.pattern}"
                f"{f' (distance {r.max_distance})' if search.mode == 'fuzzy' else ''}, "
                f"{format_time(r.since)} to {format_time(r.until)}"
                f"{f', cameras {list(r.cameras)}' if r.cameras else ''}"
                f"{f', area {list(r.area)}' if r.area else ''}; nodes")  # fmt: skip
        self._write_packed(user, "search", head, [
            f"{n} (a partner: its nodes asked through its collector)" if s.source == PARTNER
            else n for n, s in search.nodes.items()], address, agency)  # fmt: skip
        with self._lock:
            self._searches[search.id] = search
            self._forget_old()
        with search._cond:
            search._emit({"event": "search", "search": search.summary()})
        if own_hits:  # first: a node's read of a pass held as a hit is left out
            self._search_hits(search)
        self._ask(search, [n for n, s in search.nodes.items() if s.source != PARTNER])
        self._ask_partners(search, [n for n, s in search.nodes.items() if s.source == PARTNER])
        return search

    def _ask_partners(self, search: Search, partners: list[str],
                      nodes: dict[str, tuple[str, ...]] | None = None) -> None:  # fmt: skip
        """Ask `partners` over the exchange (for `nodes[partner]`, else the search's)."""
        if self.partners is None:
            return
        deadline = time.monotonic() + self.timeout_s
        with search._cond:
            for p in partners:
                s = search.nodes[p]
                s.state, s.refused, s.deadline, s.asked = ASKED, "", deadline, s.asked + 1
                search._node_event(s)
        for p in partners:
            self.partners.ask(search, p, (nodes or {}).get(p, search.partner_nodes))
        self.wake()

    def wake(self) -> None:
        """A new deadline: the worker looks again."""
        with self._wake:
            self._wake.notify_all()

    def settle(self, search: Search) -> None:
        """`done` (and the counts audited) when no node and no partner is pending."""
        self._settle_check(search)

    def _search_hits(self, search: Search) -> None:
        """The collector's own hits for `search`: its `collector` source, done at once."""
        if self._hits is None:
            return
        r = search.request
        query = SearchQuery(
            query_id=new_query_id(), pattern=search.pattern, mode=search.mode,
            max_distance=r.max_distance, since=r.since, until=r.until,
            nodes=tuple(search.nodes), cameras=r.cameras, area=r.area, case_ref=r.case_ref,
            legal_basis=r.legal_basis, requested_by=search.user, agency=search.agency,
            max_rows=r.max_rows)  # fmt: skip
        s = NodeState(COLLECTOR, search.agency, ASKED, query_id=query.query_id, asked=1,
                      source=COLLECTOR)  # fmt: skip
        try:
            found, total = self._hits(query, search.agency, r.nodes)
        except Exception as e:  # a broken hits database: listed, and the nodes still asked
            log.exception("search %s: the collector's hits could not be searched", search.id)
            found, total = [], 0
            s.state, s.refused = REFUSED, f"failed: {type(e).__name__}"
        with search._cond:
            search.collector = s
            if found:
                reads = [FoundRead(len(search.reads) + i, f.node, f.agency, f.read, COLLECTOR,
                                   f.hit_ids, f.watchlists)
                         for i, f in enumerate(found)]  # fmt: skip
                search.reads.extend(reads)
                search.crop_bytes += sum(len(f.read.crop_jpeg) for f in found)
                search.hit_passes.update(_pass_of(f.node, f.read) for f in found)
                search._emit({"event": "reads", "node": COLLECTOR, "source": COLLECTOR,
                              "reads": [f.to_json() for f in reads]})  # fmt: skip
            if s.state != REFUSED:
                s.state, s.reads, s.total = DONE, len(found), total
            search._node_event(s)

    def _make(self, request: SearchRequest, user: str, agency: str) -> Search:
        r = request
        if not r.case_ref.strip():
            raise SearchRefused("a case reference is mandatory")
        if not r.legal_basis.strip():
            raise SearchRefused("a legal basis is mandatory")
        if len(r.case_ref) > MAX_CASE_REF or len(r.legal_basis) > MAX_BASIS:
            raise SearchRefused(f"a case reference is at most {MAX_CASE_REF} characters, a "
                                f"legal basis at most {MAX_BASIS}")  # fmt: skip
        try:
            pattern = parse_pattern(r.pattern)
        except FieldError as e:
            raise SearchRefused(f"plate: {e}") from None
        mode = r.mode or ("wildcard" if is_wildcard(pattern) else "exact")
        scope = dict(self.scope(agency))
        # Partners whose agreement grants us search: asked for their nodes over the
        # exchange (for those named here that are not ours, when some are named).
        partners = self.partners.partners_for(agency) if self.partners is not None else []
        partners = [p for p in partners if p not in scope]
        outside: list[str] = []
        if r.nodes:
            outside = [n for n in r.nodes if n not in scope]
            if outside and not partners:
                raise SearchRefused(f"not nodes {agency} may search: {', '.join(outside[:20])}")
            if not outside:
                partners = []
            scope = {n: scope[n] for n in r.nodes if n in scope}
        if not scope and not partners:
            raise SearchRefused(f"no node {agency} may search")
        search_id = new_query_id()
        try:  # checked as the nodes will check it
            SearchQuery(query_id=search_id, pattern=pattern, mode=mode,
                        max_distance=r.max_distance, since=r.since, until=r.until,
                        nodes=tuple(scope) or tuple(partners), cameras=r.cameras, area=r.area,
                        case_ref=r.case_ref, legal_basis=r.legal_basis, requested_by=user,
                        agency=agency, max_rows=r.max_rows)  # fmt: skip
        except ProtocolError as e:
            raise SearchRefused(e.detail) from None
        states = {n: NodeState(n, owner, ASKED) for n, owner in scope.items()}
        states.update({p: NodeState(p, p, ASKED, source=PARTNER) for p in partners})
        if r.max_rows > self.max_rows:
            r = replace(r, max_rows=self.max_rows)
        return Search(search_id, r, pattern, mode, user, agency, self._clock(), states,
                      partner_nodes=tuple(outside))  # fmt: skip

    def _ask(self, search: Search, nodes: list[str]) -> list[str]:
        """Send `search` to `nodes` (one signed query naming them all); those not connected
        are offline.  Returns the nodes it went to."""
        if not nodes:
            return []
        r = search.request
        query = SearchQuery(
            query_id=new_query_id(), pattern=search.pattern, mode=search.mode,
            max_distance=r.max_distance, since=r.since, until=r.until, nodes=tuple(nodes),
            cameras=r.cameras, area=r.area, case_ref=r.case_ref, legal_basis=r.legal_basis,
            requested_by=search.user, agency=search.agency, issued_at=self._clock(),
            max_rows=r.max_rows)  # fmt: skip
        frames = sign_query(query, self._key)
        with self._lock:
            self._by_query[query.query_id] = search
        with search._cond:
            for node in nodes:  # asked before sent: an answer may come before send returns
                s = search.nodes[node]
                s.state, s.query_id, s.next_seq, s.asked = ASKED, query.query_id, 0, s.asked + 1
                s.reads = s.total = 0
                s.refused, s.late = "", False
                s.deadline = time.monotonic() + self.timeout_s
        sent = []
        for node in nodes:
            ok = self._send(node, frames)
            with search._cond:
                s = search.nodes[node]
                if ok:
                    sent.append(node)
                elif s.state in PENDING and s.query_id == query.query_id:
                    s.state = OFFLINE
                search._node_event(s)
        self._settle_check(search)
        with self._wake:
            self._wake.notify_all()  # a new deadline
        return sent

    def retry(self, search_id: str, user: str, address: str | None = None,
              nodes: Iterable[str] | None = None) -> list[str]:  # fmt: skip
        """Ask again the nodes of the search that are offline or slow (or of those, `nodes`);
        returns those it went to.  Audited."""
        search = self.get(search_id)
        if search is None:
            raise KeyError(search_id)
        with search._cond:
            again = [s.node for s in search.nodes.values()
                     if s.state in (OFFLINE, SLOW, UNREACHABLE)]  # fmt: skip
            if nodes is not None:
                wanted = set(nodes)
                again = [n for n in again if n in wanted]
            local = [n for n in again if search.nodes[n].source != PARTNER
                     and not search.nodes[n].via]  # fmt: skip
            partners = [n for n in again if search.nodes[n].source == PARTNER]
            relayed: dict[str, tuple[str, ...]] = {}
            for n in again:  # a partner's nodes: asked again through it
                via = search.nodes[n].via
                if via and via not in partners:
                    relayed[via] = (*relayed.get(via, ()), n)
        if not again:
            return []
        self._write_packed(user, "search retry", f"search {search.id}: case "
                           f"{search.request.case_ref!r}; asked again", again, address,
                           search.audited_as)  # fmt: skip
        sent = self._ask(search, local)
        if self.partners is not None:
            self._ask_partners(search, partners + list(relayed), relayed)
            sent += partners + [n for ns in relayed.values() for n in ns]
        return sent

    def get(self, search_id: str) -> Search | None:
        with self._lock:
            return self._searches.get(search_id)

    # ------------------------------------------------------------ answers (receiver thread)

    def on_answer(self, node: str, frames: list[bytes]) -> None:
        """A node's answer chunk (`TAG_SEARCH_ANSWER` frames) from the link; quick."""
        try:
            answer = decode_answer(frames)
        except ProtocolError as e:
            self._refused_answer(node, f"{e.reason}: {e.detail}")
            return
        if answer.node != node:
            self._refused_answer(node, f"an answer claims to be from {answer.node!r}")
            return
        with self._lock:
            search = self._by_query.get(answer.query_id)
        if search is None:
            self._refused_answer(node, f"an answer to an unknown query {answer.query_id!r}")
            return
        self._take(search, node, answer)

    def _refused_answer(self, node: str, why: str) -> None:
        with self._lock:
            self.counters["answers_refused"] += 1
        log.warning("search: refused an answer from %s: %s", node, why)

    def _take(self, search: Search, node: str, answer: SearchAnswer) -> None:
        with search._cond:
            s = search.nodes.get(node)
            if (s is None or s.query_id != answer.query_id or answer.seq != s.next_seq
                    or s.state not in (*PENDING, SLOW)):  # fmt: skip
                turn = False  # a stale query's answer, out of order, or after the last
            else:
                turn, late = True, s.state == SLOW
                s.next_seq += 1
                s.retention_h = answer.retention_h
                fresh = [r for r in answer.reads
                         if _pass_of(node, r) not in search.hit_passes]  # fmt: skip
                s.as_hits += len(answer.reads) - len(fresh)
                if fresh:
                    found = [FoundRead(len(search.reads) + i, node, s.agency, r)
                             for i, r in enumerate(fresh)]  # fmt: skip
                    search.reads.extend(found)
                    search.crop_bytes += sum(len(r.crop_jpeg) for r in fresh)
                    s.reads += len(found)
                    search._emit({"event": "reads", "node": node,
                                  "reads": [f.to_json() for f in found]})  # fmt: skip
                if answer.refused:
                    s.state, s.refused = REFUSED, answer.refused
                elif answer.done:
                    s.state, s.total = DONE, answer.total
                elif s.state == ASKED:
                    s.state = ANSWERING
                s.late = late and s.state in (DONE, REFUSED)
                if s.state != ANSWERING or answer.seq == 0:
                    search._node_event(s)
        if not turn or s is None:
            self._refused_answer(node, f"an answer out of turn to {answer.query_id}")
            return
        if s.late:
            self._write(search.user, "search late answer",
                        f"search {search.id}: case {search.request.case_ref!r}; node {node} "
                        f"answered after the time-out: {self._node_line(s)}", None,
                        search.audited_as)  # fmt: skip
            with search._cond:
                search._emit({"event": "done", **search.counts()})
        else:
            self._settle_check(search)

    @staticmethod
    def _node_line(s: NodeState) -> str:
        if s.state == REFUSED:
            return f"refused ({s.refused})"
        if s.source == PARTNER:
            return f"a partner, {s.total} of its nodes asked through its collector"
        if s.source == COLLECTOR:
            return f"{s.reads} hits returned ({s.total} found)"
        shown = f", {s.as_hits} shown as the collector's hits" if s.as_hits else ""
        return f"{s.reads} reads returned ({s.total} found{shown})"

    def _settle_check(self, search: Search) -> None:
        """When no node is pending any more: the `done` event, and the counts audited."""
        with search._cond:
            if not search.settled or (search.events and search.events[-1]["event"] == "done"):
                return
            counts = search.counts()
            search._emit({"event": "done", **counts})
        lines = [f"{n}: {self._node_line(s)}" for n, s in search.nodes.items()
                 if s.state in (DONE, REFUSED)]  # fmt: skip
        if search.collector is not None:
            lines.insert(0, f"the collector's hits: {self._node_line(search.collector)}")
        lines += [f"{n}: offline" for n in counts["offline"]]
        lines += [f"{n}: slow (no answer within {self.timeout_s:g} s)" for n in counts["slow"]]
        lines += [f"{n}: partner unreachable ({search.nodes[n].refused})"
                  for n in counts["unreachable"]]  # fmt: skip
        self._write_packed(search.user, "search result", f"search {search.id}: case "
                           f"{search.request.case_ref!r}; {len(search.reads)} reads; nodes",
                           lines, None, search.audited_as)  # fmt: skip

    def node_connected(self, node: str) -> None:
        """`node` was heard on a new connection (receiver thread: only noted here)."""
        with self._wake:
            self._returned.append(node)
            self._wake.notify_all()

    # ------------------------------------------------------------ the worker

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                returned, self._returned = self._returned, []
                searches = list(self._searches.values())
            now = time.monotonic()
            nearest = now + 1.0
            for search in searches:
                with search._cond:
                    slow = []
                    for s in search.nodes.values():
                        if s.state in PENDING:
                            if s.deadline <= now and s.source == PARTNER:
                                s.state = UNREACHABLE  # the exchange, or the partner, away
                                s.refused = f"no answer within {self.timeout_s:g} s"
                                slow.append(s)
                            elif s.deadline <= now:
                                s.state = SLOW
                                slow.append(s)
                            else:
                                nearest = min(nearest, s.deadline)
                    for s in slow:
                        search._node_event(s)
                if slow:
                    self._settle_check(search)
            for node in dict.fromkeys(returned):
                for search in searches:
                    if not search.request.retry_offline:
                        continue
                    with search._cond:
                        due = node in search.nodes and search.nodes[node].state == OFFLINE
                    if due:
                        try:
                            self.retry(search.id, "system", nodes=[node])
                        except Exception:
                            log.exception("search: could not ask %s again", node)
            with self._wake:
                if not self._returned and not self._stop.is_set():
                    self._wake.wait(max(0.0, nearest - time.monotonic()))

    # ------------------------------------------------------------ keeping, audit

    def _forget_old(self) -> None:  # under _lock
        total = sum(s.crop_bytes for s in self._searches.values())
        while len(self._searches) > 1 and (len(self._searches) > self.keep
                                           or total > self.max_crop_bytes):  # fmt: skip
            oldest = next(iter(self._searches.values()))
            self._searches.pop(oldest.id)
            total -= oldest.crop_bytes
            for qid in [q for q, s in self._by_query.items() if s is oldest]:
                del self._by_query[qid]

    def _write(self, user: str, action: str, detail: str, address: str | None,
               agency: str) -> None:  # fmt: skip
        if self._audit is None:
            log.info("search audit: %s %s (%s): %s", user, action, agency, detail)
            return
        self._audit(user, action, detail, address, agency=agency)

    def _write_packed(self, user: str, action: str, head: str, items: list[str],
                      address: str | None, agency: str) -> None:  # fmt: skip
        """`head: item, item, ...` in as many audit rows as it takes (each whole)."""
        rows: list[list[str]] = [[]]
        size = len(head)
        for item in items:
            if rows[-1] and size + len(item) + 2 > _AUDIT_ROW:
                rows.append([])
                size = len(head) + 16
            rows[-1].append(item)
            size += len(item) + 2
        for i, part in enumerate(rows):
            more = f" ({i + 1} of {len(rows)})" if len(rows) > 1 else ""
            self._write(user, action, f"{head}{more}: {', '.join(part) or 'none'}", address,
                        agency)  # fmt: skip


def make_searches(service: CollectorService, config: CollectorConfig,
                  agreements: Callable[[], Agreements], audit: Audit | None) -> Searches | None:
    """The search of `service`'s collector, wired to its link (None where it is off, or the
    collector has no search signing key: logged)."""
    cfg = config.search
    if not cfg.enabled:
        return None
    try:
        key = load_signing_key(credentials_dir(config.credentials_dir), config.key_name)
    except KeyFileError as e:
        log.warning("search off: %s (make the pair with anpr-collector keygen, and copy "
                    "%s.verify to each node)", e, config.key_name)  # fmt: skip
        return None

    def nodes() -> set[str]:
        return set(known_nodes(config.db_path)()) | service.connected_nodes()

    hits = HitSearch(config.db_path, default_agency=config.default_agency,
                     agreements=agreements, agency_of_node=config.agency_of_node)  # fmt: skip
    searches = Searches(
        send=service.send_to_node, signing_key=key, nodes=nodes,
        agency_of_node=config.agency_of_node, agreements=agreements, audit=audit,
        timeout_s=cfg.timeout_s, keep=cfg.keep, max_crop_bytes=int(cfg.max_crop_mb * 1024**2),
        max_rows=cfg.max_rows, hits=hits.find,
    )  # fmt: skip
    searches.closing.append(hits.close)
    service.on_search_answer = searches.on_answer
    service.on_node_connected = searches.node_connected
    service.components.append(searches)
    return searches


def _pass_of(node: str, r: SearchRead) -> tuple[str, str, str, str]:
    return pass_key(node, r.camera, format_time(r.seen_at), r.text)


def event_line(event: dict[str, Any]) -> str:
    """An event as one line of NDJSON."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
