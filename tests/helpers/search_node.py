"""Helpers for the search tests and benchmark: reads in an outbox, signed queries, and a
collector's ROUTER on loopback that sends queries and gathers the answers."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.signing
import zmq

from edge.core.keys import load_keypair, make_curve_server, start_authenticator
from edge.core.link_protocol import TAG_HEARTBEAT, TAG_HIT_V3, Ack, decode
from edge.core.search import (
    TAG_SEARCH_ANSWER,
    SearchAnswer,
    SearchQuery,
    decode_answer,
    new_query_id,
    sign_query,
)
from edge.node.outbox import Outbox

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 3, 12, 0, tzinfo=UTC)  # "now" of the search tests


class FakeClock:
    """UNIX seconds that move only when told."""

    def __init__(self, t: dt.datetime = T0):
        self.t = t.timestamp()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def jpeg(n: int) -> bytes:
    return b"\xff\xd8\xff" + n.to_bytes(4, "big") * 8 + b"\xff\xd9"


def add_read(outbox: Outbox, plate: str, at: dt.datetime, camera: str = "cam-north",
             **details: object) -> int:  # fmt: skip
    """Keep a read of `plate` seen at `at`, as the node does for a pass that matched nothing."""
    row = outbox.record_read(
        camera, plate, seen_at=at, confidence=0.9, crop_jpeg=jpeg(int(at.timestamp())),
        details={"formatted": plate, "country": "DE", "direction": "northbound",
                 "vehicle_type": "car", "vehicle_colour": "blue", **details},
    )  # fmt: skip
    assert row is not None
    return row


def query(**kw: object) -> SearchQuery:
    base: dict[str, object] = dict(
        query_id=new_query_id(), pattern="B123XY", mode="exact", max_distance=0.0,
        since=T0 - dt.timedelta(days=2), until=T0, nodes=("edge1",), case_ref="CASE-17",
        legal_basis="StPO 163e", requested_by="ines", agency="de-police", issued_at=T0,
    )  # fmt: skip
    base.update(kw)
    return SearchQuery(**base)  # type: ignore[arg-type]


@dataclass
class CollectorPeer:
    """A collector's link socket (ROUTER, CURVE server) made in the test: it knows each
    node's identity from its messages, acks its hits, sends it queries, keeps answers."""

    sock: zmq.Socket
    auth: object
    endpoint: str
    signing_key: nacl.signing.SigningKey
    identities: dict[str, bytes] = field(default_factory=dict)
    answers: list[SearchAnswer] = field(default_factory=list)
    answer_times: list[float] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)
    heartbeats: int = 0

    def pump(self, timeout_ms: int = 20) -> None:
        """Take what has come in for up to `timeout_ms`."""
        if not self.sock.poll(timeout_ms):
            return
        while True:
            try:
                ident, *frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            tag = frames[0]
            if tag == TAG_SEARCH_ANSWER:
                self.answers.append(decode_answer(frames))
                self.answer_times.append(time.perf_counter())
            elif tag == TAG_HEARTBEAT:
                self.heartbeats += 1
                self.identities["edge1"] = ident
            elif tag == TAG_HIT_V3:
                hit = decode(frames)
                self.identities[hit.node] = ident
                self.hits.append(hit.hit_id)
                self.sock.send_multipart([ident, *Ack((hit.hit_id,)).encode()])

    def until(self, cond: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}")
            self.pump()

    def send(self, node: str, frames: list[bytes]) -> None:
        self.sock.send_multipart([self.identities[node], *frames])

    def ask(self, node: str, q: SearchQuery, key: nacl.signing.SigningKey | None = None) -> None:
        self.send(node, sign_query(q, key or self.signing_key))

    def answer(self, query_id: str, timeout: float = 10.0) -> list[SearchAnswer]:
        """The chunks of the answer to `query_id`, once its last has come."""

        def done() -> bool:
            return any(a.query_id == query_id and a.done for a in self.answers)

        self.until(done, timeout, f"the answer to {query_id}")
        return sorted((a for a in self.answers if a.query_id == query_id), key=lambda a: a.seq)

    def close(self) -> None:
        self.sock.close(linger=0)
        self.auth.stop()  # type: ignore[attr-defined]


def collector_peer(ctx: zmq.Context, keys: object, signing_key: nacl.signing.SigningKey
                   ) -> CollectorPeer:  # fmt: skip
    """A ROUTER with the collector's CURVE pair of `keys` (helpers.link.Keys), on loopback."""
    public, secret = load_keypair(keys.collector_dir, "collector")  # type: ignore[attr-defined]
    auth = start_authenticator(ctx, keys.allowed_dir)  # type: ignore[attr-defined]
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.router_mandatory = True
    make_curve_server(sock, public, secret)
    sock.bind("tcp://127.0.0.1:0")
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return CollectorPeer(sock, auth, endpoint, signing_key)
