"""The edge's delivery loop: send the outbox's hits to the collector until each is acknowledged.

One thread owns one DEALER socket (CURVE client).  It keeps at most `window` hits in
flight, most urgent first; a hit leaves the outbox only when the collector's
ACK for it arrives, which the collector sends after its commit.  A hit whose ACK
does not come within the ack timeout is offered again, and the timeout doubles (to
`max_backoff_s`) while acknowledgements stay away.  With `immediate` set, ZeroMQ
queues nothing while no collector is connected, so an outage costs neither memory
nor a burst of stale duplicates when the link comes back.  A socket monitor tells
the loop when a connection to the collector completes: hits that were in flight
when the link broke are offered again at once, not after their ack timeout.
Heartbeats carry the edge's status every `heartbeat_s`.

The collector's search queries (edge.core.search) come in on the same socket: the loop
hands each to the search worker (edge.node.search) and sends the answer's chunks it
gives back, after the hits, never waiting for either; a node without a worker refuses
them.
"""

from __future__ import annotations

import errno
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq
from zmq.utils.monitor import recv_monitor_message

from edge.core.keys import make_curve_client
from edge.core.link_protocol import (
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    Ack,
    Heartbeat,
    Limits,
    ProtocolError,
    Reject,
    decode_message,
)
from edge.core.search import TAG_SEARCH, query_id_of, refusal
from edge.core.status import (
    Health,
    LinkStatus,
    NodeStatus,
    OutboxStatus,
    Problem,
    ProblemKind,
)
from edge.node.outbox import Outbox
from edge.node.search import FORGOTTEN_ANSWER_S, SearchWorker

log = logging.getLogger(__name__)

StatusCallback = Callable[[], NodeStatus]

_LINK_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)


@dataclass
class _InFlight:
    sent: float  # monotonic, when last sent


@dataclass
class SenderStats:
    sent: int = 0
    resent: int = 0
    acked: int = 0
    rejected: int = 0
    heartbeats: int = 0
    queries: int = 0  # search queries received
    answers_sent: int = 0  # answer chunks sent
    answers_dropped: int = 0  # chunks the link would not take within FORGOTTEN_ANSWER_S
    link_up: bool = False
    ack_ms: list[float] = field(default_factory=list, repr=False)  # send -> ack, recent ones


class HitSender:
    """Deliver `outbox`'s hits to the collector at `endpoint` ("tcp://host:port").

    `public_key`/`secret_key` are this node's CURVE pair and `server_key` the
    collector's public key (all Z85).  `status` is called for each heartbeat and
    returns the edge's status (cameras, fps, queue depth, model versions, config
    hash...); the sender puts in the outbox's figures and its own view of the link.
    Without `status` (or when it fails) a heartbeat says what the sender knows.
    `search` answers the collector's search queries (started and stopped by its owner);
    without it they are refused.
    """

    def __init__(
        self,
        outbox: Outbox,
        endpoint: str,
        *,
        node_id: str,
        public_key: bytes,
        secret_key: bytes,
        server_key: bytes,
        ctx: zmq.Context,
        status: StatusCallback | None = None,
        heartbeat_s: float = 10.0,
        window: int = 32,
        ack_timeout_s: float = 5.0,
        max_backoff_s: float = 60.0,
        link_retry_s: float = 0.25,
        reconnect_max_s: float = 5.0,
        purge_every_s: float = 60.0,
        protocol_version: int = PROTOCOL_VERSION,
        limits: Limits = DEFAULT_LIMITS,
        search: SearchWorker | None = None,
    ):
        self.outbox = outbox
        self.search = search
        self._answers: deque[tuple[float, list[bytes]]] = deque()  # (queued, frames)
        self.endpoint = endpoint
        self.node_id = node_id
        self._keys = (public_key, secret_key, server_key)
        self._ctx = ctx
        self._status = status
        self.heartbeat_s = heartbeat_s
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.max_backoff_s = max_backoff_s
        self.link_retry_s = link_retry_s
        self.reconnect_max_s = reconnect_max_s
        self.purge_every_s = purge_every_s
        self.protocol_version = protocol_version
        self.limits = limits
        self.stats = SenderStats()
        self._inflight: dict[str, _InFlight] = {}
        self._timeout = ack_timeout_s
        self._retry_at = 0.0
        self._last_ack: float | None = None  # monotonic time of the last ack
        self._seen_changes = -1
        self._may_have_more = True
        self._auth_failures = 0
        self._reconnect_at: float | None = None
        self._reconnect_wait = 1.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("sender already started")
        self.outbox.release_held()  # a restart (perhaps an upgrade) gives refused hits a new go
        self._thread = threading.Thread(target=self._run, name=f"hit-sender-{self.node_id}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("sender thread did not stop within %.1f s", timeout)
            self._thread = None

    @property
    def error(self) -> BaseException | None:
        """What stopped the loop, if it died."""
        return self._error

    def __enter__(self) -> HitSender:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the loop

    def _socket(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0  # whatever is unsent is still in the outbox
        sock.immediate = True
        sock.sndhwm = self.window + 16 + (64 if self.search is not None else 0)
        sock.rcvhwm = 1000
        sock.reconnect_ivl = 100
        sock.reconnect_ivl_max = max(100, int(self.reconnect_max_s * 1000))
        sock.maxmsgsize = 1024 * 1024  # acks are small; a rogue peer cannot flood memory
        make_curve_client(sock, *self._keys)
        sock.connect(self.endpoint)
        return sock

    def _run(self) -> None:
        sock = self._socket()
        monitor = sock.get_monitor_socket(_LINK_EVENTS)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        if self.search is not None:
            poller.register(self.search.wake_fd, zmq.POLLIN)
        next_heartbeat = time.monotonic()
        next_purge = time.monotonic() + self.purge_every_s
        log.info("sending hits to %s as %s", self.endpoint, self.node_id)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(50))
                if monitor in ready:
                    self._link_events(monitor)
                if sock in ready:
                    self._receive(sock)
                now = time.monotonic()
                if self._reconnect_at is not None and now >= self._reconnect_at:
                    self._reconnect(sock)
                self._expire(now)
                self._fill(sock, now)
                if self.search is not None and self.search.wake_fd in ready:
                    self.search.drain_wake()
                self._send_answers(sock, now)
                if now >= next_heartbeat:
                    self._heartbeat(sock)
                    next_heartbeat = now + self.heartbeat_s
                if now >= next_purge:
                    self.outbox.purge()
                    next_purge = now + self.purge_every_s
        except zmq.ContextTerminated:
            log.info("sender stopping: context terminated")
        except BaseException as e:
            self._error = e
            log.exception("sender loop died")
            raise
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)

    def _link_events(self, monitor: zmq.Socket) -> None:
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                log.info("connected to the collector at %s", self.endpoint)
                self.stats.link_up = True
                self._reconnect_at = None
                self._reconnect_wait = 1.0
                # What was in flight on the old connection is lost with it; offer it now.
                self._inflight.clear()
                self._may_have_more = True
                self._timeout = self.ack_timeout_s
                self._retry_at = 0.0
            elif event == zmq.EVENT_DISCONNECTED:
                if self.stats.link_up:
                    log.warning("lost the connection to the collector at %s", self.endpoint)
                self.stats.link_up = False
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.stats.link_up = False
                self._auth_failures += 1
                self._schedule_reconnect()
                if self._auth_failures == 1 or self._auth_failures % 100 == 0:
                    log.error(
                        "the collector at %s refused this node's key (%d times); is %s on its"
                        " allow-list?",
                        self.endpoint,
                        self._auth_failures,
                        self.node_id,
                    )
            elif event in (
                zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            ):
                self.stats.link_up = False
                log.warning("handshake with the collector at %s failed", self.endpoint)
                self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        # ZeroMQ does not try again after a failed handshake (a key not yet on the
        # allow-list, a collector with a new key): we do, backing off.
        self._reconnect_at = time.monotonic() + self._reconnect_wait * random.uniform(0.8, 1.2)
        self._reconnect_wait = min(self._reconnect_wait * 2, self.max_backoff_s)

    def _reconnect(self, sock: zmq.Socket) -> None:
        self._reconnect_at = None
        try:
            sock.disconnect(self.endpoint)
        except zmq.ZMQError as e:
            if e.errno != errno.ENOENT:  # ENOENT: ZeroMQ had already dropped the endpoint
                raise
        sock.connect(self.endpoint)
        log.info("connecting to the collector at %s again", self.endpoint)

    def _receive(self, sock: zmq.Socket) -> None:
        delivered: list[str] = []
        now = time.monotonic()
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if frames and frames[0] == TAG_SEARCH:
                self._query(frames)
                continue
            try:
                msg = decode_message(frames, self.limits)
            except ProtocolError as e:
                log.warning("ignoring a message from the collector: %s", e)
                continue
            if isinstance(msg, Ack):
                delivered.extend(msg.ids)
            elif isinstance(msg, Reject):
                self.stats.rejected += 1
                self._inflight.pop(msg.hit_id, None)
                self.outbox.hold(msg.hit_id, f"refused by the collector: {msg.reason}")
            else:
                log.warning("ignoring a %s from the collector", type(msg).__name__)
        if not delivered:
            return
        self.outbox.mark_delivered(*delivered)
        self._last_ack = now
        self._timeout = self.ack_timeout_s
        self._retry_at = 0.0
        self.stats.link_up = True
        for hit_id in delivered:
            entry = self._inflight.pop(hit_id, None)
            if entry is not None:
                self.stats.acked += 1
                self.stats.ack_ms.append((now - entry.sent) * 1000)
        if len(self.stats.ack_ms) > 10_000:
            del self.stats.ack_ms[:5_000]

    def _query(self, frames: list[bytes]) -> None:
        self.stats.queries += 1
        if self.search is not None:
            self.search.submit(frames)  # never blocks: a busy worker refuses it
            return
        answer = refusal(query_id_of(frames), self.node_id,
                         "unavailable: this node has no search verify key (collector.verify)")
        log.warning("search query refused: this node has no search verify key")
        self._answers.append((time.monotonic(), answer.encode()))  # fmt: skip

    def _send_answers(self, sock: zmq.Socket, now: float) -> None:
        """Send the search answers' chunks waiting, oldest first, as far as the link takes
        them now; those it has not taken for FORGOTTEN_ANSWER_S are dropped."""
        if self.search is not None:
            while True:
                try:
                    self._answers.append((now, self.search.answers.get_nowait()))
                except queue.Empty:
                    break
        while self._answers:
            queued, frames = self._answers[0]
            if now - queued > FORGOTTEN_ANSWER_S:
                self._answers.popleft()
                self.stats.answers_dropped += 1
                log.warning("a search answer dropped: the collector did not take it in %.0f s",
                            FORGOTTEN_ANSWER_S)  # fmt: skip
                continue
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                return  # no collector connected, or its queue is full: next time round
            self._answers.popleft()
            self.stats.answers_sent += 1

    def _expire(self, now: float) -> None:
        late = [i for i, f in self._inflight.items() if now - f.sent >= self._timeout]
        if not late:
            return
        for hit_id in late:
            del self._inflight[hit_id]
        self.stats.resent += len(late)
        self._may_have_more = True
        # Acknowledgements stay away: wait longer before offering them again.
        self._retry_at = now + self._timeout * random.uniform(0.5, 1.0)
        self._timeout = min(self._timeout * 2, self.max_backoff_s)
        self.stats.link_up = False
        log.warning(
            "%d hits not acknowledged; offering them again, ack timeout now %.1f s",
            len(late),
            self._timeout,
        )

    def _fill(self, sock: zmq.Socket, now: float) -> None:
        room = self.window - len(self._inflight)
        if room <= 0 or now < self._retry_at:
            return
        changes = self.outbox.changes
        if self._seen_changes == changes and not self._may_have_more:
            return
        hits = self.outbox.pending(room, exclude=self._inflight.keys())
        self._seen_changes = changes
        self._may_have_more = len(hits) == room
        for hit in hits:
            try:
                frames = hit.encode(self.protocol_version, self.limits)
            except ProtocolError as e:
                self.outbox.hold(hit.hit_id, f"cannot be encoded: {e}")
                continue
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                # No collector connected (or its queue is full): try again shortly.
                self._retry_at = now + self.link_retry_s
                self._may_have_more = True
                self.stats.link_up = False
                return
            self.stats.sent += 1
            self._inflight[hit.hit_id] = _InFlight(sent=now)

    def link_status(self) -> LinkStatus:
        """The link as this sender sees it now."""
        st = self.stats
        return LinkStatus(
            up=st.link_up, sent=st.sent, acked=st.acked, resent=st.resent,
            rejected=st.rejected, heartbeats=st.heartbeats, inflight=len(self._inflight),
            ack_timeout_s=self._timeout,
            last_ack_age_s=(
                None if self._last_ack is None else round(time.monotonic() - self._last_ack, 1)
            ),
        )  # fmt: skip

    def _heartbeat(self, sock: zmq.Socket) -> None:
        # what the sender knows itself, when it is given no status or cannot get one
        status = NodeStatus(node=self.node_id, heartbeat_s=self.heartbeat_s,
                            health=Health(ok=True))  # fmt: skip
        if self._status is not None:
            try:
                given = self._status()
                if not isinstance(given, NodeStatus):
                    raise TypeError(f"a status is a NodeStatus, not a {type(given).__name__}")
                status = given
            except Exception as e:
                log.exception("status callback failed; heartbeat carries the link's status only")
                problem = Problem(kind=ProblemKind.STATUS_FAILED, detail=repr(e))
                status = status.model_copy(update={"health": Health(ok=False, problems=[problem])})
        status = status.model_copy(update={
            "outbox": OutboxStatus.model_validate(self.outbox.stats()),
            "link": self.link_status(),
        })  # fmt: skip
        try:
            frames = Heartbeat(self.node_id, status.model_dump(mode="json")).encode(self.limits)
        except (ProtocolError, TypeError, ValueError) as e:
            log.error("heartbeat not sent: %s", e)
            return
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
            self.stats.heartbeats += 1
        except zmq.Again:
            log.debug("heartbeat not sent: no collector connected")
