"""The collector's receive loop: take hits from many edges, commit them in batches, then ack.

One ROUTER socket (CURVE server; only allow-listed keys get through) and one thread.
Each turn takes up to `max_batch` messages, commits every hit among them in one
transaction, and only then acknowledges them, each to the edge that sent it.  A hit
already stored is acknowledged again and not stored twice.  Heartbeats are noted in
memory after the acks have gone and written to the database once a second, so a
storm of them does not hold up a hit.  Anything malformed is refused and counted,
and the loop carries on.

Other parts of the collector (watchlist distribution) run in the same process as
`components`: each gets the one `zmq.Context` in `start(ctx)`; its CURVE server
sockets are checked against the same allow-list.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import resource
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import zmq

from edge.collector.config import CollectorConfig
from edge.collector.store import HitStore, Seen
from edge.keys import credentials_dir, load_keypair, make_curve_server, start_authenticator
from edge.link.protocol import (
    TAG_HEARTBEAT,
    Ack,
    Heartbeat,
    HitMessage,
    ProtocolError,
    Reject,
    decode_message,
)

log = logging.getLogger(__name__)


class Component(Protocol):
    """Something else the collector process runs, sharing its ZeroMQ context."""

    def start(self, ctx: zmq.Context) -> None: ...

    def stop(self) -> None: ...


class _Throttle:
    """Log a kind of event at most once per `every_s`, saying how many were not logged."""

    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._quiet: Counter[str] = Counter()

    def __call__(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.every_s:
            self._quiet[key] += 1
            return
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        quiet = self._quiet.pop(key, 0)
        suffix = f" ({quiet} more like it not logged)" if quiet else ""
        log.warning(msg + suffix, *args)


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
    ZeroMQ context (made here, and terminated at stop, when not given).
    """

    def __init__(
        self,
        config: CollectorConfig,
        *,
        components: Iterable[Component] = (),
        ctx: zmq.Context | None = None,
    ):
        self.config = config
        self.components = list(components)
        self.limits = config.limits.to_limits()
        self._own_ctx = ctx is None
        self._ctx = ctx
        self._sock: zmq.Socket | None = None
        self._auth: Any = None
        self._store: HitStore | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started: list[Component] = []
        self.counters: Counter[str] = Counter()
        self._seen: dict[str, Seen] = {}  # heartbeats not yet written
        self._nodes_heard: set[str] = set()
        self._throttle = _Throttle()
        self.endpoint = ""
        self.public_key = b""
        self._metrics: Any = None

    @property
    def ctx(self) -> zmq.Context:
        if self._ctx is None:
            raise RuntimeError("collector not started")
        return self._ctx

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        cfg = self.config
        public, secret = load_keypair(credentials_dir(cfg.credentials_dir), cfg.key_name)
        self.public_key = public
        _raise_fd_limit()
        if self._ctx is None:
            self._ctx = zmq.Context()
        self._ctx.max_sockets = max(self._ctx.max_sockets, 8192)
        self._store = HitStore(cfg.db_path)
        self._auth = start_authenticator(self._ctx, cfg.allowed_keys_dir)
        sock = self._ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.router_mandatory = True  # an ack to a gone edge is an error we count, not silence
        # Messages queued per edge before ZeroMQ stops reading its connection: this, not
        # the number of edges, bounds the collector's memory (an edge keeps ~32 in flight).
        sock.rcvhwm = 128
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
            raise OSError(f"cannot listen on {cfg.listen}: {e}") from e
        self.endpoint = sock.last_endpoint.decode()
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="collector-recv", daemon=True)
        self._thread.start()
        try:
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

    def stop(self) -> None:
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
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
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

    def run_forever(self) -> None:
        """Start, then run until SIGTERM or SIGINT."""
        done = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        try:
            while not done.wait(1.0):
                if self._thread is None or not self._thread.is_alive():
                    raise RuntimeError("the receive loop died")
        finally:
            self.stop()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters)
        out["nodes_heard"] = len(self._nodes_heard)
        if self._auth is not None:
            out["connections_refused"] = self._auth.allow_list.denied
        return out

    def _serve_metrics(self, host: str, port: int) -> None:
        from prometheus_client import start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.registry import CollectorRegistry

        service = self

        class _Stats:
            def collect(self) -> Iterable[Any]:
                stats = service.stats()
                for name, value in sorted(stats.items()):
                    if name == "nodes_heard":
                        yield GaugeMetricFamily("anpr_collector_nodes_heard", "nodes heard", value)
                    else:
                        yield CounterMetricFamily(f"anpr_collector_{name}", name, value)

        registry = CollectorRegistry()
        registry.register(_Stats())
        self._metrics, _ = start_http_server(port, host, registry=registry)
        log.info("metrics on http://%s:%d/metrics", host, port)

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        sock, store = self._sock, self._store
        assert sock is not None and store is not None
        next_flush = time.monotonic() + self.config.heartbeat_flush_s
        next_stats = time.monotonic() + 60
        try:
            while not self._stop.is_set():
                if sock.poll(100):
                    batch = []
                    while len(batch) < self.config.max_batch:
                        try:
                            batch.append(sock.recv_multipart(zmq.NOBLOCK, copy=False))
                        except zmq.Again:
                            break
                    self._handle(sock, store, batch)
                if time.monotonic() >= next_flush:
                    self._flush_seen(store)
                    next_flush = time.monotonic() + self.config.heartbeat_flush_s
                if time.monotonic() >= next_stats:
                    log.info("stats %s", json.dumps(self.stats(), sort_keys=True))
                    next_stats = time.monotonic() + 60
            self._flush_seen(store)
        except zmq.ContextTerminated:
            log.info("receive loop: context terminated")
        except Exception:
            log.exception("receive loop died")
            raise
        finally:
            sock.close(linger=0)

    def _handle(self, sock: zmq.Socket, store: HitStore, batch: Sequence[list[zmq.Frame]]) -> None:
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
            if payload[0].bytes == TAG_HEARTBEAT:
                heartbeats.append((node, payload))  # parsed after the hits are acked
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
        if hits:
            self._commit(sock, store, hits)
        now = dt.datetime.now(dt.UTC)
        for node, payload in heartbeats:
            self._heartbeat(node, payload, now)

    def _commit(self, sock: zmq.Socket, store: HitStore, hits: list[tuple[bytes, HitMessage]]):
        t0 = time.perf_counter()
        try:
            new, dups = store.commit([h for _, h in hits])
        except Exception as e:  # sqlite3 errors, a full disk: the edges will send again
            self.counters["store_errors"] += 1
            self._throttle("store", "could not store %d hits, not acknowledged: %s", len(hits), e)
            return
        self.counters["commits"] += 1
        self.counters["commit_ms"] += round((time.perf_counter() - t0) * 1000)
        self.counters["stored"] += len(new)
        self.counters["duplicates"] += len(dups)
        by_edge: dict[bytes, list[str]] = {}
        for ident, h in hits:
            by_edge.setdefault(ident, []).append(h.hit_id)
        for ident, ids in by_edge.items():
            self._send(sock, ident, Ack(tuple(ids)).encode())
        self.counters["acked"] += len(hits)
        for _, h in hits:
            log.debug("hit %s from %s/%s stored", h.hit_id, h.node, h.camera)

    def _heartbeat(self, node: str, payload: list[zmq.Frame], now: dt.datetime) -> None:
        try:
            msg = decode_message(payload, self.limits)
        except ProtocolError as e:
            self._refuse(e.reason, node, e.detail)
            return
        if not isinstance(msg, Heartbeat):
            self._refuse("unexpected", node, f"a {type(msg).__name__} tagged as a heartbeat")
            return
        if msg.node != node:
            self._refuse("impersonation", node, f"heartbeat claims to come from {msg.node!r}")
            return
        self.counters["heartbeats"] += 1
        self._nodes_heard.add(node)
        self._seen[node] = Seen(
            node=node,
            last_seen=now,
            address=_property(payload[0], "Peer-Address") or "",
            status=msg.status,
            cameras=tuple(msg.cameras),
        )

    def _flush_seen(self, store: HitStore) -> None:
        if not self._seen:
            return
        seen, self._seen = list(self._seen.values()), {}
        try:
            store.record_seen(seen)
        except Exception as e:
            self.counters["store_errors"] += 1
            self._throttle("seen", "could not record %d heartbeats: %s", len(seen), e)

    def _send(self, sock: zmq.Socket, ident: bytes, frames: list[bytes]) -> None:
        try:
            sock.send_multipart([ident, *frames], zmq.NOBLOCK)
        except zmq.Again:
            self.counters["replies_dropped"] += 1  # edge not reading: it will send again
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:
                raise
            self.counters["replies_unroutable"] += 1  # edge gone: it will send again

    def _refuse(self, reason: str, node: str, detail: str) -> None:
        self.counters["refused"] += 1
        self.counters[f"refused_{reason}"] += 1
        self._throttle(
            f"{reason}:{node}", "refused a message from %s (%s): %s", node, reason, detail
        )


def _property(frame: zmq.Frame, name: str) -> str | None:
    try:
        return frame.get(name)
    except zmq.ZMQError:
        return None
