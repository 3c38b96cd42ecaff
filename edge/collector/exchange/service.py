"""The exchange as a part of the collector: a thread with an asyncio loop for NATS.

`Exchange` runs, on its loop: the connection (`Link`), the drainer of the outbox (in
order per partner, back-off per partner while it or the server is away, woken at once
when a message is added; consecutive hits packed into one message of kind "hits", up to
`pack_hits` of them and `pack_bytes`, under the server's max_payload; up to
`publish_window` messages of hits in flight at once, their PubAcks awaited together and
their rows taken out of the outbox in one transaction, a list change alone), the
consumer of our stream (a fetched batch applied in order: its hits in a row committed
together, in one sink call, each list change alone in its place; then each message acked
once durable: a malformed one dead-lettered and acked, the rest stored; a store error
naks the messages not stored, to come again), and the
sender's sync of our shared lists.  Store work runs on one worker
thread of its own (SQLite connections stay on their thread); a partner's hits are
committed through `commit_hits`, which the collector points at its writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from nats.aio.msg import Msg

from edge.collector.exchange.cameras import CameraShare, CameraShareSettings
from edge.collector.exchange.config import ExchangeConfig
from edge.collector.exchange.grants import Grants
from edge.collector.exchange.link import Link, LinkSettings, PublishFailed
from edge.collector.exchange.messages import (
    CameraReports,
    HitPack,
    ListChange,
    decode_message,
    pack_msg_id,
    pack_parts,
    subject_parts,
)
from edge.collector.exchange.outbox import Outbox, Pending
from edge.collector.exchange.search_wire import SEARCH_KINDS
from edge.collector.exchange.share import (
    HitForwarder,
    HitReceiver,
    HitSink,
    ListGap,
    ListReceiver,
    ListSender,
    OwnLists,
    own_lists,
    setup_schema,
)
from edge.collector.watchlist.master import WatchlistStore
from edge.core.errors import ProtocolError
from edge.core.link_protocol import DEFAULT_LIMITS, HitMessage, Limits

log = logging.getLogger(__name__)
# Deliveries a list change that came before the changes it follows waits (nak'd, a second
# apart) for them before it is applied without them.
GAP_PATIENCE = 30


def _deliveries(msg: Msg) -> int:
    """How many times the stream has delivered `msg` (1 when it does not say)."""
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # noqa: BLE001 -- a message without JetStream metadata
        return 1

T = TypeVar("T")

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 30.0
# Hits to one partner published at once, their PubAcks awaited together (a list change
# always goes alone, so that the partner stores list changes in their order).
PUBLISH_WINDOW = 32
# Consecutive hits to one partner go as one message of kind "hits" (each message costs the
# NATS server a write and an fsync, and each side its publish, PubAck, fetch and ack): at
# most PACK_HITS of them and PACK_BYTES (nats-server's default max_payload, so that a
# pack fits any server's; less where the server allows less), PACK_HEADROOM kept for the
# headers.  The partner's consumer holds a fetched batch of packs at once: 64 of 1 MiB.
PACK_HITS = 64
PACK_BYTES = 1 << 20
PACK_HEADROOM = 16 << 10
# Rows read from the outbox at once, to be packed and published
DRAIN_ROWS = 256
# Messages of our stream fetched at once, their hits committed together (one HitStore
# commit: one image-log fsync and one SQLite commit for them all), then acked.
FETCH_BATCH = 64
# The ids of sent messages are kept this long (the outbox then forgets them, a few
# thousand at a time, every PURGE_EVERY_S): a hit forwarded again within it is not sent
# again (after it, the partner's stream and store drop it).
SENT_KEEP_S = 86400.0
PURGE_EVERY_S = 60.0
PURGE_BATCH = 5000


class Exchange:
    """One agency's exchange with its partners.  `start()`, then `forward_hits` after each
    commit of hits, `agreements_changed()` when the agreements are reloaded; `stop()`."""

    def __init__(
        self,
        settings: LinkSettings,
        *,
        db_path: Path,
        watchlists_path: Path,
        grants: Callable[[], Grants],
        commit_hits: HitSink,
        lists_of: OwnLists = own_lists,
        limits: Limits = DEFAULT_LIMITS,
        poll_s: float = 0.2,
        resync_s: float = 5.0,
        publish_window: int = PUBLISH_WINDOW,
        cameras: CameraShareSettings | None = None,  # None: ours are shown to no partner
        fetch_batch: int = FETCH_BATCH,
        sent_keep_s: float = SENT_KEEP_S,
        pack_hits: int = PACK_HITS,  # 1: each hit a message of its own
        pack_bytes: int = PACK_BYTES,
    ):
        self.settings, self.me = settings, settings.agency
        self.db_path, self.watchlists_path = Path(db_path), Path(watchlists_path)
        self.grants, self.commit_hits, self.lists_of = grants, commit_hits, lists_of
        self.limits, self.poll_s, self.resync_s = limits, poll_s, resync_s
        self.publish_window = max(1, publish_window)
        self.restart_s = 1.0  # a part of the loop that failed waits this long to start again
        self.camera_settings = cameras
        self.fetch_batch = max(1, fetch_batch)
        self.sent_keep_s = sent_keep_s
        self.pack_hits, self.pack_bytes = max(1, pack_hits), pack_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="exchange-db")
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._wake_drain: asyncio.Event | None = None
        self._wake_sync: asyncio.Event | None = None
        self._grants_changed = True
        self._forward_lock = threading.Lock()
        self._forward_outbox: Outbox | None = None
        self.link = Link(settings)
        self.counts: dict[str, int] = {}
        # A search across agencies (edge.collector.exchange.search_relay) sets this:
        # `on_search(sender, kind, body)` for each message of a SEARCH_KINDS subject, on the
        # store worker's thread (quick).  Unset: such messages are dropped (never
        # dead-lettered: they may hold crops), and, like every search message, deleted
        # from our stream once taken.
        self.on_search: Callable[[str, str, bytes], None] | None = None

    @classmethod
    def from_config(
        cls, config: ExchangeConfig, *, default_agency: str, credentials_dir: Path,
        data_dir: Path, watchlists_path: Path, grants: Callable[[], Grants],
        commit_hits: HitSink, **kw: Any,
    ) -> Exchange:
        """The exchange of `anpr-collector run`: its state in data_dir/exchange.db."""
        return cls(config.link_settings(default_agency, credentials_dir),
                   db_path=Path(data_dir) / "exchange.db", watchlists_path=watchlists_path,
                   grants=grants, commit_hits=commit_hits,
                   cameras=CameraShareSettings(Path(data_dir) / "hits.db",
                                               refresh_s=config.camera_refresh_s), **kw)

    # ------------------------------------------------------------------ from other threads

    def start(self, timeout: float = 30.0) -> None:
        self._worker.submit(self._open_stores).result(timeout)
        self._forward_outbox = Outbox(self.db_path, on_added=self.wake_drain, log_bodies=True)
        self._thread = threading.Thread(target=self._run, name=f"exchange-{self.me}",
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("exchange: the loop did not start")
        if self._failed is not None:
            raise self._failed

    def stop(self, timeout: float = 10.0) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None:
            loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join(timeout)
        with contextlib.suppress(Exception):
            self._worker.submit(self._close_stores).result(timeout)
        self._worker.shutdown(wait=True)
        if self._forward_outbox is not None:
            self._forward_outbox.close()

    def forward_hits(self, hits: Iterable[HitMessage]) -> int:
        """Queue for their lists' owners the hits just committed (or already stored: the
        outbox ignores a hit queued before).  Call it before the edge is acked."""
        assert self._forward_outbox is not None, "start() first"
        with self._forward_lock:
            return HitForwarder(self.me, self._forward_outbox).forward(hits, self.grants())

    def agreements_changed(self) -> None:
        """The agreements were reloaded: re-check what we send and what we hold, now."""
        self._grants_changed = True
        self._wake(lambda: self._wake_sync)

    def wake_sync(self) -> None:
        """A list was changed (the sender also notices by itself within `poll_s`)."""
        self._wake(lambda: self._wake_sync)

    def wake_drain(self) -> None:
        self._wake(lambda: self._wake_drain)

    def _wake(self, which: Callable[[], asyncio.Event | None]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            def set_it() -> None:
                event = which()
                if event is not None:
                    event.set()
            with contextlib.suppress(RuntimeError):  # loop closing
                loop.call_soon_threadsafe(set_it)

    def publish_now(self, subject: str, body: bytes,
                    msg_id: str) -> concurrent.futures.Future[bool]:  # fmt: skip
        """Publish `body` at once, not through the outbox (a search's messages: worth
        nothing later); the future fails with PublishFailed when it is not stored."""
        loop = self._loop
        if loop is None or loop.is_closed():
            done: concurrent.futures.Future[bool] = concurrent.futures.Future()
            done.set_exception(PublishFailed("the exchange is not running"))
            return done
        return asyncio.run_coroutine_threadsafe(self.link.publish(subject, body, msg_id), loop)

    def backlog(self) -> dict[str, int]:
        assert self._forward_outbox is not None
        return self._forward_outbox.backlog()

    # ------------------------------------------------------------------ the worker's stores

    def _open_stores(self) -> None:
        self._store = WatchlistStore(self.watchlists_path, default_agency=self.me)
        self._outbox = Outbox(self.db_path)  # the worker's own connection
        setup_schema(self._outbox)
        self._sender = ListSender(self.me, self._store, self._outbox, self.lists_of)
        self._lists_in = ListReceiver(self.me, self._store, self._outbox)
        self._hits_in = HitReceiver(self.me, self.commit_hits)
        self._cameras = CameraShare(self.me, self._outbox, self.camera_settings)
        self._data_version = -1

    def _close_stores(self) -> None:
        self._store.close()
        self._cameras.close()
        self._outbox.close()

    async def _in_worker(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 -- reported to start(), or logged
            self._failed = e
            self._started.set()
            log.exception("exchange: stopped on an error")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._wake_drain, self._wake_sync = asyncio.Event(), asyncio.Event()
        # forward_hits' connection: one page cache, so that the drainer reads the bodies
        # just written from memory, and the two wait on a lock, not on SQLite's busy sleeps
        assert self._forward_outbox is not None
        self._drain_outbox = self._forward_outbox
        self._started.set()
        tasks = [asyncio.create_task(self._supervised(part))
                 for part in (self._connect_and_ensure, self._drain, self._consume, self._sync)]
        await self._stop_event.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.link.close(), 5)

    async def _supervised(self, part: Callable[[], Awaitable[None]]) -> None:
        """Run one of the loop's parts for as long as the exchange runs: one that fails (a
        bug, a disk error) is logged and started again, never left dead in silence."""
        while True:
            try:
                await part()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self._count("restarts")
                log.exception("exchange: %s failed; started again in %.1f s", part.__name__,
                              self.restart_s)
                await asyncio.sleep(self.restart_s)

    async def _connect_and_ensure(self) -> None:
        await self.link.connect()
        wait = BACKOFF_MIN_S
        while True:
            await self.link.connected.wait()
            if self.link.ready:
                await asyncio.sleep(0.1)  # until the next disconnect clears `ready`
                continue
            try:
                await self.link.ensure()
                wait = BACKOFF_MIN_S
                log.info("exchange: stream %s and consumer %s ready", self.settings.stream,
                         self.settings.consumer)
            except Exception as e:  # noqa: BLE001 -- the server is starting, or went away
                log.warning("exchange: cannot set up the stream yet (%s: %s); again in %.1f s",
                            type(e).__name__, e, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, BACKOFF_MAX_S)

    async def _drain(self) -> None:
        assert self._wake_drain is not None
        outbox = self._drain_outbox
        retry_at: dict[str, float] = {}
        backoff: dict[str, float] = {}
        purge_at = 0.0
        while True:
            self._wake_drain.clear()
            await self.link.connected.wait()
            now = time.monotonic()
            if now >= purge_at:  # the ids of messages sent long ago
                purge_at = now + PURGE_EVERY_S
                while outbox.purge_sent(self.sent_keep_s, PURGE_BATCH) >= PURGE_BATCH:
                    await asyncio.sleep(0)
            for partner in outbox.partners_pending():
                if retry_at.get(partner, 0) > now:
                    continue
                rows = outbox.next_for(partner, max(DRAIN_ROWS, self.publish_window))
                budget = min(self.pack_bytes, self.link.max_payload) - PACK_HEADROOM
                messages = list(_packs(rows, budget, self.pack_hits))
                for group in _windows(messages, self.publish_window):
                    results = await asyncio.gather(
                        *(self.link.publish(m.subject, m.body, m.msg_id) for m in group),
                        return_exceptions=True)
                    # a pack's rows leave the outbox on its PubAck, all of them; a pack
                    # that failed is packed again from what is then pending (maybe not
                    # the same rows: a duplicate in the stream, never in the store)
                    sent = [r.id for m, e in zip(group, results, strict=True)
                            if not isinstance(e, BaseException) for r in m.rows]
                    if sent:  # stored by the partner's stream: one transaction for them all,
                        # not synced (lost in a power cut, they are sent again: duplicates)
                        with outbox.transaction(synced=False):
                            outbox.mark_sent(sent)
                        outbox.reclaim()  # the body log's segments no row names
                    failed = [(r, e) for r, e in zip(group, results, strict=True)
                              if isinstance(e, BaseException)]
                    for _, e in failed:
                        if not isinstance(e, PublishFailed):
                            raise e
                    if failed:
                        for m, e in failed:
                            for r in m.rows:
                                outbox.mark_failed(r.id, str(e))
                        wait = backoff[partner] = min(backoff.get(partner, BACKOFF_MIN_S / 2) * 2,
                                                      BACKOFF_MAX_S)
                        retry_at[partner] = time.monotonic() + wait
                        log.warning("exchange: to %s: %s; again in %.1f s", partner,
                                    failed[0][1], wait)
                        break
                    backoff.pop(partner, None)
                    retry_at.pop(partner, None)
                else:
                    if rows and outbox.has_pending(partner):
                        self._wake_drain.set()  # more than one batch
            timeout = max(0.01, min(retry_at.values(), default=now + 5) - time.monotonic())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake_drain.wait(), timeout)

    async def _consume(self) -> None:
        while True:
            await self.link.connected.wait()
            if not self.link.ready:
                await asyncio.sleep(0.05)
                continue
            try:
                msgs = await self.link.fetch(self.fetch_batch, timeout=1.0)
            except Exception as e:  # noqa: BLE001 -- the connection went away mid-fetch
                log.debug("exchange: fetch: %s: %s", type(e).__name__, e)
                await asyncio.sleep(0.1)
                continue
            if msgs:
                await self._take(msgs)

    async def _take(self, msgs: Sequence[Msg]) -> None:
        """Apply a fetched batch in the worker, then ack each message now durable (stored,
        dead-lettered, refused) and nak the others, to come again."""
        try:
            durable = await self._in_worker(lambda: self._handle_batch(msgs))
        except Exception:  # noqa: BLE001 -- not expected: _handle_batch catches store errors
            log.exception("exchange: a batch of %d not stored; it will come again", len(msgs))
            durable = [False] * len(msgs)
        for msg, ok in zip(msgs, durable, strict=True):
            with contextlib.suppress(Exception):  # lost: redelivered, and a duplicate
                if ok:
                    await msg.ack()
                else:
                    await msg.nak(delay=1.0)
            if ok and _kind(msg.subject) in SEARCH_KINDS:  # reads kept nowhere but the nodes
                await self.link.forget(msg)

    def _handle_batch(self, msgs: Sequence[Msg]) -> list[bool]:
        """Apply `msgs` in order (in the worker): the hits in a row committed together (one
        sink call per sender), each list change alone, in its place between them.  Which
        of `msgs` are durable now; after a store error, none of the rest is applied."""
        grants = self.grants()
        durable = [False] * len(msgs)
        run: dict[str, list[tuple[int, HitMessage]]] = {}  # hits in a row, by sender

        def commit_run() -> bool:
            ok = True
            for sender, items in run.items():
                unique = {h.hit_id: h for _, h in items}  # a hit packed again: once
                try:
                    self.commit_hits(list(unique.values()), sender)
                except Exception:
                    log.exception("exchange: %d hits from %s not stored; they will come "
                                  "again", len(items), sender)
                    ok = False
                    break
                for i, _ in items:
                    durable[i] = True
                self._count("applied", len(unique))
            run.clear()
            return ok

        for i, msg in enumerate(msgs):
            msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
            try:
                receiver, sender, kind = subject_parts(msg.subject)
                if receiver != self.me:
                    raise ProtocolError("invalid", f"subject {msg.subject} is not ours")
                if kind in SEARCH_KINDS:
                    self._search_in(sender, kind, bytes(msg.data))
                    durable[i] = True
                    continue
                decoded = decode_message(msg.data, self.limits)
                if isinstance(decoded, HitMessage | HitPack):
                    # a pack taken whole or dead-lettered whole: each of its hits checked
                    # before any joins the run
                    hits = decoded.hits if isinstance(decoded, HitPack) else (decoded,)
                    ours = [self._hits_in.accept(sender, h, grants) for h in hits]
                    taken = [h for h in ours if h is not None]
                    if len(taken) < len(ours):
                        self._count("not granted", len(ours) - len(taken))
                    if not taken:
                        durable[i] = True
                    else:
                        run.setdefault(sender, []).extend((i, h) for h in taken)
                    continue
                if not commit_run():  # the hits before it first: the order of a list's changes
                    return durable
                if isinstance(decoded, CameraReports):
                    result = self._cameras.apply(sender, decoded, grants)
                else:
                    applied = self._apply_list(msg, sender, decoded, grants)
                    if applied is None:  # it waits for the changes before it: so do the rest
                        return durable
                    result = applied
            except ProtocolError as e:
                self._dead_letter(msg, msg_id, str(e))
                durable[i] = True
                continue
            except Exception:
                log.exception("exchange: %s not applied; it will come again", msg.subject)
                return durable
            self._count(result)
            durable[i] = True
        commit_run()
        return durable

    def _apply_list(self, msg: Msg, sender: str, change: ListChange, grants: Grants
                    ) -> str | None:
        """Apply a list change in its order; None: changes before it have not come yet (it
        is nak'd, and comes again after them), unless it has waited GAP_PATIENCE times."""
        try:
            return self._lists_in.apply(sender, change, grants)
        except ListGap as e:
            delivered = _deliveries(msg)
            if delivered < GAP_PATIENCE:
                log.info("exchange: %s; waiting for them (delivery %d)", e, delivered)
                return None
            return self._lists_in.apply(sender, change, grants, accept_gap=True)

    def _search_in(self, sender: str, kind: str, body: bytes) -> None:
        handler = self.on_search
        if handler is None:
            self._count("search off")
            return
        try:
            handler(sender, kind, body)
        except Exception:  # a bug there must not stop the hits
            log.exception("exchange: a search message from %s not taken", sender)
        self._count(kind)

    def _count(self, result: str, n: int = 1) -> None:
        self.counts[result] = self.counts.get(result, 0) + n

    def _dead_letter(self, msg: Msg, msg_id: str, reason: str) -> None:
        log.warning("exchange: dead-lettered %s %s: %s", msg.subject, msg_id or "(no id)",
                    reason)
        with self._outbox.transaction() as db:
            db.execute("INSERT INTO dead_letters (at, subject, msg_id, reason, body) "
                       "VALUES (?, ?, ?, ?, ?)", (time.time(), msg.subject, msg_id, reason,
                                                  bytes(msg.data)))
        self._count("dead-lettered")

    async def _sync(self) -> None:
        assert self._wake_sync is not None
        last_full = 0.0
        while True:
            self._wake_sync.clear()
            changed = self._grants_changed
            self._grants_changed = False
            full = changed or time.monotonic() - last_full > self.resync_s
            try:
                await self._in_worker(lambda full=full: self._sync_once(full))  # type: ignore[misc]
                if full:
                    last_full = time.monotonic()
            except Exception:
                log.exception("exchange: syncing shared lists failed; again shortly")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake_sync.wait(), self.poll_s)

    def _sync_once(self, full: bool) -> None:
        if self._cameras.sync(self.grants(), force=full):
            self.wake_drain()
        version = self._store.data_version()
        if not full and version == self._data_version:
            return
        self._data_version = version
        grants = self.grants()
        self._lists_in.check_grants(grants)
        if self._sender.sync(grants):
            self.wake_drain()

    def dead_letters(self) -> list[tuple[str, str, str]]:
        """(subject, msg id, reason) of the messages dead-lettered, oldest first."""
        def read() -> list[tuple[str, str, str]]:
            return self._outbox.db.execute(
                "SELECT subject, msg_id, reason FROM dead_letters ORDER BY id").fetchall()
        return self._worker.submit(read).result(10)


def _kind(subject: str) -> str:
    parts = subject.split(".")
    return parts[4] if len(parts) == 5 else ""


class _HasMsgId(Protocol):
    @property
    def msg_id(self) -> str: ...


M = TypeVar("M", bound=_HasMsgId)


def _is_hits(msg_id: str) -> bool:
    return msg_id.startswith(("hit:", "hits:"))


@dataclass(frozen=True)
class _Outgoing:
    """One message to publish: a row of the outbox, or a pack of hits of several rows."""

    subject: str
    body: bytes
    msg_id: str
    rows: tuple[Pending, ...]


def _outgoing(run: Sequence[Pending]) -> _Outgoing:
    if len(run) == 1:  # as before packs: what an older receiver also reads
        r = run[0]
        return _Outgoing(r.subject, r.body, r.msg_id, (r,))
    return _Outgoing(run[0].subject.rpartition(".")[0] + ".hits",
                     pack_parts([r.parts for r in run]),
                     pack_msg_id([r.msg_id for r in run]), tuple(run))


def _packs(rows: Sequence[Pending], max_bytes: int, max_hits: int) -> Iterator[_Outgoing]:
    """`rows` in order as messages: consecutive hits to one subject packed, up to
    `max_hits` of them in a pack of at most `max_bytes` (a hit bigger than that alone, as
    before); every other row (a list change, cameras) a message of its own, in its place."""
    run: list[Pending] = []
    size = 8  # the pack's magic and count
    for r in rows:
        if not r.msg_id.startswith("hit:"):
            if run:
                yield _outgoing(run)
                run, size = [], 8
            yield _Outgoing(r.subject, r.body, r.msg_id, (r,))
            continue
        if run and (r.subject != run[0].subject or len(run) >= max_hits
                    or size + 4 + r.size > max_bytes):
            yield _outgoing(run)
            run, size = [], 8
        run.append(r)
        size += 4 + r.size
    if run:
        yield _outgoing(run)


def _windows(rows: Sequence[M], size: int) -> Iterator[list[M]]:
    """`rows` in order, in groups published together: up to `size` hits (or packs of them)
    in a row, and each other message (a list change) alone, so that only hits, whose order
    the receiver does not depend on, can be stored out of order (when one of a group fails
    and is retried)."""
    group: list[M] = []
    for r in rows:
        if not _is_hits(r.msg_id):
            if group:
                yield group
                group = []
            yield [r]
            continue
        group.append(r)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group
