"""A search reaches a partner's nodes through the partner's collector, over the exchange.

A partner's nodes are connected to the partner's own collector and trust only its
search key, so our collector cannot ask them itself.  `SearchRelay` is both sides:

Asking (`Searches.partners`): a search asks, besides our nodes, each partner whose
agreement (our copy) grants our agency search of some of its nodes: one `RelayQuery`
(the query, the case and legal basis, who asked and their agency) published to the
partner's stream.  The partner is a row of the search (`source` "partner"): asked, then
done when its plan comes (the nodes it asks), refused (and why), or unreachable when the
exchange or the partner is away: a publish that fails at once, or no plan within the
search's time-out; the search never waits for it longer.  Its nodes join the search as
nodes of that partner (`via`), with the states a local node has (asked, answering,
done, refused, offline, slow); a node our own copy of the agreements does not grant is
left out whatever the partner says.  Asked again (`Searches.retry`) through the partner.

Answering (the exchange's `on_search`): a partner's query is checked against OUR
agreements (`may_search(asker, us, node)` for each of our nodes; none granted: refused,
and the refusal audited), then asked of our own nodes as a search of our own (`Searches.
begin`: signed with our search key, audited in our audit trail as the asker's user and
agency, case and basis, "asked over the exchange"), and its events streamed back: the
plan, each node's state, the reads in messages under nats-server's payload limit, their
crops too up to `max_crop_bytes` a query (beyond it, reads without crops).

Search messages are dropped, never dead-lettered, when malformed, and deleted from the
streams once taken (the exchange does that): the reads stay on the nodes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from edge.collector.agreements import Agreements
from edge.collector.config import CollectorConfig
from edge.collector.exchange.search_wire import (
    ANSWER_KIND,
    MAX_ANSWER_BODY,
    MAX_READS,
    QUERY_KIND,
    AnswerHeader,
    NodeReport,
    RelayAnswer,
    RelayQuery,
    decode_answer,
    decode_query,
    encode_answer,
    encode_query,
    read_header,
)
from edge.collector.exchange.server_config import inbox_subject
from edge.collector.search import (
    ANSWERING,
    ASKED,
    DONE,
    OFFLINE,
    PENDING,
    REFUSED,
    SLOW,
    UNREACHABLE,
    Audit,
    FoundRead,
    NodeState,
    Search,
    Searches,
    SearchRefused,
    SearchRequest,
)
from edge.collector.service import CollectorService
from edge.core.errors import ProtocolError
from edge.core.search import MAX_AGE_S, MAX_AHEAD_S, SearchRead, new_query_id
from edge.core.times import format_time, utc_now

log = logging.getLogger(__name__)

MAX_CROP_BYTES = 32 * 1024 * 1024  # crops sent for one partner's query, at most
MAX_SERVING = 8  # partners' queries answered at once (more: refused, "busy")
_KEEP_ASKED = 2000  # our queries to partners remembered (their answers matched to them)
_MESSAGE_ROOM = MAX_ANSWER_BODY - 16 * 1024  # what an answer message fills, headers aside
_FINAL = (DONE, REFUSED, OFFLINE)


class Publisher(Protocol):
    """What the relay needs of the exchange (`edge.collector.exchange.service.Exchange`)."""

    me: str
    on_search: Callable[[str, str, bytes], None] | None

    def publish_now(self, subject: str, body: bytes,
                    msg_id: str) -> concurrent.futures.Future[bool]: ...  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RelaySettings:
    timeout_s: float = 10.0  # a partner with no plan within this is unreachable
    max_crop_bytes: int = MAX_CROP_BYTES
    max_serving: int = MAX_SERVING
    publish_timeout_s: float = 10.0


class SearchRelay:
    """Our searches' partners, and partners' searches of our nodes.  A collector
    component: `start()` hooks it to the exchange (`exchange()`, None while it is off)."""

    def __init__(self, searches: Searches, exchange: Callable[[], Publisher | None],
                 agreements: Callable[[], Agreements], *, served: Callable[[str], bool],
                 audit: Audit | None = None, settings: RelaySettings | None = None):  # fmt: skip
        self.searches = searches
        self._exchange = exchange
        self._agreements = agreements
        self._served = served  # an agency this collector serves: its nodes are ours
        self._audit = audit
        self.settings = settings or RelaySettings(timeout_s=searches.timeout_s)
        self._lock = threading.Lock()
        self._asked: OrderedDict[str, tuple[Search, str]] = OrderedDict()  # query id ->
        self._crops: dict[str, int] = {}  # crop bytes taken per query id of ours
        self._queries: queue.Queue[tuple[str, bytes] | None] = queue.Queue(256)
        self._serving = threading.BoundedSemaphore(self.settings.max_serving)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------ a collector component

    def start(self, ctx: object = None) -> None:
        self._stop.clear()
        ex = self._exchange()
        if ex is not None:
            ex.on_search = self.on_message
        worker = threading.Thread(target=self._serve_loop, name="search-relay", daemon=True)
        worker.start()
        self._threads = [worker]

    def stop(self) -> None:
        ex = self._exchange()
        if ex is not None:
            ex.on_search = None
        self._stop.set()
        self._queries.put(None)
        for t in list(self._threads):
            t.join(10)
        self._threads = []

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    # ------------------------------------------------------------ asking a partner

    def partners_for(self, agency: str) -> list[str]:
        """The partners whose agreement (our copy, in force) grants `agency` search of
        some of their nodes; none unless the exchange is on and speaks for `agency`."""
        ex = self._exchange()
        if ex is None or ex.me != agency:
            return []
        agreements = self._agreements()
        return sorted(p for p in agreements.partners(agency)
                      if p != agency and not self._served(p)
                      and any(g.search for g in agreements.grants(p, agency)))  # fmt: skip

    def ask(self, search: Search, partner: str, nodes: tuple[str, ...]) -> None:
        """Publish `search` to `partner` (for `nodes`, or all it grants); never waits on it."""
        qid = new_query_id()
        with self._lock:
            self._asked[qid] = (search, partner)
            while len(self._asked) > _KEEP_ASKED:
                old, _ = self._asked.popitem(last=False)
                self._crops.pop(old, None)
        with search.lock:
            search.nodes[partner].query_id = qid
        ex = self._exchange()
        if ex is None:
            self._unreachable(search, partner, qid, "the exchange is off")
            return
        r = search.request
        try:
            body = encode_query(RelayQuery(
                id=qid, agency=search.agency, requested_by=search.user[:30],
                case_ref=r.case_ref, legal_basis=r.legal_basis, pattern=search.pattern,
                mode=search.mode, max_distance=r.max_distance,  # type: ignore[arg-type]
                since=r.since, until=r.until,
                issued_at=utc_now(), nodes=nodes, cameras=r.cameras, area=r.area,
                max_rows=r.max_rows))  # fmt: skip
        except ValueError as e:  # pydantic's ValidationError is one
            self._unreachable(search, partner, qid, f"not sent: {str(e)[:150]}")
            return
        sent = ex.publish_now(inbox_subject(partner, ex.me, QUERY_KIND), body, f"search:{qid}")
        sent.add_done_callback(lambda f: self._sent(search, partner, qid, f))

    def _sent(self, search: Search, partner: str, qid: str,
              sent: concurrent.futures.Future[bool]) -> None:  # fmt: skip
        e = sent.exception()
        if e is not None:
            self._unreachable(search, partner, qid, str(e)[:200] or type(e).__name__)

    def _unreachable(self, search: Search, partner: str, qid: str, why: str) -> None:
        with search.lock:
            p = search.nodes[partner]
            if p.query_id != qid or p.state not in PENDING:
                return
            p.state, p.refused = UNREACHABLE, why
            search.node_event(p)
        log.info("search %s: partner %s unreachable: %s", search.id, partner, why)
        self.searches.settle(search)

    # ------------------------------------------------------------ a partner's answers

    def on_message(self, sender: str, kind: str, body: bytes) -> None:
        """A search message from the exchange (its store worker's thread: quick)."""
        if kind == QUERY_KIND:
            try:
                self._queries.put_nowait((sender, body))
            except queue.Full:
                self._count("queries dropped")
                log.warning("search relay: too many queries waiting; one of %s dropped", sender)
        elif kind == ANSWER_KIND:
            self._answer(sender, body)

    def _answer(self, sender: str, body: bytes) -> None:
        try:
            answer = decode_answer(body)
        except ProtocolError as e:
            self._count("answers refused")
            log.warning("search relay: an answer of %s dropped: %s: %s", sender, e.reason,
                        e.detail)  # fmt: skip
            return
        with self._lock:
            asked = self._asked.get(answer.id)
        if asked is None or asked[1] != sender:
            self._count("answers unknown")
            return
        search, partner = asked
        agreements = self._agreements()
        with search.lock:
            if answer.event == "plan":
                self._plan(search, partner, answer, agreements)
            elif answer.event == "node":
                for report in answer.header.nodes:
                    self._node(search, partner, answer.id, report, agreements, plan=False)
            elif answer.event == "reads":
                self._reads(search, partner, answer)
        self.searches.settle(search)

    def _plan(self, search: Search, partner: str, answer: RelayAnswer,
              agreements: Agreements) -> None:  # fmt: skip
        p = search.nodes[partner]
        if p.query_id != answer.id:
            return  # asked again since
        if answer.header.refused:
            p.state, p.refused = REFUSED, answer.header.refused
        else:
            taken = [self._node(search, partner, answer.id, r, agreements, plan=True)
                     for r in answer.header.nodes]  # fmt: skip
            p.state, p.refused, p.total = DONE, "", sum(taken)
        search.node_event(p)
        self.searches.wake()  # its nodes' deadlines

    def _node(self, search: Search, partner: str, qid: str, report: NodeReport,
              agreements: Agreements, *, plan: bool) -> bool:  # fmt: skip
        """Take the partner's word on one of its nodes (under the search's lock)."""
        node = report.node
        if not agreements.may_search(search.agency, partner, node):
            self._count("nodes not granted here")
            log.warning("search %s: %s lists its node %s, which our agreements do not grant "
                        "%s search of: left out", search.id, partner, node, search.agency)
            return False
        s = search.nodes.get(node)
        if s is None:
            s = search.nodes[node] = NodeState(node, partner, ASKED, via=partner)
        elif s.via != partner:
            log.warning("search %s: %s's node %s has the name of one of ours: left out",
                        search.id, partner, node)  # fmt: skip
            return False
        if plan and s.query_id != qid:  # asked (again) by this query
            s.state, s.query_id, s.next_seq, s.asked = ASKED, qid, 0, s.asked + 1
            s.reads = s.total = 0
            s.refused, s.late = "", False
            s.deadline = time.monotonic() + self.settings.timeout_s
        if s.query_id != qid:
            return False
        state = report.state
        if s.state in (DONE, REFUSED) and state not in (DONE, REFUSED):
            return True  # no going back
        late = s.state == SLOW and state in (DONE, REFUSED)
        if state in PENDING:
            if s.state in PENDING:
                s.state = state
        else:
            s.state = state
        s.total, s.refused, s.retention_h = report.total, report.refused, report.retention_h
        s.late = late
        search.node_event(s)
        if late:
            search.emit({"event": "done", **search.counts()})
        return True

    def _reads(self, search: Search, partner: str, answer: RelayAnswer) -> None:
        node = answer.header.node
        s = search.nodes.get(node or "")
        if (s is None or s.via != partner or s.query_id != answer.id
                or answer.header.seq != s.next_seq or s.state not in (*PENDING, SLOW)):  # fmt: skip
            self._count("reads out of turn")
            return
        assert node is not None
        s.next_seq += 1
        reads = self._bounded(answer.id, answer.reads)
        found = [FoundRead(len(search.reads) + i, node, partner, r) for i, r in enumerate(reads)]
        search.reads.extend(found)
        search.crop_bytes += sum(len(r.crop_jpeg) for r in reads)
        s.reads += len(found)
        if found:
            search.emit({"event": "reads", "node": node, "via": partner,
                         "reads": [f.to_json() for f in found]})  # fmt: skip
        if s.state == ASKED:
            s.state = ANSWERING
            search.node_event(s)

    def _bounded(self, qid: str, reads: Sequence[SearchRead]) -> list[SearchRead]:
        """`reads`, their crops while this query's crops stay within max_crop_bytes."""
        out = []
        with self._lock:
            used = self._crops.get(qid, 0)
            for r in reads:
                if r.crop_jpeg and used + len(r.crop_jpeg) > self.settings.max_crop_bytes:
                    r = dataclasses.replace(r, crop_jpeg=b"")
                used += len(r.crop_jpeg)
                out.append(r)
            self._crops[qid] = used
        return out

    # ------------------------------------------------------------ a partner asks us

    def _serve_loop(self) -> None:
        while not self._stop.is_set():
            item = self._queries.get()
            if item is None:
                return
            try:
                self._serve(*item)
            except Exception:
                log.exception("search relay: a query of %s not answered", item[0])

    def _serve(self, sender: str, body: bytes) -> None:
        ex = self._exchange()
        if ex is None:
            return
        try:
            q = decode_query(body)
        except ProtocolError as e:
            self._count("queries refused")
            log.warning("search relay: a query of %s dropped: %s: %s", sender, e.reason,
                        e.detail)  # fmt: skip
            return
        if q.agency != sender:  # the subject names the sender's account: NATS vouches for it
            self._count("queries refused")
            log.warning("search relay: %s sent a query in the name of %s: dropped", sender,
                        q.agency)  # fmt: skip
            return
        me, user, where = ex.me, f"{sender}:{q.requested_by}", f"exchange:{sender}"
        what = (f"asked by {sender} over the exchange: case {q.case_ref!r}, basis "
                f"{q.legal_basis!r}, {q.mode} {q.pattern}, {format_time(q.since)} to "
                f"{format_time(q.until)}")  # fmt: skip
        age = (utc_now() - q.issued_at).total_seconds()
        if age > MAX_AGE_S or -age > MAX_AHEAD_S:
            self._refuse(ex, sender, q, user, where, what, f"expired: issued {age:.0f} s ago")
            return
        granted = [n for n, owner in self.searches.scope(sender) if owner == me]
        if q.nodes:
            wanted = set(q.nodes)
            granted = [n for n in granted if n in wanted]
        if not granted:  # which of our nodes exist is not said to a partner not granted them
            self._refuse(ex, sender, q, user, where, what,
                         f"no agreement of {me} in force grants {sender} search of "
                         f"{'the nodes named' if q.nodes else 'its nodes'}")  # fmt: skip
            return
        if not self._serving.acquire(blocking=False):
            self._refuse(ex, sender, q, user, where, what, f"{me} is busy with other "
                         "partners' searches; ask again shortly")  # fmt: skip
            return
        try:
            search = self.searches.begin(SearchRequest(
                pattern=q.pattern, since=q.since, until=q.until, case_ref=q.case_ref,
                legal_basis=q.legal_basis, mode=q.mode, max_distance=q.max_distance,
                cameras=q.cameras, area=q.area, nodes=tuple(granted), max_rows=q.max_rows,
            ), user, sender, where, own_hits=False, audit_agency=me)  # fmt: skip
        except SearchRefused as e:  # audited by begin
            self._serving.release()
            self._publish(ex, sender, AnswerHeader(id=q.id, event="plan",
                                                   refused=str(e)[:200] or "refused"))
            return
        except BaseException:
            self._serving.release()
            raise
        t = threading.Thread(target=self._follow, args=(ex, sender, q.id, search),
                             name=f"search-relay-{sender}", daemon=True)  # fmt: skip
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _refuse(self, ex: Publisher, sender: str, q: RelayQuery, user: str, where: str,
                what: str, why: str) -> None:  # fmt: skip
        self._count("queries refused")
        detail = f"{what}: refused: {why}"
        if self._audit is None:
            log.info("search audit: %s search refused (%s): %s", user, ex.me, detail)
        else:
            self._audit(user, "search refused", detail, where, agency=ex.me)
        self._publish(ex, sender, AnswerHeader(id=q.id, event="plan", refused=why[:200]))

    def _publish(self, ex: Publisher, to: str, header: AnswerHeader,
                 crops: Sequence[bytes] = ()) -> bool:  # fmt: skip
        body = encode_answer(header, crops)
        msg_id = f"search-answer:{header.id}:{new_query_id()}"
        try:
            ex.publish_now(inbox_subject(to, ex.me, ANSWER_KIND), body, msg_id).result(
                self.settings.publish_timeout_s + 1)
        except Exception as e:  # noqa: BLE001 -- the asker or the exchange away
            self._count("answers not sent")
            log.warning("search relay: an answer to %s not sent: %s", to, e)
            return False
        return True

    def _follow(self, ex: Publisher, to: str, qid: str, search: Search) -> None:
        """Stream `search`'s events to the asker, until every node is final, or settled
        and no late answer within the time-out."""
        try:
            self._follow_events(ex, to, qid, search)
        finally:
            self._serving.release()

    def _follow_events(self, ex: Publisher, to: str, qid: str, search: Search) -> None:
        with search.lock:  # asked: their states follow, as the events replayed say
            plan = [NodeReport(node=s.node, state="asked") for s in search.nodes.values()]
        if not self._publish(ex, to, AnswerHeader(id=qid, event="plan", nodes=tuple(plan))):
            return
        seqs: dict[str, int] = {}
        crops_left = [self.settings.max_crop_bytes]
        n, settled_at = 0, None
        give_up = time.monotonic() + 4 * self.settings.timeout_s + 30
        while not self._stop.is_set() and time.monotonic() < give_up:
            events, settled = search.events_after(n, 0.25)
            n += len(events)
            for e in events:
                if e["event"] == "node":  # the state it says, not the node's now
                    report = NodeReport(node=e["node"], state=e["state"], reads=e["reads"],
                                        total=e["total"], refused=e["refused"][:200],
                                        retention_h=e["retention_h"])  # fmt: skip
                    ok = self._publish(ex, to, AnswerHeader(id=qid, event="node",
                                                            nodes=(report,)))  # fmt: skip
                elif e["event"] == "reads":
                    with search.lock:
                        reads = [search.reads[r["n"]].read for r in e["reads"]]
                    ok = self._send_reads(ex, to, qid, e["node"], reads, seqs, crops_left)
                elif e["event"] == "done" and settled_at is None:
                    ok = self._publish(ex, to, AnswerHeader(id=qid, event="settled"))
                else:
                    ok = True
                if not ok:
                    return
            if settled and len(events) == 0:
                with search.lock:
                    final = all(s.state in _FINAL for s in search.nodes.values())
                if final:
                    return
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at > self.settings.timeout_s:
                    return  # slow nodes: their late answers waited for as long again

    def _send_reads(self, ex: Publisher, to: str, qid: str, node: str,
                    reads: Sequence[SearchRead], seqs: dict[str, int],
                    crops_left: list[int]) -> bool:  # fmt: skip
        """`reads` of `node` in messages under the payload limit, numbered per node."""
        group: list[SearchRead] = []
        crops: list[bytes] = []
        size = 0

        def flush() -> bool:
            if not group:
                return True
            seq = seqs.get(node, 0)
            seqs[node] = seq + 1
            header = AnswerHeader(id=qid, event="reads", node=node, seq=seq,
                                  reads=tuple(read_header(r) for r in group))  # fmt: skip
            ok = self._publish(ex, to, header, list(crops))
            group.clear()
            crops.clear()
            return ok

        for r in reads:
            crop = r.crop_jpeg if len(r.crop_jpeg) <= crops_left[0] else b""
            crops_left[0] -= len(crop)
            cost = len(crop) + 600  # a read's header is some 300 B of JSON
            if group and (size + cost > _MESSAGE_ROOM or len(group) >= MAX_READS):
                if not flush():
                    return False
                size = 0
            group.append(r)
            crops.append(crop)
            size += cost
        return flush()


def attach_relay(searches: Searches, service: CollectorService, config: CollectorConfig,
                 agreements: Callable[[], Agreements],
                 audit: Audit | None) -> SearchRelay | None:  # fmt: skip
    """The partners' part of `service`'s search, where the exchange is on (else None)."""
    if config.exchange is None:
        return None
    ours = {a.name for a in config.agencies}
    relay = SearchRelay(searches, lambda: service.exchange, agreements,
                        served=ours.__contains__, audit=audit)  # fmt: skip
    searches.partners = relay
    service.components.append(relay)  # after the search: started once the exchange runs
    return relay
