"""The agreements in force in a running collector: watched, audited, told to what shares.

One `AgreementsService` per collector process holds the agreements of `agreements_dir`
(`edge.collector.agreements`). A thread looks at the directory every `poll_s` and wakes
at the next instant an agreement comes into force or expires, so a change, a revocation
(its file removed) or an expiry takes effect without a restart and within a poll. Each
change is logged and audited, line by line, and told to the parts that share (the NATS
exchange stops a flow, the watchlist master drops a partner's lists). A directory that
becomes invalid keeps the agreements in force, and the error is logged and audited once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from edge.collector.agreements import Agreements, AgreementsWatcher
from edge.collector.retention import Clock
from edge.core.times import utc_now

log = logging.getLogger(__name__)

# (action, detail) into the audit trail nobody can edit.
Audit = Callable[[str, str], None]
Listener = Callable[[Agreements, list[str]], None]


class AgreementsService:
    """The agreements of `directory` (none when it is None), kept current by a thread."""

    def __init__(
        self,
        directory: Path | None,
        *,
        audit: Audit | None = None,
        poll_s: float = 1.0,
        clock: Clock = utc_now,
    ):
        self.directory = directory
        self.poll_s = poll_s
        self._clock = clock
        self._audit = audit
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the listeners
        self._checking = threading.Lock()
        self._watcher: AgreementsWatcher | None = None
        if directory is not None:
            self._watcher = AgreementsWatcher(
                directory, self._changed, self._rejected, clock=clock
            )

    def current(self) -> Agreements:
        """The agreements in force now (safe from any thread)."""
        if self._watcher is None:
            return Agreements.empty()
        return self._watcher.current()

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(agreements, lines)` after each change (on the watching thread)."""
        with self._lock:
            self._listeners.append(listener)

    def check(self) -> bool:
        """Look at the directory now; True when the agreements changed."""
        if self._watcher is None:
            return False
        with self._checking:  # one checker at a time: the thread, or a caller that cannot wait
            return self._watcher.check()

    # ------------------------------------------------------------ a collector component

    def start(self, ctx: object = None) -> None:
        if self._watcher is None:
            log.info("no agreements_dir: nothing is shared with partner agencies")
            return
        agreements = self.current()
        log.info("agreements from %s: %d in force, agencies %s", self.directory,
                 len(agreements.in_force()), ", ".join(sorted(agreements.agencies)) or "none")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="agreements", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def alive(self) -> bool:
        return self._watcher is None or (self._thread is not None and self._thread.is_alive())

    def _run(self) -> None:
        assert self._watcher is not None
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # a bug here must not stop the watching: logged, tried again
                log.exception("agreements: the check failed")
            wait = self.poll_s
            upcoming = self._watcher.next_change()
            if upcoming is not None:
                wait = min(wait, max(0.0, (upcoming - self._clock()).total_seconds()))
            self._stop.wait(wait)

    def _changed(self, agreements: Agreements, lines: list[str]) -> None:
        for line in lines:
            log.warning("agreements: %s", line)
            self._write_audit("agreements changed", line)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(agreements, lines)
            except Exception:
                log.exception("agreements: a part failed to take the change")

    def _rejected(self, message: str) -> None:
        log.error("agreements: %s; the agreements in force stay as they were", message)
        self._write_audit("agreements rejected", message)

    def _write_audit(self, action: str, detail: str) -> None:
        if self._audit is None:
            return
        try:
            self._audit(action, detail)
        except Exception as e:  # the log has it; the audit database may be away
            log.error("agreements: could not write the audit (%s): %s", action, e)
