"""Console connections: a time to send a request's head, a ceiling, descriptors kept for the link.

uvicorn closes a connection that is idle after a response (`timeout_keep_alive`) but not
one that never sends a request, nor one that sends its head a byte at a time: a thousand
such sockets held the collector's descriptors for ever.  `protocol()` gives uvicorn an
HTTP/1.1 protocol (its h11 one) that closes a connection whose request head has not all
come within `header_timeout_s` of the connection (or of the previous response), and
that closes a new connection at once while `max_connections` are open.

`reserve_descriptors()` raises the process's soft limit of open files to its hard limit
(at the collector's start, where the console is started) and says how many connections
the console may hold so that the rest stay for the link to the edges.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

LINK_RESERVE = 1024  # descriptors kept for the link, the databases and the pictures
# How long, and how much of, the rest of a refused body is taken (and dropped) before the
# connection is closed, so that a client sending it all before it reads sees the answer.
LINGER_S = 2.0
LINGER_BYTES = 16 * 1024**2
_WARN_EVERY_S = 60.0


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    max_connections: int


def protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The HTTP protocol class for uvicorn.Config(http=...), with these limits."""
    return type("ConsoleProtocol", (_GuardedH11,), {"limits": limits})


class _GuardedH11(H11Protocol):
    limits: ConnectionLimits
    _last_warning = 0.0  # class-wide: one warning a minute, however many are refused

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._raw: asyncio.Transport | None = None
        self._dropped = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        super().connection_made(_Lingering(transport, self))  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections:
            now = time.monotonic()
            if now - _GuardedH11._last_warning > _WARN_EVERY_S:
                _GuardedH11._last_warning = now
                log.warning("console: %d connections open; closing new ones until fewer",
                            self.limits.max_connections)  # fmt: skip
            transport.close()
            return
        self._wait_for_head()

    def data_received(self, data: bytes) -> None:
        if self._linger_timer is not None:  # the rest of a refused body: dropped as it comes
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES and self._raw is not None:
                self._raw.close()
            return
        super().data_received(data)
        if self._head_timer is not None and self.conn.their_state is not h11.IDLE:
            self._head_timer.cancel()  # a whole request head came
            self._head_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = None
        super().connection_lost(exc)

    def linger(self) -> bool:
        """Instead of closing now: the answer (a 413, say) was sent while the client is still
        sending the body; closing with its bytes unread would reset the connection and lose
        the answer on the way.  So say we are done, drop what still comes for LINGER_S (or
        LINGER_BYTES), and close then.  False when there is nothing to wait for."""
        raw = self._raw
        if raw is None or raw.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return False
        if self._linger_timer is None:
            raw.resume_reading()
            if raw.can_write_eof():
                raw.write_eof()
            self._linger_timer = self.loop.call_later(LINGER_S, raw.close)
        return True

    def _wait_for_head(self) -> None:
        # Not put off by bytes that come: a head sent a byte at a time is closed on time.
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._no_head)

    def _no_head(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class _Lingering:
    """A connection's transport that lingers (see `linger`) when uvicorn closes it."""

    def __init__(self, transport: asyncio.Transport, protocol: _GuardedH11):
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        if not self._protocol.linger():
            self._transport.close()

    def is_closing(self) -> bool:
        return self._protocol._linger_timer is not None or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def reserve_descriptors(max_connections: int, reserve: int = LINK_RESERVE) -> int:
    """Raise the soft limit of open files to the hard one; return how many connections the
    console may hold (`max_connections`, or fewer so that `reserve` stay for the rest)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("console: cannot raise the open-file limit from %d: %s", soft, e)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    allowed = max(8, (soft - reserve) // 2)
    if max_connections > allowed:
        log.warning("console: max_connections %d lowered to %d: the process may open %d files"
                    " and the link to the edges needs its share", max_connections, allowed, soft)
        return allowed
    return max_connections
