"""The collector's loops: take hits from many edges, commit them in batches, then ack.

Two threads.  The receiver owns the ROUTER socket (CURVE server; only allow-listed
keys get through): it reads up to `max_batch` messages at a time, checks them, and
hands the hits to the writer.  The writer commits everything handed to it since its
last commit in one go (pictures synced, then one SQLite transaction) and only then
gives the receiver the acknowledgements to send, each to the edge that sent the hit.
While the writer waits on the disk the receiver goes on reading, so the next commit
takes all that arrived meanwhile: the slower the disk, the bigger the batch.  A hit
already stored is acknowledged again and not stored twice.  Heartbeats are noted in
memory by the receiver (a few microseconds each), then read and written by the
writer about once a second, a hundred at a time between commits of hits, so a storm
of them does not hold up a hit; a node may name so many cameras and no more.  A
heartbeat's status must be an `edge.core.status.NodeStatus`, and what is stored is the
record that validated.  Anything malformed is refused and counted, and the loops carry
on.  Between commits the writer also runs the maintenance (`retention.py`) a slice at a
time, and watches the disk.

Other parts of the collector (watchlist distribution) run in the same process as
`components`: each gets the one `zmq.Context` in `start(ctx)`; its CURVE server
sockets are checked against the same allow-list.

ZAP judges a key once, when it connects; the receiver judges each message again by its
key as the allow-list is now (`edge.core.keys.PeerCheck`), so a key taken off the list is
refused, neither stored nor answered, and its connection cut at once.
"""

from __future__ import annotations

import bisect
import ctypes
import datetime as dt
import json
import logging
import os
import resource
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any, Protocol

import zmq
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry
from pydantic import ValidationError

from edge.collector.alerts.dispatch import Alerts
from edge.collector.config import CollectorConfig
from edge.collector.exchange.service import Exchange
from edge.collector.retention import Clock, Maintenance
from edge.collector.sharing import AgreementsService
from edge.collector.store import HitStore, Seen
from edge.collector.watchlist.config import WatchlistsConfig
from edge.core.keys import (
    PeerCheck,
    credentials_dir,
    load_keypair,
    make_curve_server,
    start_authenticator,
)
from edge.core.link_protocol import (
    TAG_HEARTBEAT,
    Ack,
    Heartbeat,
    HitMessage,
    ProtocolError,
    Reject,
    decode_message,
)
from edge.core.log_throttle import LogThrottle
from edge.core.notify import Notifier, watchdog_period
from edge.core.search import TAG_SEARCH_ANSWER
from edge.core.status import NodeStatus
from edge.core.times import utc_now

log = logging.getLogger(__name__)

# Hits received but not yet committed, at most; beyond it the receiver stops reading
# and ZeroMQ's queues, then TCP, hold the edges back.  (~1,000 hits is ~55 MB.)
_MAX_QUEUED = 512
# Heartbeats (and nodes heard) handled per turn of the writer, between commits of
# hits: 1,000 at once would hold hits up for ~50 ms.
_SEEN_CHUNK = 100
# Heartbeats waiting to be read, at most (a node sends one every few seconds).
_MAX_BEATS = 20_000
# Stats that are a level now, not a count since the start.
_GAUGES = ("nodes_heard", "queued", "disk_alarm", "disk_used_bytes", "disk_free_bytes")
# How long `send_to_node` waits for the receiver to have sent (it sends within a poll).
_SEND_WAIT_S = 5.0
# Upper bounds (ms) of the buckets of the receive-to-ack time histogram.
ACK_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Component(Protocol):
    """Something else the collector process runs, sharing its ZeroMQ context."""

    def start(self, ctx: zmq.Context) -> None: ...

    def stop(self) -> None: ...


def _raise_fd_limit() -> None:
    # Each connected edge holds a socket; the default soft limit of 1024 is too few.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        want = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit from %d: %s", soft, e)


class CollectorService:
    """Receive, store and acknowledge hits; note heartbeats.

    `start()` binds and returns; `stop()` stops it.  `ctx` is the process's one
    ZeroMQ context (made here, and terminated at stop, when not given).  `clock` gives
    the time hits are received at, and the maintenance's time.
    """

    def __init__(
        self,
        config: CollectorConfig,
        *,
        components: Iterable[Component] = (),
        ctx: zmq.Context | None = None,
        clock: Clock = utc_now,
        agreements: AgreementsService | None = None,
    ):
        self.config = config
        self.clock = clock
        self.maintenance = Maintenance(config, clock=clock)
        self.components = list(components)
        self.limits = config.limits.to_limits()
        self._own_ctx = ctx is None
        self._ctx = ctx
        self._sock: zmq.Socket | None = None
        self._wake: zmq.Socket | None = None
        self._auth: Any = None
        self._peers: PeerCheck | None = None
        self._store: HitStore | None = None
        self._receiver: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._stop = threading.Event()
        self._started: list[Component] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # receiver -> writer: (edge, hit, when received)
        self._queued: list[tuple[bytes, HitMessage, float]] = []
        # Time from receiving a hit to its ack, in buckets (ms), Prometheus-style.
        self.ack_hist = [0] * (len(ACK_BUCKETS_MS) + 1)
        self.ack_sum_s = 0.0
        self._acks: list[tuple[bytes, list[str]]] = []  # writer -> receiver
        self._seen: dict[str, Seen] = {}  # hits since the last flush, by node
        # Heartbeats since the last flush, unread: (node, body, peer address, when).
        self._beats: list[tuple[str, bytes, str | None, dt.datetime]] = []
        self._nodes_heard: set[str] = set()
        self.counters: Counter[str] = Counter()
        self._throttle = LogThrottle(log)
        self.endpoint = ""
        self.public_key = b""
        self._metrics: Any = None
        self.alerts: Alerts | None = None  # hits out by webhook and mail (config.alerts)
        # The agreements in force (config.agreements_dir), and the exchange with the
        # partners they name over NATS (config.exchange).
        self.agreements = agreements or AgreementsService(config.agreements_dir)
        self.exchange: Exchange | None = None
        self._exchange_agency: str | None = None  # the agency the exchange speaks for
        # exchange -> writer: a partner's hits, its agency, and the future told when stored
        self._partner_hits: list[tuple[Sequence[HitMessage], str, Future[None]]] = []
        # The search (edge.collector.search) sets these.  Both are called on the receiver's
        # thread and must not wait on it (so never call send_to_node from them):
        # `on_search_answer(node, frames)` for each TAG_SEARCH_ANSWER message of a node,
        # `on_node_connected(node)` when a node is heard on a connection new to the receiver.
        self.on_search_answer: Callable[[str, list[bytes]], None] | None = None
        self.on_node_connected: Callable[[str], None] | None = None
        # Each node's ROUTER identity, from its last message (the receiver writes it).
        self._idents: dict[str, bytes] = {}
        # send_to_node -> receiver: (identity, node, frames, told whether it went)
        self._outgoing: list[tuple[bytes, str, list[bytes], Future[bool]]] = []
        self._out_pipe: tuple[int, int] | None = None  # wakes the receiver for _outgoing

    @property
    def ctx(self) -> zmq.Context:
        if self._ctx is None:
            raise RuntimeError("collector not started")
        return self._ctx

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        cfg = self.config
        public, secret = load_keypair(credentials_dir(cfg.credentials_dir), cfg.key_name)
        self.public_key = public
        _raise_fd_limit()
        if self._ctx is None:
            self._ctx = zmq.Context(io_threads=cfg.io_threads)
        self._ctx.max_sockets = max(self._ctx.max_sockets, 8192)
        self._store = HitStore(cfg.db_path, max_cameras_per_node=cfg.nodes.max_cameras_per_node,
                               agency_of_node=cfg.agency_of_node)  # fmt: skip
        if cfg.alerts is not None:  # before the writer starts; reads its secrets
            self.alerts = Alerts(cfg.alerts, data_dir=cfg.data_dir, credentials=cfg.credentials_dir)
            try:
                self.alerts.start(hits_db=cfg.db_path)  # follows hits.db from its mark
            except BaseException:
                self.alerts = None
                self._store.close()
                raise
        mended = self._store.mended
        if mended:
            self._count("image_tail_bytes_cut", mended.tail_bytes)
            self._count("pictures_lost", mended.lost_pictures)
        self._auth = start_authenticator(self._ctx, cfg.allowed_keys_dir)
        sock = self._ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.router_mandatory = True  # an ack to a gone edge is an error we count, not silence
        # Messages queued per edge before ZeroMQ stops reading its connection (the rest
        # of an edge's window waits in its own queue): with _MAX_QUEUED this bounds the
        # collector's memory.
        sock.rcvhwm = 16
        sock.sndhwm = 1000
        # Frames beyond this make ZeroMQ drop the connection before buffering them;
        # below it, our own caps refuse and count them.
        sock.maxmsgsize = 4 * self.limits.max_frame_bytes
        make_curve_server(sock, public, secret)
        try:
            sock.bind(cfg.listen)
        except zmq.ZMQError as e:
            sock.close()
            self._auth.stop()
            self._store.close()
            if self.alerts is not None:
                self.alerts.stop()
            raise OSError(f"cannot listen on {cfg.listen}: {e}") from e
        self.endpoint = str(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        # ZAP judged each edge's key when it connected; this judges each message, so a
        # key taken off the allow-list is refused from its next message on.
        self._peers = PeerCheck(self._auth.allow_list, "hits", self.endpoint)
        self._sock = sock
        self._wake = self._ctx.socket(zmq.PAIR)
        self._wake.linger = 0
        self._wake.bind(self._wake_endpoint)
        self._out_pipe = os.pipe()
        for fd in self._out_pipe:
            os.set_blocking(fd, False)
        self._stop.clear()
        self._writer = threading.Thread(target=self._write_loop, name="collector-write")
        self._receiver = threading.Thread(target=self._receive_loop, name="collector-recv")
        self._writer.daemon = self._receiver.daemon = True
        self._writer.start()
        self._receiver.start()
        try:
            self.agreements.start()
            if cfg.exchange is not None:
                self._start_exchange()
            for comp in self.components:
                comp.start(self._ctx)
                self._started.append(comp)
            if cfg.metrics_port is not None:
                self._serve_metrics(cfg.metrics_host, cfg.metrics_port)
        except BaseException:
            self.stop()
            raise
        log.info(
            "collector listening on %s, %d keys allowed, database %s",
            self.endpoint,
            len(self._auth.allow_list),
            cfg.db_path,
        )

    def send_to_node(self, node: str, frames: list[bytes]) -> bool:
        """Send `frames` to `node` on its link (from any thread but the receiver's); False
        when it is not connected (never heard since the start, or its connection gone) or
        not reading.  Returns once the receiver has handed them to ZeroMQ."""
        with self._lock:
            ident = self._idents.get(node)
            pipe = self._out_pipe
            if ident is None or pipe is None or self._stop.is_set():
                return False
            sent: Future[bool] = Future()
            self._outgoing.append((ident, node, frames, sent))
            try:  # under the lock: the pipe is closed under it when the receiver ends
                os.write(pipe[1], b"x")
            except BlockingIOError:  # full of wake-ups already: the receiver will look
                pass
        try:
            return sent.result(timeout=_SEND_WAIT_S)
        except TimeoutError:
            return False

    def connected_nodes(self) -> set[str]:
        """The nodes the receiver could send to now (heard on a connection not known gone)."""
        with self._lock:
            return set(self._idents)

    def _send_outgoing(self, sock: zmq.Socket) -> None:
        assert self._out_pipe is not None
        try:
            while os.read(self._out_pipe[0], 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            out, self._outgoing = self._outgoing, []
        for ident, node, frames, sent in out:
            try:
                sock.send_multipart([ident, *frames], zmq.NOBLOCK)
            except zmq.Again:
                self._count("search_sends_dropped")  # its queue is full: as if offline
                sent.set_result(False)
                continue
            except zmq.ZMQError as e:
                if e.errno != zmq.EHOSTUNREACH:
                    sent.set_exception(e)
                    raise
                with self._lock:  # that connection is gone; its next message says the new one
                    if self._idents.get(node) == ident:
                        del self._idents[node]
                sent.set_result(False)
                continue
            self._count("search_sends")
            sent.set_result(True)

    def _fail_outgoing(self) -> None:
        with self._lock:
            out, self._outgoing = self._outgoing, []
            pipe, self._out_pipe = self._out_pipe, None
        for *_, sent in out:
            sent.set_result(False)
        if pipe is not None:
            for fd in pipe:
                os.close(fd)

    def _note_ident(self, node: str, ident: bytes) -> None:
        with self._lock:
            new = self._idents.get(node) != ident
            self._idents[node] = ident
        if new and self.on_node_connected is not None:
            try:
                self.on_node_connected(node)
            except Exception:
                log.exception("search: on_node_connected failed")

    def _search_answer(self, node: str, payload: list[zmq.Frame]) -> None:
        handler = self.on_search_answer
        if handler is None:
            self._refuse("unexpected", node, "a search answer, and no search here")
            return
        self._count("search_answers")
        try:
            handler(node, [f.bytes for f in payload])
        except Exception:  # a bug there must not stop the hits
            log.exception("search: on_search_answer failed")

    @property
    def _wake_endpoint(self) -> str:
        return f"inproc://collector-acks-{id(self)}"

    def _start_exchange(self) -> None:
        cfg = self.config
        assert cfg.exchange is not None
        exchange = Exchange.from_config(
            cfg.exchange, default_agency=cfg.default_agency, data_dir=cfg.data_dir,
            credentials_dir=credentials_dir(cfg.credentials_dir),
            watchlists_path=(cfg.watchlists or WatchlistsConfig()).database_path(cfg.data_dir),
            grants=self.agreements.current, commit_hits=self.commit_partner_hits,
        )  # fmt: skip
        self.agreements.subscribe(lambda agreements, lines: exchange.agreements_changed())
        self._exchange_agency = exchange.me  # before its first hit comes in
        exchange.start()
        self.exchange = exchange

    def commit_partner_hits(self, hits: Sequence[HitMessage], agency: str) -> None:
        """Store hits a partner agency sent (its cameras, our lists), through the writer;
        returns once they are durable, raises if they could not be stored."""
        done: Future[None] = Future()
        with self._cond:
            if self._stop.is_set():
                raise RuntimeError("the collector is stopping")
            self._partner_hits.append((hits, agency, done))
            self._cond.notify()
        done.result(timeout=60)

    def stop(self) -> None:
        if self.exchange is not None:  # first: it hands a partner's hits to the writer
            self.exchange.stop()
            self.exchange = None
        self.agreements.stop()
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics.server_close()
            self._metrics = None
        for comp in reversed(self._started):
            try:
                comp.stop()
            except Exception:
                log.exception("component %s failed to stop", type(comp).__name__)
        self._started.clear()
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for thread in (self._writer, self._receiver):  # the writer commits what it holds first
            if thread is not None:
                thread.join(30)
                if thread.is_alive():
                    log.error("thread %s did not stop", thread.name)
        self._writer = self._receiver = None
        if self.alerts is not None:  # after the writer's last commit
            self.alerts.stop()
            self.alerts = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._store is not None:
            self._store.close()
            self._store = None
        log.info("stats %s", json.dumps(self.stats(), sort_keys=True))
        if self._own_ctx and self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        log.info("collector stopped")

    def alive(self) -> bool:
        return all(t is not None and t.is_alive() for t in (self._writer, self._receiver))

    def run_forever(self, notifier: Notifier | None = None) -> None:
        """Start, then run until SIGTERM or SIGINT.  Under systemd (Type=notify) say READY
        once listening, ping the watchdog while both threads live, and say STOPPING."""
        notifier = notifier or Notifier.from_env()
        period = watchdog_period()
        done = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        notifier.ready(f"listening on {self.endpoint}")
        try:
            next_stats = next_trim = time.monotonic() + 60
            next_ping = 0.0
            while not done.wait(min(1.0, period or 1.0)):
                if not self.alive():
                    raise RuntimeError("a collector thread died; see the log above")
                if period and time.monotonic() >= next_ping:
                    notifier.watchdog()
                    next_ping = time.monotonic() + period
                if time.monotonic() >= next_trim:
                    # Hand back to the system what a backlog left free, so the process
                    # does not keep the size of its worst minute.  (Not more often: the
                    # pages handed back are soon faulted in again.)
                    _malloc_trim()
                    next_trim = time.monotonic() + 30
                if time.monotonic() >= next_stats:
                    log.info("stats %s", json.dumps(self.stats(), sort_keys=True))
                    next_stats = time.monotonic() + 60
        finally:
            notifier.stopping()
            self.stop()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self.counters)
            out["nodes_heard"] = len(self._nodes_heard)
            out["queued"] = len(self._queued)
        disk = self.maintenance.disk
        if disk is not None:
            out["disk_alarm"] = int(disk.alarm)
            out["disk_used_bytes"] = disk.used_bytes
            out["disk_free_bytes"] = disk.free_bytes
        if self._auth is not None:
            out["connections_refused"] = self._auth.allow_list.denied
        if self._peers is not None:
            out["connections_cut"] = self._peers.cut
        if self.alerts is not None:
            out.update(self.alerts.stats())
        return out

    def _serve_metrics(self, host: str, port: int) -> None:
        service = self

        class _Stats:
            def collect(self) -> Iterable[Any]:
                for name, value in sorted(service.stats().items()):
                    if name in _GAUGES:
                        yield GaugeMetricFamily(f"anpr_collector_{name}", name, value)
                    else:
                        yield CounterMetricFamily(f"anpr_collector_{name}", name, value)

            def describe(self) -> Iterable[Any]:
                return []

        class _AckTimes:
            def collect(self) -> Iterable[Any]:
                with service._lock:
                    counts, total = list(service.ack_hist), service.ack_sum_s
                cumulative, buckets = 0, []
                for bound, n in zip((*ACK_BUCKETS_MS, float("inf")), counts, strict=True):
                    cumulative += n
                    buckets.append((str(bound / 1000) if bound != float("inf") else "+Inf",
                                    cumulative))  # fmt: skip
                yield HistogramMetricFamily(
                    "anpr_collector_ack_seconds",
                    "time from receiving a hit to sending its ack (after the commit)",
                    buckets=buckets,
                    sum_value=total,
                )

            def describe(self) -> Iterable[Any]:
                return []

        registry = CollectorRegistry()
        registry.register(_Stats())
        registry.register(_AckTimes())
        self._metrics, _ = start_http_server(port, host, registry=registry)
        log.info("metrics on http://%s:%d/metrics", host, port)

    # ------------------------------------------------------------ the receiver

    def _receive_loop(self) -> None:
        sock, wake = self._sock, self._wake
        assert sock is not None and wake is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        assert self._out_pipe is not None
        out_fd = self._out_pipe[0]
        poller.register(out_fd, zmq.POLLIN)
        reading = True
        try:
            while True:
                writer = self._writer
                if self._stop.is_set() and (writer is None or not writer.is_alive()):
                    self._send_acks(sock)  # the writer's last commit
                    break
                events = dict(poller.poll(100))
                if wake in events:
                    while True:
                        try:
                            wake.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                    self._send_acks(sock)
                if out_fd in events:
                    self._send_outgoing(sock)
                if sock in events and not self._stop.is_set():
                    self._read_batch(sock)
                with self._lock:
                    full = len(self._queued) >= _MAX_QUEUED
                if full == reading or (self._stop.is_set() and reading):
                    # Stop reading while the writer catches up (or for good, when stopping).
                    reading = not full and not self._stop.is_set()
                    poller.modify(sock, zmq.POLLIN if reading else 0)
        except zmq.ContextTerminated:
            log.info("receiver: context terminated")
        except Exception:
            log.exception("receiver died")
            raise
        finally:
            self._fail_outgoing()
            sock.close(linger=0)
            wake.close(linger=0)

    def _read_batch(self, sock: zmq.Socket) -> None:
        received = time.monotonic()
        batch: list[list[zmq.Frame]] = []
        while len(batch) < self.config.max_batch:
            try:
                batch.append(sock.recv_multipart(zmq.NOBLOCK, copy=False))
            except zmq.Again:
                break
        hits, heartbeats = self._sort(sock, batch)
        if hits:
            with self._cond:
                self._queued.extend((ident, hit, received) for ident, hit in hits)
                self._cond.notify()
        if heartbeats:  # after the hits are on their way
            now = self.clock()
            for node, payload in heartbeats:
                self._note_beat(node, payload, now)

    def _sort(
        self, sock: zmq.Socket, batch: Sequence[list[zmq.Frame]]
    ) -> tuple[list[tuple[bytes, HitMessage]], list[tuple[str, list[zmq.Frame]]]]:
        """Hits checked and ready to store, heartbeats to look at; the rest refused."""
        hits: list[tuple[bytes, HitMessage]] = []
        heartbeats: list[tuple[str, list[zmq.Frame]]] = []
        for frames in batch:
            if len(frames) < 2:
                self._refuse("truncated", "?", "empty message")
                continue
            ident, payload = frames[0].bytes, frames[1:]
            node = _property(payload[0], "User-Id")
            if not node or node == "?":
                self._refuse("unauthenticated", "?", "message without a known key")
                continue
            assert self._peers is not None
            if self._peers.sender(payload[0], ident) is None:
                # Its key left the allow-list: neither stored nor answered (a refusal
                # would make the edge put the hit aside); it stays in the edge's outbox
                # and comes again if the key is put back.  Logged once by PeerCheck.
                with self._lock:
                    self.counters["refused"] += 1
                    self.counters["refused_revoked"] += 1
                continue
            if self.config.agency_of_node(node) is None:
                # A node no agency of the config owns: neither stored nor answered, so its
                # hits stay in its outbox and come again once the config names its agency.
                self._refuse("agency", node, f"no agency of this collector owns node {node!r} "
                             "(agencies: in the config); its hits wait on the edge")  # fmt: skip
                continue
            self._note_ident(node, ident)
            tag = payload[0].bytes
            if tag == TAG_HEARTBEAT:
                heartbeats.append((node, payload))
                continue
            if tag == TAG_SEARCH_ANSWER:
                self._search_answer(node, payload)
                continue
            try:
                msg = decode_message(payload, self.limits)
            except ProtocolError as e:
                self._refuse(e.reason, node, e.detail)
                if e.hit_id:
                    self._send(sock, ident, Reject(e.hit_id, e.reason).encode())
                continue
            if not isinstance(msg, HitMessage):
                self._refuse("unexpected", node, f"a {type(msg).__name__} from an edge")
                continue
            if msg.node != node:
                self._refuse("impersonation", node, f"hit claims to come from node {msg.node!r}")
                self._send(sock, ident, Reject(msg.hit_id, "node does not match key").encode())
                continue
            hits.append((ident, msg))
        return hits, heartbeats

    def _note_beat(self, node: str, payload: list[zmq.Frame], now: dt.datetime) -> None:
        """Keep a heartbeat for the writer to read; only what is cheap is checked here."""
        if len(payload) != 2 or payload[1].buffer.nbytes > self.limits.max_status_bytes:
            try:  # let the decoder say what is wrong
                decode_message(payload, self.limits)
            except ProtocolError as e:
                self._refuse(e.reason, node, e.detail)
            else:
                self._refuse("garbage", node, "heartbeat of an unexpected shape")
            return
        address = _property(payload[0], "Peer-Address")
        with self._lock:
            if len(self._beats) >= _MAX_BEATS:
                flood = True
            else:
                flood = False
                self._beats.append((node, payload[1].bytes, address, now))
                self._nodes_heard.add(node)
        if flood:
            self._refuse("flood", node, "heartbeats arrive faster than they can be read")

    def _read_beats(self, beats: list[tuple[str, bytes, str | None, dt.datetime]]) -> list[Seen]:
        """Heartbeats as what was heard from each node; bad ones refused and counted."""
        seen: dict[str, Seen] = {}
        ok = 0
        most = self.config.nodes.max_cameras_per_heartbeat
        for node, body, address, when in beats:
            try:
                msg = decode_message([TAG_HEARTBEAT, body], self.limits)
            except ProtocolError as e:
                self._refuse(e.reason, node, e.detail)
                continue
            assert isinstance(msg, Heartbeat)
            if msg.node != node:
                self._refuse("impersonation", node, f"heartbeat claims to come from {msg.node!r}")
                continue
            try:  # a status of the wrong shape is never stored: its readers rely on it
                status = NodeStatus.model_validate(msg.status)
            except ValidationError as e:
                self._refuse("status", node, f"heartbeat status: {_first_error(e)}")
                continue
            if status.node != node:
                self._refuse("impersonation", node, f"status claims to be of {status.node!r}")
                continue
            ok += 1
            s = seen.get(node) or Seen(node, when)
            s.last_seen = max(s.last_seen, when)
            s.address = address or s.address
            s.status = status.model_dump(mode="json")  # what validated, unknown keys left out
            cameras = list(status.cameras)
            if len(cameras) > most:
                self._refuse_cameras(node, len(cameras) - most, f"a heartbeat names "
                                     f"{len(cameras)} cameras, more than {most}")  # fmt: skip
                cameras = cameras[:most]
            s.cameras.update(cameras)
            seen[node] = s
        self._count("heartbeats", ok)
        return list(seen.values())

    def _refuse_cameras(self, node: str, n: int, detail: str) -> None:
        with self._lock:
            self.counters["cameras_refused"] += n
        self._throttle(f"cameras:{node}", "refused %d cameras of %s: %s", n, node, detail)

    def _send_acks(self, sock: zmq.Socket) -> None:
        with self._lock:
            acks, self._acks = self._acks, []
        for ident, ids in acks:
            self._send(sock, ident, Ack(tuple(ids)).encode())

    def _send(self, sock: zmq.Socket, ident: bytes, frames: list[bytes]) -> None:
        try:
            sock.send_multipart([ident, *frames], zmq.NOBLOCK)
        except zmq.Again:
            self._count("replies_dropped")  # edge not reading: it will send again
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:
                raise
            self._count("replies_unroutable")  # edge gone: it will send again

    def _refuse(self, reason: str, node: str, detail: str) -> None:
        with self._lock:
            self.counters["refused"] += 1
            self.counters[f"refused_{reason}"] += 1
        self._throttle(
            f"{reason}:{node}", "refused a message from %s (%s): %s", node, reason, detail
        )

    # ------------------------------------------------------------ the writer

    def _write_loop(self) -> None:
        store = self._store
        assert store is not None and self._ctx is not None
        wake = self._ctx.socket(zmq.PAIR)
        wake.linger = 0
        wake.connect(self._wake_endpoint)
        flush_s = self.config.heartbeat_flush_s
        next_flush = time.monotonic() + flush_s
        beats: list[tuple[str, bytes, str | None, dt.datetime]] = []
        from_hits: list[Seen] = []
        job: Generator[None, None, None] | None = None  # a run of the maintenance, under way
        try:
            while True:
                with self._cond:
                    idle = not (beats or from_hits or job)
                    if (not self._queued and not self._partner_hits and not self._stop.is_set()
                            and idle):
                        self._cond.wait(max(0.0, next_flush - time.monotonic()))
                    hits, self._queued = self._queued, []
                    partner, self._partner_hits = self._partner_hits, []
                    stopping = self._stop.is_set()
                if hits:
                    self._commit(store, hits, wake)
                for partner_hits, agency, done in partner:
                    self._commit_partner(store, partner_hits, agency, done)
                if time.monotonic() >= next_flush or stopping:
                    with self._lock:
                        beats.extend(self._beats)
                        from_hits.extend(self._seen.values())
                        self._beats, self._seen = [], {}
                    next_flush = time.monotonic() + flush_s
                # A slice at a time, so that hits never wait behind a storm of heartbeats.
                if from_hits:
                    chunk, from_hits = from_hits[:_SEEN_CHUNK], from_hits[_SEEN_CHUNK:]
                    self._record_seen(store, chunk)
                elif beats:
                    chunk_b, beats = beats[:_SEEN_CHUNK], beats[_SEEN_CHUNK:]
                    self._record_seen(store, self._read_beats(chunk_b))
                if not stopping:
                    job = self._maintain(store, job)
                if stopping and not hits and not beats and not from_hits:
                    break
        except Exception:
            log.exception("writer died")
            raise
        finally:
            if job is not None:
                job.close()
            wake.close(linger=0)

    def _maintain(
        self, store: HitStore, job: Generator[None, None, None] | None
    ) -> Generator[None, None, None] | None:
        """Look at the disk when due, and do one slice of the maintenance's run."""
        maintenance = self.maintenance
        if maintenance.disk_due():
            try:
                maintenance.check_disk(store)
            except OSError as e:
                self._throttle("disk", "could not measure the disk: %s", e)
        if job is None and maintenance.due():
            job = maintenance.steps(store)
        if job is None:
            return None
        try:
            next(job)
            return job
        except StopIteration:
            pass
        except Exception:
            log.exception("maintenance failed")
        report = maintenance.last
        if report is not None:
            with self._lock:
                self.counters["maintenance_runs"] += 1
                self.counters["maintenance_errors"] += len(report.errors)
                for key, value in asdict(report).items():
                    if key != "errors" and value:
                        self.counters[f"expired_{key}"] += value
        return None

    def _commit(
        self, store: HitStore, hits: list[tuple[bytes, HitMessage, float]], wake: zmq.Socket
    ) -> None:
        t0 = time.perf_counter()
        try:
            new, dups = store.commit([h for _, h, _ in hits], self.clock())
        except Exception as e:  # sqlite3 errors, a full disk: the edges will send again
            self._count("store_errors")
            self._throttle("store", "could not store %d hits, not acknowledged: %s", len(hits), e)
            time.sleep(0.5)  # a failing disk is not retried in a hot loop
            return
        if self.exchange is not None:  # hits on a partner's list go back to it, if granted
            try:
                self.exchange.forward_hits([h for _, h, _ in hits])
            except Exception as e:  # its outbox would lose them: not acked, the edges resend
                self._count("exchange_errors")
                self._throttle("exchange", "could not queue %d hits for partners, not "
                               "acknowledged: %s", len(hits), e)
                time.sleep(0.5)
                return
        by_edge: dict[bytes, list[str]] = {}
        for ident, h, _ in hits:
            by_edge.setdefault(ident, []).append(h.hit_id)
        now = self.clock()
        done = time.monotonic()
        with self._lock:
            self._acks.extend(by_edge.items())
            self.counters["commits"] += 1
            self.counters["commit_ms"] += round((time.perf_counter() - t0) * 1000)
            self.counters["stored"] += len(new)
            self.counters["duplicates"] += len(dups)
            self.counters["acked"] += len(hits)
            for _, h, received in hits:
                waited = done - received
                self.ack_sum_s += waited
                self.ack_hist[bisect.bisect_left(ACK_BUCKETS_MS, waited * 1000)] += 1
                seen = self._seen.get(h.node) or Seen(h.node, now)
                seen.last_seen = seen.last_hit_at = now
                seen.cameras.add(h.camera)
                seen.hit_cameras.add(h.camera)
                self._seen[h.node] = seen
                self._nodes_heard.add(h.node)
        try:
            wake.send(b"", zmq.NOBLOCK)
        except zmq.Again:  # wake-ups already queued: the receiver takes these acks with them
            self._count("wakeups_merged")
        if self.alerts is not None and new:  # they read what was committed from hits.db
            self.alerts.hits_committed()

    def _commit_partner(self, store: HitStore, hits: Sequence[HitMessage], agency: str,
                        done: Future[None]) -> None:
        try:
            new, dups = store.commit(hits, self.clock(), agency=agency,
                                     list_agency=self._exchange_agency)  # our lists
        except Exception as e:  # not acknowledged to NATS: it comes again
            self._count("store_errors")
            done.set_exception(e)
            return
        done.set_result(None)
        with self._lock:
            self.counters["partner_stored"] += len(new)
            self.counters["partner_duplicates"] += len(dups)
        if self.alerts is not None and new:
            self.alerts.hits_committed()

    def _record_seen(self, store: HitStore, seen: list[Seen]) -> None:
        try:
            refused = store.record_seen(seen)
        except Exception as e:
            self._count("store_errors")
            self._throttle("seen", "could not record %d nodes heard: %s", len(seen), e)
            return
        for node, n in refused.items():
            self._refuse_cameras(node, n, f"a node keeps at most {store.max_cameras_per_node} "
                                 "cameras")  # fmt: skip


def _malloc_trim() -> None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc: nothing to trim
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc: Any = None


def _first_error(e: ValidationError) -> str:
    """What is wrong, in a line of bounded length (neither the input nor a long key)."""
    first = e.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part)[:40] for part in first["loc"][:8]) or "status"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{where}: {first['msg'][:120]}{more}"


def _property(frame: zmq.Frame, name: str) -> str | None:
    try:
        value = frame.get(name)
        return value if isinstance(value, str) else None
    except zmq.ZMQError:
        return None
