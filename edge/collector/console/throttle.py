"""Sign-ins: failures counted before a password is checked, hashes bounded, refusals summed.

`SignInThrottle` admits an attempt only while the failures and the attempts still being
checked of its (name, address), its address and its name are under their limits; the
attempt is counted as it is admitted, so a burst of guesses sent at once gets no more
checks than a burst sent one by one.  A lock-out grows with each lock of the same key.
`HashGate` lets a few password hashes run at once (argon2 takes 64 MiB and a core each)
with a short queue, and turns the rest away at once.  `RefusalLog` makes the audit trail
one row for the first refused attempt of a name and address in a window and one row with
the count of the rest, not a row for each.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edge.core.times import iso

T = TypeVar("T")

# Failures within the window that lock a key: an attacker's guesses at one name from one
# address lock only that pair, so the operator at another desk still signs in; one address
# trying many names, and one name tried from many addresses, have higher ceilings.
LIMITS = {"pair": 5, "addr": 20, "user": 100}
FAILURE_WINDOW_S = 600.0
LOCKOUT_S = 60.0  # the first lock of a key; each further one doubles it ...
MAX_LOCKOUT_S = 3600.0  # ... up to this
STRIKES_FORGOTTEN_S = 3600.0  # a key's earlier locks count until it has not failed this long
MAX_KEYS = 10_000  # keys the table holds; past it the oldest unlocked ones go first
_EVICT_SCAN = 64


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    pending: int = 0  # admitted, being checked
    locked_until: float = 0.0
    strikes: int = 0  # locks so far
    last_failure: float = float("-inf")

    def prune(self, now: float) -> None:
        while self.failures and now - self.failures[0] > FAILURE_WINDOW_S:
            self.failures.popleft()
        if self.strikes and now - self.last_failure > STRIKES_FORGOTTEN_S:
            self.strikes = 0

    def clean(self, now: float) -> bool:
        return (not self.pending and not self.failures and self.locked_until <= now
                and not self.strikes)  # fmt: skip


@dataclass(frozen=True)
class Attempt:
    """An admitted sign-in: tell the throttle how it went (`failed`, `succeeded`, `cancel`)."""

    keys: tuple[str, ...]
    records: tuple[_Record, ...]


@dataclass(frozen=True)
class Verdict:
    attempt: Attempt | None  # None: refused
    wait_s: float = 0.0  # when refused: how long until it may try again
    reason: str = ""


class SignInThrottle:
    """In memory (a restart forgets, which is fine for locks of minutes); thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS):
        self.clock = clock
        self.max_keys = max_keys
        self._table: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def keys(name: str, address: str) -> tuple[str, ...]:
        name = name.lower()
        return (f"pair:{name}\0{address}", f"addr:{address}", f"user:{name}")

    def begin(self, name: str, address: str) -> Verdict:
        """Admit an attempt for `name` from `address` (counted now), or say why not."""
        keys = self.keys(name, address)
        with self._lock:
            now = self.clock()
            records = tuple(self._record(k, now) for k in keys)
            wait, reason = 0.0, ""
            for key, rec in zip(keys, records, strict=True):
                limit = LIMITS[key.split(":", 1)[0]]
                if rec.locked_until > now:
                    if rec.locked_until - now > wait:
                        wait, reason = rec.locked_until - now, "too many failures"
                elif len(rec.failures) + rec.pending >= limit and not wait:
                    # The attempts being checked may all fail: wait for their verdict.
                    wait, reason = 1.0, "too many attempts at once"
            if wait:
                return Verdict(None, wait, reason)
            for rec in records:
                rec.pending += 1
            return Verdict(Attempt(keys, records))

    def failed(self, attempt: Attempt) -> None:
        with self._lock:
            now = self.clock()
            for key, rec in zip(attempt.keys, attempt.records, strict=True):
                rec.pending = max(0, rec.pending - 1)
                rec.prune(now)
                rec.failures.append(now)
                rec.last_failure = now
                if len(rec.failures) >= LIMITS[key.split(":", 1)[0]]:
                    rec.locked_until = now + min(MAX_LOCKOUT_S, LOCKOUT_S * 2**rec.strikes)
                    rec.strikes += 1
                    rec.failures.clear()
                self._touch(key, rec)

    def succeeded(self, attempt: Attempt) -> None:
        """The right password: that name and address start again; the others keep counting."""
        with self._lock:
            now = self.clock()
            for key, rec in zip(attempt.keys, attempt.records, strict=True):
                rec.pending = max(0, rec.pending - 1)
                if key.startswith("pair:"):
                    rec.failures.clear()
                    rec.strikes = 0
                self._forget_if_clean(key, rec, now)

    def cancel(self, attempt: Attempt) -> None:
        """The attempt was never checked (no turn to hash, or an error)."""
        with self._lock:
            now = self.clock()
            for key, rec in zip(attempt.keys, attempt.records, strict=True):
                rec.pending = max(0, rec.pending - 1)
                self._forget_if_clean(key, rec, now)

    def __len__(self) -> int:
        with self._lock:
            return len(self._table)

    def locked(self, name: str, address: str) -> float:
        """Seconds until `name` may try from `address` again (0: now); counts nothing."""
        with self._lock:
            now = self.clock()
            waits = [r.locked_until - now for k in self.keys(name, address)
                     if (r := self._table.get(k)) is not None]  # fmt: skip
            return max([0.0, *waits])

    # under self._lock
    def _record(self, key: str, now: float) -> _Record:
        rec = self._table.get(key)
        if rec is None:
            if len(self._table) >= self.max_keys:
                self._evict(now)
            rec = self._table[key] = _Record()
        rec.prune(now)
        self._table.move_to_end(key)
        return rec

    def _touch(self, key: str, rec: _Record) -> None:
        if self._table.get(key) is rec:
            self._table.move_to_end(key)

    def _forget_if_clean(self, key: str, rec: _Record, now: float) -> None:
        rec.prune(now)
        if rec.clean(now) and self._table.get(key) is rec:
            del self._table[key]

    def _evict(self, now: float) -> None:
        """Drop one key: the oldest not locked nor being checked among the oldest few, else
        the oldest.  (Emptying the table would unlock everyone an attacker wanted unlocked.)"""
        for i, (key, rec) in enumerate(self._table.items()):
            if i >= _EVICT_SCAN:
                break
            if not rec.pending and rec.locked_until <= now:
                del self._table[key]
                return
        self._table.popitem(last=False)


class HashGate:
    """At most `concurrency` password checks at once, `queue` more waiting; thread-safe."""

    def __init__(self, concurrency: int = 2, queue: int = 8):
        self.limit = concurrency + queue
        self._turns = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self.admitted = 0

    def try_enter(self) -> bool:
        """Take a place (running or waiting), or False at once when there is none."""
        with self._lock:
            if self.admitted >= self.limit:
                return False
            self.admitted += 1
            return True

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """In a worker thread, after `try_enter`: wait for a turn, run `fn`, free the place.
        The place is freed here, by the thread that hashed, not by the request: a request
        that went away does not make room while its hash still runs."""
        try:
            with self._turns:
                return fn(*args)
        finally:
            with self._lock:
                self.admitted -= 1

    def leave(self) -> None:
        """Free a place taken by `try_enter` that `run` will not be called for."""
        with self._lock:
            self.admitted -= 1


AuditRow = tuple[str, str, str, str]  # (user, action, detail, address)


@dataclass
class _Window:
    started: float
    started_wall: float
    count: int = 0  # refusals after the first


class RefusalLog:
    """Refused sign-ins summed per (name, address, reason) and window, for the audit trail.

    `note` returns the rows to append now: one for the first refusal of a window, and one
    with the count of the rest of an earlier window that has ended.  `due` and `drain` give
    the counts of ended (or all) windows, for a caller to append now and then and at stop.
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS):  # fmt: skip
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._open: OrderedDict[tuple[str, str, str], _Window] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, name: str, address: str, reason: str) -> list[AuditRow]:
        with self._lock:
            now = self.clock()
            rows = self._ended(now)
            key = (name, address, reason)
            win = self._open.get(key)
            if win is not None:
                win.count += 1
                return rows
            if len(self._open) >= self.max_keys:
                oldest = self._close(*self._open.popitem(last=False))
                if oldest is not None:
                    rows.append(oldest)
            self._open[key] = _Window(now, time.time())
            rows.append((name, "sign-in refused", reason, address))
            return rows

    def due(self) -> list[AuditRow]:
        with self._lock:
            return self._ended(self.clock())

    def drain(self) -> list[AuditRow]:
        with self._lock:
            rows = [self._close(k, w) for k, w in self._open.items()]
            self._open.clear()
            return [r for r in rows if r is not None]

    # under self._lock
    def _ended(self, now: float) -> list[AuditRow]:
        rows = []
        while self._open:
            key, win = next(iter(self._open.items()))
            if now - win.started < self.window_s:
                break  # windows are opened in time order: the rest are younger
            del self._open[key]
            row = self._close(key, win)
            if row is not None:
                rows.append(row)
        return rows

    def _close(self, key: tuple[str, str, str], win: _Window) -> AuditRow | None:
        if not win.count:
            return None
        name, address, reason = key
        since = iso(win.started_wall, "seconds")
        return (name, "sign-in refused",
                f"{reason}: {win.count} more refused since {since}", address)  # fmt: skip


