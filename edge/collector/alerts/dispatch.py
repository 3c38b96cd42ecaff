"""The collector's alerts: route each stored hit to its agencies' webhooks and mailboxes,
queue it durably, and send it from one worker thread per route.

The alerts follow the collector's hits.db (`start(hits_db=...)`, see follow.py): the writer
only wakes the follower after each commit (`hits_committed`), and the follower reads the
new rows and completions from hits.db and queues their alerts, moving its mark in the same
transaction, so a crash at any point loses no alert.  `hits_stored` queues hits given
directly (no mark), e.g. where no hits.db is followed.  A hit goes to the routes of its
list's owner and of its camera's agency (each agency's once, when they are the same),
those whose lists and priority take it.  A completion (revision 1) goes to webhooks as an
update of the same `hit_id` with its own delivery id; mail takes a hit once (see
queue.py).  One worker per route, so one agency's dead receiver holds up nobody else's
alerts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from edge.collector.alerts.config import AlertsConfig, EmailRoute, WebhookRoute
from edge.collector.alerts.email import EmailSender
from edge.collector.alerts.follow import behind, end, read_since
from edge.collector.alerts.queue import AlertQueue, Dropped, Entry, Item, Mark, Result
from edge.collector.alerts.summary import HitLike, summarise
from edge.collector.alerts.webhook import WebhookSender
from edge.collector.hits import HitReader
from edge.core.keys import credentials_dir
from edge.core.link_protocol import HitMessage
from edge.core.log_throttle import LogThrottle

log = logging.getLogger(__name__)

# (the camera's agency, the list owner's) of a hit.
AgencyOf = Callable[[HitLike], tuple[str, str]]
# The agency of hits of a collector that serves no named agencies (the plan's default).
LOCAL = "local"
_MIN_KEY = 16  # characters of an HMAC key, at least
_FOLLOW_S = 1.0  # hits.db is read at least this often (the writer's wake-up aside)
_BATCH = 500  # hits read and queued in one transaction, at most


class Sender(Protocol):
    def send(self, item: Item) -> Result: ...


def default_agencies(hit: HitLike) -> tuple[str, str]:
    """A hit's agencies as its record says (`agency`, `list_agency`), else `local`."""
    agency = str(getattr(hit, "agency", "") or LOCAL)
    return agency, str(getattr(hit, "list_agency", "") or agency)


class AlertsError(RuntimeError):
    """The alerts cannot start: a secret missing or unreadable (the message names it)."""


class Alerts:
    """Alerts of one collector: its queue (`data_dir`/alerts.db) and a sender per route.

    Secrets (HMAC keys, SMTP passwords) and CA files are read from the credentials
    directory at `start()`.  `clock` (Unix seconds) and `rand` drive the back-off; with
    `start(workers=False)` nothing sends until `deliver_due` is called, and nothing is read
    from hits.db until `route_new` is (tests).  `agency_of` gives a hit's agencies
    (default: its record's)."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        data_dir: Path,
        credentials: str | None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        agency_of: AgencyOf | None = None,
    ):
        self.config = config
        self.agency_of = agency_of or default_agencies
        self.path = Path(data_dir) / "alerts.db"
        self._credentials = credentials
        self.clock = clock
        self.rand = rand
        self.queue: AlertQueue | None = None
        self.senders: dict[str, Sender] = {}
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wakes: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self._hits: HitReader | None = None  # hits.db, followed
        self._mark = Mark()
        self._committed = threading.Event()  # the writer committed hits
        self._throttle = LogThrottle(log)
        self._errors = LogThrottle(log, level=logging.ERROR)
        self.routes: dict[str, WebhookRoute | EmailRoute] = {}
        for a in config.routes:
            routes: list[WebhookRoute | EmailRoute] = [*a.webhooks, *a.email]
            for r in routes:
                self.routes[f"{a.agency}/{r.name}"] = r

    # ------------------------------------------------------------ lifecycle

    def start(self, *, workers: bool = True, hits_db: Path | None = None) -> None:
        """Read the secrets, open the queue, and follow `hits_db` (the collector's, there
        already) from the queue's mark; then start the threads (`workers`)."""
        self.senders = {key: self._sender(key, r) for key, r in self.routes.items()}
        self.queue = AlertQueue(self.path, self.config.retry, clock=self.clock, rand=self.rand)
        self._stop.clear()
        pending = self.queue.counts()["pending"]
        if pending:
            log.info("alerts: %d waiting from before, sent again", pending)
        if hits_db is not None:
            try:
                self._follow_from(HitReader(hits_db, connections=1))
            except BaseException:
                self.stop()
                raise
        if not workers:
            return
        if self._hits is not None:
            t = threading.Thread(target=self._follow, name="alerts-follow", daemon=True)
            t.start()
            self._threads.append(t)
        for key in self.routes:
            self._wakes[key] = threading.Event()
            t = threading.Thread(target=self._work, args=(key,), name=f"alerts-{key}",
                                 daemon=True)  # fmt: skip
            t.start()
            self._threads.append(t)
        log.info("alerts: %d routes: %s", len(self.routes), ", ".join(self.routes))

    def stop(self) -> None:
        self._stop.set()
        self._committed.set()
        for wake in self._wakes.values():
            wake.set()
        for t in self._threads:
            t.join(30)  # at most a send's timeout
            if t.is_alive():
                log.error("thread %s did not stop", t.name)
        self._threads.clear()
        self._wakes.clear()
        if self._hits is not None:
            self._hits.close()
            self._hits = None
        if self.queue is not None:
            self.queue.close()
            self.queue = None

    def _sender(self, key: str, route: WebhookRoute | EmailRoute) -> Sender:
        if isinstance(route, WebhookRoute):
            secret = self._secret(key, route.secret_file)
            if len(secret) < _MIN_KEY:
                raise AlertsError(f"alerts {key}: {route.secret_file} holds a key of fewer "
                                  f"than {_MIN_KEY} characters")  # fmt: skip
            return WebhookSender(route, secret.encode(), ca_file=self._ca(key, route.ca_file),
                                 clock=self.clock)  # fmt: skip
        password = self._secret(key, route.password_file) if route.password_file else None
        return EmailSender(route, password, ca_file=self._ca(key, route.ca_file),
                           console_url=self.config.console_url)  # fmt: skip

    def _file(self, key: str, name: str) -> Path:
        if name.startswith("/"):
            return Path(name)
        try:
            return credentials_dir(self._credentials) / name
        except ValueError as e:
            raise AlertsError(f"alerts {key}: {e}") from None

    def _secret(self, key: str, name: str) -> str:
        path = self._file(key, name)
        try:
            text = path.read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise AlertsError(f"alerts {key}: cannot read {path}: {e}") from None
        if not text:
            raise AlertsError(f"alerts {key}: {path} is empty")
        return text

    def _ca(self, key: str, name: str | None) -> Path | None:
        if name is None:
            return None
        path = self._file(key, name)
        if not path.is_file():
            raise AlertsError(f"alerts {key}: CA file {path} is not there")
        return path

    # ------------------------------------------------------------ following hits.db

    def _follow_from(self, reader: HitReader) -> None:
        assert self.queue is not None
        reader.check()
        mark = self.queue.mark()
        if mark is None:
            mark = end(reader)
            self.queue.enqueue([], mark)
            log.info(
                "alerts: no mark in alerts.db yet (new, or from before the alerts followed "
                "hits.db): hits.db followed from its end (row %d, change %d); the hits "
                "stored before are not alerted",
                mark.rowid,
                mark.change,
            )
        else:
            n = behind(reader, mark)
            if n:
                log.info(
                    "alerts: %d hits stored since the last routed (row %d of hits.db): routed now",
                    n,
                    mark.rowid,
                )
        self._hits, self._mark = reader, mark

    def hits_committed(self) -> None:
        """The writer's hook: it committed hits to hits.db (costs it an Event.set)."""
        self._committed.set()

    def route_new(self) -> int:
        """Queue the alerts of what hits.db stored since the mark (up to a batch), moving
        the mark in the same transaction; how many hits (rows and changes) were read.

        Only one thread calls it (the follower, or a test without workers)."""
        reader, queue = self._hits, self.queue
        if reader is None or queue is None:
            raise RuntimeError("alerts not started on a hits.db")
        hits, mark = read_since(reader, self._mark, _BATCH)
        if mark == self._mark:
            return 0
        entries = [e for hit in hits for e in self._entries(hit, self.agency_of, reader)]
        added, dropped = queue.enqueue(entries, mark)  # raises: the mark stays, read again
        self._mark = mark
        self._queued(entries, added, dropped)
        return len(hits)

    def _follow(self) -> None:
        while not self._stop.is_set():
            self._committed.clear()
            try:
                while self.route_new() and not self._stop.is_set():
                    pass
            except Exception as e:
                self._count("alerts_follow_errors")
                self._errors("follow", "alerts: could not route new hits (tried again): %s", e)
            self._committed.wait(_FOLLOW_S)

    # ------------------------------------------------------------ the hook

    def hits_stored(self, hits: Iterable[HitLike], agency_of: AgencyOf | None = None) -> int:
        """Queue the alerts of `hits`, just stored (or completed); how many were queued.

        Never raises: the hits are stored whatever becomes of their alerts, and a queue
        that cannot be written is logged as an error."""
        queue = self.queue
        if queue is None:
            raise RuntimeError("alerts not started")
        entries: list[Entry] = []
        try:
            for hit in hits:
                entries.extend(self._entries(hit, agency_of or self.agency_of))
            if not entries:
                return 0
            added, dropped = queue.enqueue(entries)
        except Exception as e:
            self._count("alerts_lost", len(entries) or 1)
            self._errors("queue", "alerts: could not queue %d alerts: %s", len(entries), e)
            return 0
        self._queued(entries, added, dropped)
        return added

    def _queued(self, entries: list[Entry], added: int, dropped: list[Dropped]) -> None:
        self._count("alerts_queued", added)
        for d in dropped:
            self._count("alerts_dropped")
            self._errors(("full", d.route, d.refused), "alerts: hit %s (priority %d) to %s: %s",
                         d.hit_id, d.priority, d.route, d.detail)  # fmt: skip
        for entry in entries:
            wake = self._wakes.get(entry.route)
            if wake is not None:
                wake.set()

    def _entries(
        self, hit: HitLike, agency_of: AgencyOf, reader: HitReader | None = None
    ) -> list[Entry]:
        agency, list_agency = agency_of(hit)
        summary = summarise(hit, agency, list_agency)
        picture: list[bytes] = []

        def crop() -> bytes:  # read once, when a route sends it
            if not picture:
                if isinstance(hit, HitMessage):
                    picture.append(hit.crop_jpeg)
                elif reader is not None and hit.crop_bytes:
                    picture.append(reader.picture(hit.hit_id, "crop") or b"")
                else:
                    picture.append(b"")
            return picture[0]

        out: list[Entry] = []
        for owner in dict.fromkeys((list_agency, agency)):  # each agency once
            routes = self.config.of(owner)
            if routes is None:
                continue
            for w in routes.webhooks:
                if w.takes(summary.list, summary.priority, owner):
                    out.append(Entry(f"{owner}/{w.name}", summary,
                                     crop() if w.include_crop else b""))  # fmt: skip
            for m in routes.email:
                if m.takes(summary.list, summary.priority, owner):
                    out.append(Entry(f"{owner}/{m.name}", summary, once_per_hit=True))
        return out

    # ------------------------------------------------------------ sending

    def deliver_due(self, route: str, limit: int = 50) -> int:
        """Send the items of `route` due now; how many were tried."""
        queue, sender = self.queue, self.senders[route]
        assert queue is not None
        n = 0
        for item in queue.due(route, limit):
            if self._stop.is_set() and self._threads:
                break
            n += 1
            s = item.summary
            what = f"alert of hit {s.hit_id} (revision {s.revision}) to {route}"
            if queue.too_old(item):
                queue.dead(item, "too old to send", attempted=False)
                self._count("alerts_dead")
                log.error("%s dead-lettered: older than %.0f s", what, queue.retry.max_age_s)
                continue
            try:
                result = sender.send(item)
            except Exception as e:  # a fault of ours: logged, and the item kept
                log.exception("%s: the sender failed", what)
                result = Result("retry", f"{type(e).__name__}: {e}")
            if result.kind == "delivered":
                queue.delivered(item)
                self._count("alerts_delivered")
                log.info("%s delivered: %s", what, result.detail)
            elif result.kind == "failed":
                queue.dead(item, result.detail)
                self._count("alerts_dead")
                log.error("%s dead-lettered, not retried: %s", what, result.detail)
            else:
                delay = queue.retry_later(item, result.detail)
                if delay is None:
                    self._count("alerts_dead")
                    log.error("%s dead-lettered after %d attempts: %s", what,
                              item.attempts + 1, result.detail)  # fmt: skip
                else:
                    self._count("alerts_retried")
                    self._throttle(("retry", route), "%s failed (attempt %d), again in %.1f s: "
                                   "%s", what, item.attempts + 1, delay, result.detail)  # fmt: skip
        return n

    def _work(self, route: str) -> None:
        wake = self._wakes[route]
        next_prune = 0.0
        while not self._stop.is_set():
            wake.clear()
            try:
                while self.deliver_due(route) and not self._stop.is_set():
                    pass
                if route == next(iter(self.routes)) and time.monotonic() >= next_prune:
                    assert self.queue is not None
                    self.queue.prune()  # one worker does it, hourly
                    next_prune = time.monotonic() + 3600
                due = self.queue.next_at(route) if self.queue is not None else None
            except Exception:
                log.exception("alerts worker %s: the queue failed; trying again", route)
                due = self.clock() + 5
            wait = 60.0 if due is None else min(60.0, max(0.0, due - self.clock()))
            wake.wait(wait)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters)
