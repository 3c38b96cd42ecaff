"""The edge's clone client: keep the replica and the matcher equal to the collector's lists.

One thread.  It subscribes to updates first, then asks for the catalogue of lists and
fetches each list that is behind, as a catch-up from the collector's log or as a full
snapshot; updates that arrive meanwhile wait and are applied after.  Each list's
updates must come numbered one after the other: a duplicate or stale one is ignored,
a gap sends the list back to fetching.  The heartbeat carries every list's last
number, so an edge that missed the last update of a quiet list still notices, and
its silence tells that the collector is gone (matching goes on from the replica).
A message that fails any check is refused with a logged reason and changes nothing.
An update this edge cannot apply (refused, or refused by the replica) sends its list
to a full snapshot, and until one is applied the status says `synced: false` and why.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import zmq

from edge.core.log_throttle import LogThrottle
from edge.core.watchlist.entry import Entry, ListPolicy
from edge.core.watchlist.matcher import Matcher
from edge.core.watchlist.protocol import (
    CATALOGUE,
    CHUNK,
    ERROR,
    FETCH,
    HUGZ,
    LIST_PREFIX,
    LISTS,
    VERSION,
    ProtocolError,
    Update,
    list_topic,
    open_message,
    parse_hugz,
    parse_update,
    row_from_wire,
    seal,
)
from edge.core.watchlist.protocol import updates_endpoint as default_updates_endpoint
from edge.node.watchlist.replica import ReplicaError, WatchlistReplica

log = logging.getLogger(__name__)


class _RequestFailed(RuntimeError):
    pass


class _CannotApply(RuntimeError):
    """Updates from the collector that this edge cannot apply: fetch the list whole."""


class WatchlistSync:
    """Keeps `replica` and `matcher` current from the collector at `endpoint`.

    `endpoint` is the collector's snapshot socket (e.g. tcp://collector:5570); updates
    come from `updates_endpoint`, by default the next port.  `server_public_key` and
    `client_keys` (public, secret) make both sockets CURVE clients; None for plain
    sockets.  `lists` limits the edge to those lists (None: all).  `matcher` is built
    from the replica at `start()` unless given.
    """

    def __init__(
        self,
        replica: WatchlistReplica | str | Path,
        endpoint: str,
        server_public_key: bytes | None = None,
        client_keys: tuple[bytes, bytes] | None = None,
        lists: Iterable[str] | None = None,
        ctx: zmq.Context | None = None,
        *,
        updates_endpoint: str | None = None,
        matcher: Matcher | None = None,
        heartbeat_s: float = 1.0,
        request_timeout_s: float = 5.0,
        rebuild_after: int = 2_000,
        compact_every_s: float = 3600.0,
    ):
        if (server_public_key is None) != (client_keys is None):
            raise ValueError("give both server_public_key and client_keys, or neither")
        self.replica = (
            replica if isinstance(replica, WatchlistReplica) else WatchlistReplica(replica)
        )
        self.endpoint = endpoint
        self.updates_endpoint = updates_endpoint or default_updates_endpoint(endpoint)
        self.server_public_key = server_public_key
        self.client_keys = client_keys
        self.lists = None if lists is None else sorted(set(lists))
        self.ctx = ctx or zmq.Context.instance()
        self.heartbeat_s = heartbeat_s
        self.request_timeout_s = request_timeout_s
        self.rebuild_after = rebuild_after
        self.compact_every_s = compact_every_s
        self.counters: Counter[str] = Counter()
        self._matcher = matcher
        self._thread: threading.Thread | None = None
        self._rebuilder: threading.Thread | None = None
        self._rebuild_wanted = threading.Event()
        self._rebuild_idle = threading.Event()  # no rebuild asked for or running
        self._rebuild_idle.set()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._write_lock = threading.Lock()  # replica writes + matcher.apply vs a rebuild's start
        self._throttle = LogThrottle(log)
        self._rid = 0
        self._dealer: zmq.Socket | None = None
        self._sub: zmq.Socket | None = None
        self._epoch: str | None = None
        self._seqs: dict[str, int] = {}  # last update applied, per list known here
        self._active: dict[str, ListPolicy] = {}
        self._queue: list[Update] = []  # received, not yet applied
        self._held: dict[str, list[Update]] = defaultdict(list)  # past a gap, or mid-fetch
        self._need: set[str] = set()  # lists to fetch
        self._need_catalogue = True
        self._fetching: str | None = None
        self._fetched_at: dict[str, float] = {}
        self._whole: set[str] = set()  # lists to fetch as a full snapshot, not a catch-up
        self._unsynced: dict[str, str] = {}  # list -> why it is not the collector's
        self._last_heard = 0.0

    # ------------------------------------------------------------------ outside

    @property
    def matcher(self) -> Matcher:
        if self._matcher is None:
            raise RuntimeError("WatchlistSync not started (or give it a matcher)")
        return self._matcher

    def start(self) -> None:
        """Load the matcher from the replica (if none was given), then sync in a thread."""
        if self._matcher is None:
            t0 = time.perf_counter()
            self._matcher = self.replica.build_matcher()
            log.info(
                "watchlists: %d lists loaded from %s in %.1f s",
                len(self._matcher.lists),
                self.replica.path,
                time.perf_counter() - t0,
            )
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="watchlist-sync", daemon=True)
        self._thread.start()
        self._rebuilder = threading.Thread(
            target=self._rebuilds, name="watchlist-rebuild", daemon=True
        )
        self._rebuilder.start()

    def stop(self) -> None:
        self._stop.set()
        self._rebuild_wanted.set()
        for t in (self._thread, self._rebuilder):
            if t is not None:
                t.join(30)
                if t.is_alive():
                    log.error("watchlists: thread %s did not stop", t.name)
        self._thread = self._rebuilder = None

    def wait_synced(self, timeout: float) -> bool:
        """Whether the edge has caught up with the collector at least once, and its
        matcher holds what it fetched (within `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        if not self._synced.wait(timeout):
            return False
        return self._rebuild_idle.wait(max(0.0, deadline - time.monotonic()))

    def status(self) -> dict[str, object]:
        """`synced` is false until the first catch-up, and while a list could not be
        brought up to the collector's (`unsynced` says which, and why)."""
        heard = self._last_heard
        unsynced = dict(self._unsynced)
        out: dict[str, object] = {
            "epoch": self._epoch,
            "lists": dict(self._seqs),
            "heard_s_ago": None if not heard else round(time.monotonic() - heard, 1),
            "synced": self._synced.is_set() and not unsynced,
            "overlay": self.matcher.overlay_size if self._matcher is not None else 0,
            **self.counters,
        }
        if unsynced:
            out["unsynced"] = unsynced
        return out

    # ------------------------------------------------------------------ sockets

    def _secure(self, sock: zmq.Socket) -> None:
        if self.client_keys is not None:
            sock.curve_publickey, sock.curve_secretkey = self.client_keys
            sock.curve_serverkey = self.server_public_key

    def _open_dealer(self) -> zmq.Socket:
        dealer = self.ctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.immediate = True  # queue requests only on a connection that is up
        self._secure(dealer)
        dealer.connect(self.endpoint)
        return dealer

    def _open_sub(self) -> zmq.Socket:
        sub = self.ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.rcvhwm = 100_000
        self._secure(sub)
        sub.setsockopt(zmq.SUBSCRIBE, HUGZ)
        if self.lists is None:
            sub.setsockopt(zmq.SUBSCRIBE, LIST_PREFIX)
        else:
            for name in self.lists:
                sub.setsockopt(zmq.SUBSCRIBE, list_topic(name))
        sub.connect(self.updates_endpoint)
        return sub

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        self._epoch = self.replica.epoch
        for name, state in self.replica.lists().items():
            if self._in_scope(name):
                self._seqs[name] = state.seq
                if state.active:
                    self._active[name] = state.policy
        self._sub = self._open_sub()  # first subscribe, so nothing falls between
        self._dealer = self._open_dealer()
        retry_at = 0.0
        backoff = 0.5
        next_compact = time.monotonic() + self.compact_every_s
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if (self._need_catalogue or self._need) and now >= retry_at:
                    try:
                        self._catch_up()
                        backoff = 0.5
                    except _RequestFailed as e:
                        self._throttle("request", "watchlists: catch-up failed: %s", e)
                        retry_at = time.monotonic() + backoff
                        backoff = min(backoff * 2, 30.0)
                    if not (self._need_catalogue or self._need):
                        self._synced.set()
                waiting = self._sub.poll(100)
                if waiting:
                    self._drain()
                self._flush()
                now = time.monotonic()
                silent = now - self._last_heard if self._last_heard else 0.0
                if not waiting and silent > 3 * self.heartbeat_s:  # nothing queued, either
                    self._throttle(
                        "silent",
                        "watchlists: collector silent for %.0f s; matching from the replica",
                        silent,
                    )
                if now >= next_compact:
                    next_compact = now + self.compact_every_s
                    removed = self.replica.compact()
                    if removed:
                        log.info("watchlists: %d expired entries compacted", removed)
                    self._rebuild_soon()
                if self.matcher.overlay_size > self.rebuild_after and self._rebuild_idle.is_set():
                    self._rebuild_soon()
        except zmq.ContextTerminated:
            log.info("watchlists: context terminated")
        except Exception:
            log.exception("watchlists: sync loop died")
            raise
        finally:
            for sock in (self._sub, self._dealer):
                if sock is not None:
                    sock.close(linger=0)
            self._sub = self._dealer = None

    def _in_scope(self, name: str) -> bool:
        return self.lists is None or name in self.lists

    # ------------------------------------------------------------------ updates

    def _drain(self, limit: int = 10_000) -> None:
        """Take what the update socket has; heartbeats are checked after earlier updates."""
        assert self._sub is not None
        for _ in range(limit):
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                topic, body = open_message(frames)
                if topic == HUGZ:
                    self._last_heard = time.monotonic()
                    self._flush()
                    self._hugz(*parse_hugz(body))
                    continue
                update = parse_update(topic, body)
            except ProtocolError as e:
                self.counters["refused"] += 1
                self._throttle(f"refused {e.detail[:40]}", "watchlists: refused an update: %s", e)
                continue
            self._last_heard = time.monotonic()
            if self._in_scope(update.list):
                self._queue.append(update)

    def _hugz(self, epoch: str, seqs: dict[str, int]) -> None:
        if epoch != self._epoch:
            self._need_catalogue = True
            return
        now = time.monotonic()
        for name, seq in seqs.items():
            if not self._in_scope(name) or name == self._fetching:
                continue
            here = self._seqs.get(name, 0)
            # Behind: fetch.  Ahead: the store was put back to an older state (a restored
            # backup) -- unless a fetch just overtook this heartbeat on the other socket.
            recent = now - self._fetched_at.get(name, -math.inf) < 2 * self.heartbeat_s
            if seq > here or (seq < here and not recent):
                if name not in self._need:
                    log.info("watchlists: %s is at %d here, %d at the collector", name, here, seq)
                if seq < here:
                    self._seqs[name] = -1  # fetch it whole
                self._need.add(name)
        if any(name not in seqs for name in self._active):
            self._need_catalogue = True

    def _flush(self) -> None:
        """Apply the queued updates that are next in line; hold back the others."""
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        ready: list[Update] = []
        seqs = dict(self._seqs)
        for u in queue:
            if u.epoch != self._epoch:
                self._need_catalogue = True
                continue
            if u.list in self._need or u.list == self._fetching:
                self._held[u.list].append(u)
                continue
            last = seqs.get(u.list, 0)
            if u.seq <= last:
                self.counters["duplicates"] += 1
            elif u.seq == last + 1:
                ready.append(u)
                seqs[u.list] = u.seq
            else:
                self.counters["gaps"] += 1
                log.info("watchlists: gap in %s: update %d after %d", u.list, u.seq, last)
                self._need.add(u.list)
                self._held[u.list].append(u)
        self._apply(ready)

    def _apply(self, updates: Sequence[Update]) -> bool:
        """Apply updates to the replica and the matcher; False (and their lists to be
        fetched whole) when the replica refuses them."""
        if not updates:
            return True
        upserts: dict[int, Entry] = {}
        deletes: set[int] = set()
        void: set[str] = set()
        lists_changed = False
        refused: ReplicaError | None = None
        with self._write_lock:
            try:
                self.replica.apply(updates)
            except ReplicaError as e:
                refused = e
            for u in updates if refused is None else ():
                self._seqs[u.list] = u.seq
                if u.op == "policy":
                    assert u.policy is not None
                    self._active[u.list] = u.policy
                    lists_changed = True
                elif u.op == "drop":
                    self._active.pop(u.list, None)
                    void.add(u.list)
                    for key in [k for k, e in upserts.items() if e.list == u.list]:
                        del upserts[key]
                    lists_changed = True
                elif u.op == "upsert":
                    for row in u.rows:
                        upserts[row[0]] = Entry(*row)
                        deletes.discard(row[0])
                elif u.op == "delete":
                    for entry_id in u.ids:
                        upserts.pop(entry_id, None)
                        deletes.add(entry_id)
            if refused is None:
                self.matcher.apply(
                    upserts.values(),
                    deletes,
                    lists=dict(self._active) if lists_changed else None,
                    void=void,
                )
        if refused is not None:
            names = list(dict.fromkeys(u.list for u in updates))
            if len(names) > 1:  # one list's bad update must not cost the others a snapshot
                return all([self._apply([u for u in updates if u.list == n]) for n in names])
            self._cannot_apply(names[0], f"updates not applied: {refused}")
            self._need.add(names[0])
            return False
        self.counters["applied"] += len(updates)
        return True

    def _cannot_apply(self, name: str, why: str) -> None:
        """Fetch `name` whole from now on, and say it is not in sync until then."""
        if name not in self._whole:
            log.warning("watchlists: %s: %s; fetching a full snapshot", name, why)
            self.counters["fallbacks"] += 1
        self._whole.add(name)
        self._unsynced[name] = why

    # ------------------------------------------------------------------ catching up

    def _request(self, topic: bytes, body: dict[str, object], expect: bytes) -> dict:
        """Send a request and wait for its reply, taking updates meanwhile (Lazy Pirate)."""
        assert self._dealer is not None and self._sub is not None
        self._rid += 1
        rid = self._rid
        message: list[bytes] | None = seal(topic, {**body, "v": VERSION, "rid": rid})
        deadline = time.monotonic() + self.request_timeout_s
        poller = zmq.Poller()
        # A DEALER with no connected collector would block on send: wait until it can
        # take the request (its connection is up), taking updates meanwhile.
        poller.register(self._dealer, zmq.POLLIN | zmq.POLLOUT)
        poller.register(self._sub, zmq.POLLIN)
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready = dict(poller.poll(int(min(left, 0.2) * 1000)))
            if self._sub in ready:
                self._drain()
            events = ready.get(self._dealer, 0)
            if message is not None and events & zmq.POLLOUT:
                self._dealer.send_multipart(message, zmq.NOBLOCK)
                message = None
                poller.modify(self._dealer, zmq.POLLIN)
            if not events & zmq.POLLIN:
                continue
            frames = self._dealer.recv_multipart()
            try:
                reply_topic, reply = open_message(frames)
            except ProtocolError as e:
                self.counters["refused"] += 1
                raise _RequestFailed(f"bad reply: {e}") from None
            self._last_heard = time.monotonic()
            if reply.get("rid") != rid:
                continue  # the late answer to a request we gave up on
            if reply_topic == ERROR:
                raise _RequestFailed(f"collector refused: {reply.get('error')}")
            if reply_topic != expect:
                raise _RequestFailed(f"unexpected reply {reply_topic[:32]!r}")
            return reply
        # No answer: start afresh, so a late reply cannot be taken for the next one.
        self._dealer.close(linger=0)
        self._dealer = self._open_dealer()
        raise _RequestFailed(f"no answer from {self.endpoint} in {self.request_timeout_s} s")

    def _catch_up(self) -> None:
        if self._need_catalogue:
            self._catalogue()
        while self._need and not self._stop.is_set():
            name = min(self._need)
            self._fetch(name)
            self._need.discard(name)
            self._release(name)

    def _catalogue(self) -> None:
        reply = self._request(CATALOGUE, {"lists": self.lists}, LISTS)
        epoch, lists = reply.get("epoch"), reply.get("lists")
        if not isinstance(epoch, str) or not isinstance(lists, dict):
            raise _RequestFailed("bad catalogue")
        if epoch != self._epoch:
            if self._epoch is not None:
                log.warning("watchlists: the collector's store changed (%s -> %s); reloading",
                            self._epoch, epoch)  # fmt: skip
            with self._write_lock:
                self.replica.new_epoch(epoch)
            self._epoch = epoch
            self._seqs = dict.fromkeys(self._seqs, -1)
            self._held.clear()
        gone = [n for n in self._seqs if self._in_scope(n) and n not in lists]
        if gone:
            log.info("watchlists: lists gone at the collector: %s", ", ".join(gone))
            with self._write_lock:
                self.replica.forget(gone)
                for name in gone:
                    self._seqs.pop(name, None)
                    self._active.pop(name, None)
                self.matcher.apply(lists=dict(self._active), void=gone)
        for name, info in lists.items():
            if not self._in_scope(name) or not isinstance(info, dict):
                continue
            if info.get("seq") != self._seqs.get(name) or bool(info.get("active")) != (
                name in self._active
            ):
                self._need.add(name)
        self._need_catalogue = False

    def _fetch(self, name: str) -> None:
        self._fetching = name
        try:
            try:
                self._fetch_list(name)
            except _CannotApply as e:  # not the updates, then: the list as it is
                self._cannot_apply(name, str(e))
                self._fetch_list(name)
        except _RequestFailed as e:
            if name in self._whole:
                self._unsynced[name] = str(e)
            raise
        finally:
            self._fetching = None
            self._fetched_at[name] = time.monotonic()

    def _fetch_list(self, name: str) -> None:
        since = self._seqs.get(name)
        if (since is not None and since < 0) or name in self._whole:
            since = None  # from another store, or updates that did not apply: fetch it whole
        cursor: object = None
        staged: list[Entry] | None = []
        first: dict | None = None
        while not self._stop.is_set():
            reply = self._request(
                FETCH,
                {"list": name, "epoch": self._epoch, "since": since, "cursor": cursor},
                CHUNK,
            )
            if reply.get("list") != name:
                raise _RequestFailed("reply for another list")
            try:
                if reply.get("mode") == "delta":
                    if since is None:
                        raise ProtocolError("invalid", "a catch-up where a snapshot was asked for")
                    try:
                        self._fetched_delta(name, reply)
                    except (ProtocolError, TypeError, ValueError) as e:
                        self.counters["refused"] += 1
                        raise _CannotApply(f"catch-up refused: {e}") from None
                elif reply.get("missing"):
                    self._whole.discard(name)
                    self._unsynced.pop(name, None)
                    if name in self._seqs:
                        with self._write_lock:
                            self.replica.forget([name])
                            self._seqs.pop(name, None)
                            self._active.pop(name, None)
                            self.matcher.apply(lists=dict(self._active), void=[name])
                    return
                elif reply.get("mode") == "full":
                    if first is None:
                        first = reply
                        if reply.get("epoch") != self._epoch:
                            self._need_catalogue = True
                            raise _RequestFailed("snapshot from another store")
                        self.replica.stage_begin()
                    rows = [row_from_wire(name, item) for item in reply.get("entries") or ()]
                    self.replica.stage_rows(rows)
                    if staged is not None:
                        staged.extend(Entry(*r) for r in rows)
                        if len(staged) > self.rebuild_after:
                            staged = None  # too many for the overlay: rebuild instead
                    if reply.get("next") is None:
                        self._commit_snapshot(name, first, staged)
                else:
                    raise ProtocolError("invalid", f"unknown mode {reply.get('mode')!r}")
            except (ProtocolError, TypeError, ValueError) as e:
                self.counters["refused"] += 1
                raise _RequestFailed(f"refused {name} from the collector: {e}") from None
            cursor = reply.get("next")
            if cursor is None:
                return

    def _fetched_delta(self, name: str, reply: dict) -> None:
        updates = reply.get("updates")
        if not isinstance(updates, list):
            raise ProtocolError("invalid", "updates: expected a list")
        parsed = []
        last = self._seqs.get(name, 0)
        for body in updates:
            if not isinstance(body, dict) or body.get("v") != VERSION:
                raise ProtocolError("invalid", "update: bad body")
            u = parse_update(b"", body)
            if u.list != name or u.seq != last + 1 or u.epoch != self._epoch:
                raise ProtocolError("invalid", f"catch-up update {u.seq} of {u.list} out of line")
            last = u.seq
            parsed.append(u)
        if not self._apply(parsed):
            raise _CannotApply(self._unsynced.get(name, "updates not applied"))
        self.counters["caught_up"] += len(parsed)

    def _commit_snapshot(self, name: str, first: dict, staged: list[Entry] | None) -> None:
        seq, active = first.get("seq"), bool(first.get("active"))
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise ProtocolError("invalid", "snapshot: bad seq")
        policy = ListPolicy.from_json(first.get("policy") or {})
        if policy.name != name:
            raise ProtocolError("invalid", "snapshot: policy of another list")
        assert self._epoch is not None
        with self._write_lock:
            self.replica.stage_commit(self._epoch, name, policy, seq, active)
            self._whole.discard(name)
            self._seqs[name] = seq
            if active:
                self._active[name] = policy
            else:
                self._active.pop(name, None)
            if staged is not None or not active:
                self.matcher.apply(staged or [], lists=dict(self._active), void=[name])
            else:  # until the rebuild, the list's old entries match rather than none
                self.matcher.apply(lists=dict(self._active))
            # synced only once the matcher has the list: status() reads this unlocked
            self._unsynced.pop(name, None)
        self.counters["snapshots"] += 1
        count = len(staged) if staged is not None else "many"
        log.info("watchlists: %s loaded (%s entries) at update %d", name, count, seq)
        if active and staged is None:
            self._rebuild_soon()

    def _release(self, name: str) -> None:
        """Queue again the updates held back while `name` was behind."""
        held = self._held.pop(name, [])
        if held:
            self._queue[:0] = sorted(held, key=lambda u: u.seq)
            self._flush()

    # ------------------------------------------------------------------ rebuilds

    def _rebuild_soon(self) -> None:
        self._rebuild_idle.clear()
        self._rebuild_wanted.set()

    def _rebuilds(self) -> None:
        """Rebuild the matcher's base from the replica whenever asked, one at a time."""
        while not self._stop.is_set():
            if self._rebuild_wanted.wait(0.5):
                self._rebuild_wanted.clear()
                if not self._stop.is_set():
                    self._rebuild()
                if not self._rebuild_wanted.is_set():
                    self._rebuild_idle.set()

    def _rebuild(self) -> None:
        t0 = time.perf_counter()
        try:
            with self._write_lock:  # the snapshot and the version must agree
                self.replica.begin_read()
                version = self.matcher.version
            try:
                base = self.replica.build_index()
            finally:
                self.replica.end_read()
            self.matcher.rebase(base, version)
        except Exception:
            log.exception("watchlists: rebuilding the matcher failed; keeping the old one")
            return
        self.counters["rebuilds"] += 1
        took = time.perf_counter() - t0
        log.info("watchlists: matcher rebuilt, %d entries in %.1f s", base.size, took)
