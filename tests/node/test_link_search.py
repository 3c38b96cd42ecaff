"""The search over the link: a collector's ROUTER (CURVE, on loopback, made here) sends signed
queries to the node's sender and takes the answers, while hits and heartbeats go on."""

from __future__ import annotations

import datetime as dt
import threading

import nacl.signing
from helpers.link import Keys, make_hit
from helpers.search_node import T0, FakeClock, add_read, collector_peer, query

from edge.core.search import SearchQuery, SearchRead
from edge.node.outbox import Outbox
from edge.node.search import ReadSearch, SearchWorker
from edge.node.sender import HitSender

KEY = nacl.signing.SigningKey(b"\x09" * 32)
OTHER = nacl.signing.SigningKey(b"\x0a" * 32)


class HeldSearch(ReadSearch):
    """A search that waits for the test's word before it answers: a slow disk."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.started = threading.Event()
        self.go = threading.Event()

    def find(self, q: SearchQuery) -> tuple[list[SearchRead], int]:
        self.started.set()
        assert self.go.wait(10)
        return super().find(q)


def _node(tmp_path, keys: Keys, ctx, endpoint: str, search_cls=ReadSearch, with_search=True):
    clock = FakeClock(T0)
    outbox = Outbox(tmp_path / "edge" / "outbox.db", clock=clock)
    for i in range(250):
        add_read(outbox, "B123XY" if i % 2 else "K77AA", T0 - (i + 1) * dt.timedelta(minutes=4))
    search = search_cls(outbox.path, retention_s=outbox.retention_s, clock=clock)
    worker = SearchWorker(search, node_id="edge1", verify_key=KEY.verify_key, clock=clock)
    public, secret = keys.edge("edge1")
    sender = HitSender(outbox, endpoint, node_id="edge1", public_key=public, secret_key=secret,
                       server_key=keys.server_public, ctx=ctx, heartbeat_s=0.05,
                       reconnect_max_s=0.2, search=worker if with_search else None)  # fmt: skip
    return outbox, search, worker, sender


def test_a_query_over_the_link_is_answered_in_chunks(tmp_path, keys, ctx):
    peer = collector_peer(ctx, keys, KEY)
    outbox, search, worker, sender = _node(tmp_path, keys, ctx, peer.endpoint)
    worker.start()
    sender.start()
    try:
        peer.until(lambda: "edge1" in peer.identities, what="the node's first heartbeat")
        q = query()
        peer.ask("edge1", q)
        parts = peer.answer(q.query_id)
        assert [len(p.reads) for p in parts] == [125] and parts[0].total == 125
        assert {r.text for r in parts[0].reads} == {"B123XY"}
        assert parts[0].reads[0].crop_jpeg.startswith(b"\xff\xd8\xff")
        # wildcard and fuzzy the same way
        w = query(mode="wildcard", pattern="K7?AA")
        peer.ask("edge1", w)
        assert peer.answer(w.query_id)[-1].total == 125
        assert sender.stats.queries == 2 and sender.stats.answers_sent == 2
    finally:
        sender.stop()
        worker.stop()
        search.close()
        outbox.close()
        peer.close()


def test_a_forged_query_is_refused_over_the_link(tmp_path, keys, ctx):
    peer = collector_peer(ctx, keys, KEY)
    outbox, search, worker, sender = _node(tmp_path, keys, ctx, peer.endpoint)
    worker.start()
    sender.start()
    try:
        peer.until(lambda: "edge1" in peer.identities, what="the node's first heartbeat")
        q = query()
        peer.ask("edge1", q, key=OTHER)
        (answer,) = peer.answer(q.query_id)
        assert answer.refused.startswith("forged") and not answer.reads
        # not for this node, over the link too; and the real one still answered
        other = query(nodes=("edge2",))
        peer.ask("edge1", other)
        assert peer.answer(other.query_id)[0].refused == "not for this node"
        peer.answers.clear()
        peer.ask("edge1", q)
        assert peer.answer(q.query_id)[-1].total == 125
    finally:
        sender.stop()
        worker.stop()
        search.close()
        outbox.close()
        peer.close()


def test_hits_and_heartbeats_go_on_while_a_search_is_slow(tmp_path, keys, ctx):
    peer = collector_peer(ctx, keys, KEY)
    outbox, search, worker, sender = _node(tmp_path, keys, ctx, peer.endpoint, HeldSearch)
    worker.start()
    sender.start()
    try:
        peer.until(lambda: "edge1" in peer.identities, what="the node's first heartbeat")
        q = query()
        peer.ask("edge1", q)
        assert search.started.wait(10)  # the worker is stuck in the search now
        beats = peer.heartbeats
        for n in range(20):
            outbox.add_hit(make_hit(n))
        peer.until(lambda: len(peer.hits) == 20, what="the hits, during the search")
        peer.until(lambda: peer.heartbeats >= beats + 3, what="heartbeats, during the search")
        peer.until(lambda: outbox.backlog() == 0, what="the acks")
        assert not peer.answers
        search.go.set()
        assert peer.answer(q.query_id)[-1].total == 125
    finally:
        search.go.set()
        sender.stop()
        worker.stop()
        search.close()
        outbox.close()
        peer.close()


def test_a_node_without_a_verify_key_refuses_queries(tmp_path, keys, ctx):
    peer = collector_peer(ctx, keys, KEY)
    outbox, search, worker, sender = _node(tmp_path, keys, ctx, peer.endpoint, with_search=False)
    sender.start()
    try:
        peer.until(lambda: "edge1" in peer.identities, what="the node's first heartbeat")
        q = query()
        peer.ask("edge1", q)
        (answer,) = peer.answer(q.query_id)
        assert answer.refused.startswith("unavailable")
    finally:
        sender.stop()
        search.close()
        outbox.close()
        peer.close()
