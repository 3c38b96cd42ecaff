"""The collector's side of watchlist distribution: publish the log, serve snapshots and catch-up.

A collector component (`start(ctx)` / `stop()`): a PUB socket sends each new row of the
master store's change log under its list's topic, and every `heartbeat_s` a heartbeat
with each list's last update number; a ROUTER socket answers catalogue and fetch
requests (the ZeroMQ guide's Clone pattern; the wire format is `edge.core.watchlist.protocol`).

With CURVE, each request is judged by its sender's key as the context's allow-list is
now (`edge.core.keys.PeerCheck`): a key taken off it gets no more answers and its connection
is cut, and so are its subscriptions to updates (the PUB socket is an XPUB, whose
subscription messages tell who subscribed).

Any process may write the master store, so a row of its change log is checked as an edge
would check it before it goes out: a bad one (not JSON, out of line, an entry no edge
can take) is never published nor served as a change; an edge that needs it is answered
with a snapshot of the list instead, which is made from the entries themselves.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zmq

from edge.collector.watchlist.config import WatchlistsConfig
from edge.collector.watchlist.master import WatchlistStore
from edge.core.keys import PeerCheck, allow_list_of
from edge.core.log_throttle import LogThrottle
from edge.core.watchlist.entry import FieldError, check_list_name
from edge.core.watchlist.protocol import (
    CATALOGUE,
    CHUNK,
    ERROR,
    FETCH,
    HUGZ,
    LISTS,
    VERSION,
    ProtocolError,
    hugz_body,
    list_topic,
    open_message,
    parse_update,
    seal,
    updates_endpoint,
)

log = logging.getLogger(__name__)

_CHECKED_ROWS = 100_000  # log rows remembered as checked (by id and checksum)


class WatchlistServer:
    """The collector component that distributes the master store to the edges.

    `keys` is the collector's CURVE (public, secret) pair, or a function returning it
    (called at start), or None for plain sockets (tests, a closed network).  The
    service's authenticator checks edge keys for every socket of the shared context.
    """

    def __init__(
        self,
        database: str | Path,
        snapshot: str = "tcp://0.0.0.0:5570",
        publish: str | None = None,
        *,
        keys: tuple[bytes, bytes] | Any = None,
        heartbeat_s: float = 1.0,
        poll_s: float = 0.02,
        retention_s: float = 7 * 86400,
        chunk_entries: int = 5000,
    ):
        self.database = Path(database)
        self.snapshot = snapshot
        self.publish = publish or updates_endpoint(snapshot)
        self._keys = keys
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.retention_s = retention_s
        self.chunk_entries = chunk_entries
        self.snapshot_endpoint = ""
        self.publish_endpoint = ""
        self.counters: dict[str, int] = {}
        self._ctx: zmq.Context | None = None
        self._router: zmq.Socket | None = None
        self._pub: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._requests_check: PeerCheck | None = None
        self._updates_check: PeerCheck | None = None
        self._checked: OrderedDict[int, int] = OrderedDict()  # change id -> crc of its body
        # each bad change logged once (forgotten past 10,000 of them)
        self._bad_logged = LogThrottle(log, math.inf, level=logging.ERROR, max_keys=10_000)

    @classmethod
    def from_config(
        cls, cfg: WatchlistsConfig, data_dir: Path, keys: Any = None
    ) -> WatchlistServer | None:
        """From the collector's `watchlists:` section; None when distribution is off."""
        if not cfg.enabled:
            return None
        return cls(
            cfg.database_path(data_dir),
            cfg.snapshot,
            cfg.publish,
            keys=keys,
            heartbeat_s=cfg.heartbeat_s,
            poll_s=cfg.poll_s,
            retention_s=cfg.retention_days * 86400,
            chunk_entries=cfg.chunk_entries,
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self, ctx: zmq.Context) -> None:
        keys = self._keys() if callable(self._keys) else self._keys
        self._ctx = ctx
        WatchlistStore(self.database).close()  # create it, or fail here rather than later
        router = ctx.socket(zmq.ROUTER)
        pub = ctx.socket(zmq.XPUB)
        pub.xpub_verbose = True  # every edge's subscriptions, not only a topic's first
        for sock in (router, pub):
            sock.linger = 0
            if keys is not None:
                sock.curve_publickey, sock.curve_secretkey = keys
                sock.curve_server = True
        router.router_mandatory = True
        router.sndhwm = 1000
        pub.sndhwm = 100_000  # an edge that falls this far behind catches up from the log
        try:
            router.bind(self.snapshot)
            pub.bind(self.publish)
        except zmq.ZMQError as e:
            router.close()
            pub.close()
            raise OSError(f"watchlists: cannot bind {self.snapshot} / {self.publish}: {e}") from e
        self.snapshot_endpoint = router.last_endpoint.decode()
        self.publish_endpoint = pub.last_endpoint.decode()
        self._router, self._pub = router, pub
        allowed = allow_list_of(ctx) if keys is not None else None
        if allowed is not None:
            self._requests_check = PeerCheck(allowed, "watchlist requests", self.snapshot_endpoint)
            self._updates_check = PeerCheck(allowed, "watchlist updates", self.publish_endpoint)
        elif keys is not None:
            log.warning("watchlists: no authenticator on this context; any CURVE key is let in")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="watchlists-server", daemon=True)
        self._thread.start()
        log.info(
            "watchlists: snapshots on %s, updates on %s, store %s",
            self.snapshot_endpoint,
            self.publish_endpoint,
            self.database,
        )

    def stop(self) -> None:
        """Stop within `poll_s`; the loop closes its sockets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            if self._thread.is_alive():
                log.error("watchlists: server loop did not stop")
        self._thread = None
        self._router = self._pub = None

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        router, pub = self._router, self._pub
        assert router is not None and pub is not None
        store = WatchlistStore(self.database)
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(pub, zmq.POLLIN)  # subscriptions
        last_id = store.last_change()
        version = store.data_version()
        now = time.monotonic()
        next_look, next_hugz, next_purge = now, now, now + 60
        try:
            while not self._stop.is_set():
                timeout = max(0.0, min(next_look, next_hugz) - time.monotonic())
                ready = dict(poller.poll(int(timeout * 1000)))
                if pub in ready:
                    self._subscriptions(pub)
                if router in ready:
                    for _ in range(100):
                        try:
                            frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        if self._admitted(router, frames):
                            self._serve(router, store, [f.bytes for f in frames])
                        # Updates and heartbeats before more snapshots: fifty edges
                        # fetching at once must not hold up a change, or look silent.
                        if time.monotonic() >= min(next_look, next_hugz):
                            break
                now = time.monotonic()
                if now >= next_look:
                    next_look = now + self.poll_s
                    if self._updates_check is not None and self._updates_check.sweep():
                        self._count("subscribers_cut")
                    current = store.data_version()
                    if current != version:
                        version = current
                        last_id = self._publish_new(pub, store, last_id)
                if now >= next_hugz:
                    next_hugz = now + self.heartbeat_s
                    seqs = {name: info.seq for name, info in store.lists().items()}
                    pub.send_multipart(seal(HUGZ, hugz_body(store.epoch, seqs)))
                if now >= next_purge:
                    next_purge = now + 3600
                    purged = store.purge(retention_s=self.retention_s)
                    if any(purged):
                        log.info("watchlists: purged %d expired entries, %d log rows", *purged)
                    last_id = self._publish_new(pub, store, last_id)
        except zmq.ContextTerminated:
            log.info("watchlists: context terminated")
        except Exception:
            log.exception("watchlists: server loop died")
            raise
        finally:
            store.close()
            router.close(linger=0)
            pub.close(linger=0)

    def _publish_new(self, pub: zmq.Socket, store: WatchlistStore, last_id: int) -> int:
        while rows := store.changes_after(last_id):
            sent = 0
            for change_id, name, body in rows:
                last_id = change_id
                update = self._checked_row(store, change_id, name, body)
                if update is not None:  # a bad one is left out: edges see the gap and fetch
                    pub.send_multipart(seal(list_topic(name), update))
                    sent += 1
            self._count("updates_published", sent)
        return last_id

    def _subscriptions(self, pub: zmq.Socket) -> None:
        """Take the subscriptions waiting on the XPUB socket, noting who made them."""
        for _ in range(1000):
            try:
                frame = pub.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if self._updates_check is not None:
                self._updates_check.subscribed(frame)

    def _admitted(self, router: zmq.Socket, frames: list[zmq.Frame]) -> bool:
        """Whether the request's sender is still on the allow-list; if not, say so
        (the answer may not get out before its connection is cut) and count it."""
        check = self._requests_check
        if check is None or len(frames) < 2 or check.sender(frames[1], frames[0].bytes):
            return True
        self._count("requests_revoked")
        rid: object = None
        try:
            rid = open_message([f.bytes for f in frames[1:]])[1].get("rid")
        except ProtocolError:
            pass
        reply = {"error": "this node's key is not on the collector's allow-list", "v": VERSION,
                 "rid": rid}  # fmt: skip
        try:
            router.send_multipart([frames[0].bytes, *seal(ERROR, reply)], zmq.NOBLOCK)
        except zmq.ZMQError:
            self._count("replies_lost")
        return False

    def _checked_row(
        self, store: WatchlistStore, change_id: int, name: str, body: str, seq: int | None = None
    ) -> dict[str, Any] | None:
        """The update of a log row, if an edge can take it (and it is update `seq`)."""
        crc = zlib.crc32(body.encode("utf-8", "surrogatepass"))
        try:
            update = json.loads(body)
            if not isinstance(update, dict) or update.get("v") != VERSION:
                raise ProtocolError("version", "not an update of this protocol version")
            if self._checked.get(change_id) != crc:
                parsed = parse_update(b"", update)
                if parsed.list != name or parsed.epoch != store.epoch:
                    raise ProtocolError("invalid", f"an update of {parsed.list} in {parsed.epoch}")
                self._checked[change_id] = crc
                while len(self._checked) > _CHECKED_ROWS:
                    self._checked.popitem(last=False)
            if seq is not None and update.get("seq") != seq:
                raise ProtocolError("invalid", f"update {update.get('seq')!r} where {seq} was due")
        except (ValueError, TypeError) as e:  # JSON and protocol errors are ValueErrors
            self._count("bad_log_rows")
            self._bad_logged(
                change_id,
                "watchlists: change %d of list %s in %s is bad (%s); edges that need it "
                "get a snapshot of the list", change_id, name, store.path, e,
            )  # fmt: skip
            return None
        return update

    def _serve(self, router: zmq.Socket, store: WatchlistStore, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self._count("requests_refused")
            return
        ident, message = frames[0], frames[1:]
        rid: object = None
        try:
            topic, body = open_message(message)
            rid = body.get("rid")
            if topic == CATALOGUE:
                reply_topic, reply = LISTS, self._catalogue(store, body)
            elif topic == FETCH:
                reply_topic, reply = CHUNK, self._fetch(store, body)
            else:
                raise ProtocolError("version", f"unknown request {topic[:32]!r}")
            self._count("requests_served")
        except (ProtocolError, FieldError, KeyError, TypeError, ValueError) as e:
            log.warning("watchlists: refused a request: %s", e)
            self._count("requests_refused")
            reply_topic, reply = ERROR, {"error": str(e)}
        reply.update(v=VERSION, rid=rid)
        try:
            router.send_multipart([ident, *seal(reply_topic, reply)])
        except zmq.ZMQError as e:  # the edge went away (router_mandatory): nothing to do
            log.info("watchlists: reply not delivered: %s", e)
            self._count("replies_lost")

    def _catalogue(self, store: WatchlistStore, body: Mapping[str, Any]) -> dict[str, Any]:
        names = body.get("lists")
        if names is not None and not (
            isinstance(names, list) and all(isinstance(n, str) for n in names)
        ):
            raise ProtocolError("invalid", "lists: expected a list of names or null")
        lists = store.lists(names)
        return {
            "epoch": store.epoch,
            "lists": {
                name: {"seq": info.seq, "active": info.active, "policy": info.policy.to_json()}
                for name, info in lists.items()
            },
        }

    def _fetch(self, store: WatchlistStore, body: Mapping[str, Any]) -> dict[str, Any]:
        name = check_list_name(body.get("list"))
        cursor = body.get("cursor")
        limit = self.chunk_entries
        with store.reading():
            if cursor is None:
                info = store.lists([name]).get(name)
                if info is None:
                    return {"list": name, "mode": "full", "missing": True, "next": None}
                since = body.get("since")
                if (
                    isinstance(since, int)
                    and body.get("epoch") == store.epoch
                    and store.can_catch_up(name, since)
                ):
                    return self._delta(store, name, since)
                return self._snapshot(store, name)
            if not isinstance(cursor, dict):
                raise ProtocolError("invalid", "cursor: expected an object")
            after = cursor.get("after")
            if isinstance(after, bool) or not isinstance(after, int):
                raise ProtocolError("invalid", "cursor.after: expected an integer")
            if cursor.get("delta"):
                return self._delta(store, name, after)
            rows = store.snapshot_chunk(name, after, limit)
            return {
                "list": name,
                "mode": "full",
                "entries": rows,
                "next": {"after": rows[-1][0]} if len(rows) == limit else None,
            }

    def _snapshot(self, store: WatchlistStore, name: str) -> dict[str, Any]:
        """The first chunk of a full snapshot of list `name` (in a read transaction)."""
        info = store.lists([name]).get(name)
        if info is None:
            return {"list": name, "mode": "full", "missing": True, "next": None}
        limit = self.chunk_entries
        rows = store.snapshot_chunk(name, 0, limit) if info.active else []
        return {
            "list": name,
            "mode": "full",
            "epoch": store.epoch,
            "seq": info.seq,
            "active": info.active,
            "policy": info.policy.to_json(),
            "entries": rows,
            "next": {"after": rows[-1][0]} if len(rows) == limit else None,
        }

    def _delta(self, store: WatchlistStore, name: str, since: int) -> dict[str, Any]:
        """The updates of `name` after number `since`, or, if one of them is bad, a
        snapshot of the list (an edge mid-way through a catch-up takes either)."""
        per_chunk = 20  # updates hold up to UPSERT_BATCH entries each
        updates: list[dict[str, Any]] = []
        for change_id, body in store.list_changes_with_ids(name, since, per_chunk):
            update = self._checked_row(store, change_id, name, body, since + len(updates) + 1)
            if update is None:
                self._count("snapshots_for_bad_rows")
                return self._snapshot(store, name)
            updates.append(update)
        last = updates[-1]["seq"] if updates else since
        return {
            "list": name,
            "mode": "delta",
            "updates": updates,
            "next": {"after": last, "delta": True} if len(updates) == per_chunk else None,
        }
