"""New hits to every open console page: one thread watches the hits database, each page listens.

The collector's writer commits hits in its own thread and knows nothing of pages;
this hub looks at the database every `poll_s` (one indexed query for rows after the
last it saw, one for hits updated since) and hands each new or updated hit to every
subscriber's queue on the web server's event loop. An updated hit (an early hit the
pass's final read completed) goes out as a `hit` of the same id: pages redraw its card,
and do not alert again.  Acknowledgements are published by the request that made them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from edge.collector.console.data import ConsoleData

log = logging.getLogger(__name__)

Event = tuple[str, Any] | None  # ("hit" | "ack", data); None: the stream ends
_BATCH = 200  # hits read at a time
_MAX_BEHIND = 5000  # events a page may have waiting before it is cut off (it reconnects)


class _Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:  # on the subscriber's loop
        if self.queue.qsize() >= _MAX_BEHIND and event is not None:
            while not self.queue.empty():
                self.queue.get_nowait()
            event = None  # the page reconnects and reloads the board
        self.queue.put_nowait(event)

    async def get(self) -> Event:
        return await self.queue.get()


class LiveHub:
    """Watch `data` for new hits every `poll_s`; fan them and acknowledgements out."""

    def __init__(self, data: ConsoleData, poll_s: float = 0.2):
        self.data = data
        self.poll_s = poll_s
        self._subs: set[_Subscriber] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_rowid = 0
        self.last_change = 0
        self.published = 0

    def start(self) -> None:
        self.last_rowid = self.data.last_rowid()
        self.last_change = self.data.last_change()
        self.data.load_places()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="console-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            self._deliver(sub, None)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def subscribe(self) -> _Subscriber:
        """A queue of events for the caller (on its running event loop)."""
        sub = _Subscriber(asyncio.get_running_loop())
        with self._lock:
            self._subs.add(sub)
        if self._stop.is_set():
            sub.put(None)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, kind: str, data: Any) -> None:
        """Hand an event to every subscriber (from any thread)."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            self._deliver(sub, (kind, data))
        self.published += 1

    @staticmethod
    def _deliver(sub: _Subscriber, event: Event) -> None:
        try:
            sub.loop.call_soon_threadsafe(sub.put, event)
        except RuntimeError:  # its loop has closed: the page is gone
            pass

    def _run(self) -> None:
        failing_since: float | None = None
        more = False
        while not self._stop.wait(0 if more else self.poll_s):
            try:
                hits = self.data.hits_after(self.last_rowid, _BATCH)
                change, changed = self.data.changed_after(self.last_change, _BATCH)
            except Exception as e:  # a locked or vanished database: say so, keep trying
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("console: cannot read new hits: %s", e)
                more = False
                continue
            if failing_since is not None:
                log.info("console: reading hits again")
                failing_since = None
            for h in hits:
                self.publish("hit", h)
                self.last_rowid = h["rowid"]
            for h in changed:
                if h["rowid"] <= self.last_rowid:  # a new hit was sent as it is now
                    self.publish("hit", h)
            self.last_change = change
            more = len(hits) == _BATCH or len(changed) == _BATCH
