"""systemd's notify protocol (sd_notify): READY, STATUS, WATCHDOG and STOPPING to $NOTIFY_SOCKET.

Written here rather than taken from a package: the protocol is one datagram of
KEY=VALUE lines sent to the AF_UNIX socket named in $NOTIFY_SOCKET (a path, or an
'@' name in Linux's abstract namespace), about thirty lines; `systemd-python` needs
libsystemd's headers to build, and `sdnotify` has not been released since 2017.
Outside systemd (no $NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends state changes to systemd; `address` is $NOTIFY_SOCKET's value (None: off)."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._target: str | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed = False
        if self.address is None:
            return
        if self.address.startswith("@"):
            self._target = "\0" + self.address[1:]  # the abstract namespace
        elif self.address.startswith("/"):
            self._target = self.address
        else:
            # systemd 254+ may also hand out vsock: addresses (for VMs); not a roadside box
            log.warning("NOTIFY_SOCKET %r is not an AF_UNIX address; not notifying systemd",
                        self.address)
            self.address = None
            return
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        return cls((os.environ if environ is None else environ).get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: tuple[str, object]) -> bool:
        """Send KEY=VALUE fields in one datagram; True if it went out."""
        if self._sock is None or self._target is None:
            return False
        # A value is one line: a newline inside it would start a field of its own.
        text = "\n".join(f"{key}={' '.join(str(value).split())}" for key, value in fields)
        try:
            with self._lock:
                self._sock.sendto(text.encode(), self._target)
        except OSError as exc:
            if not self._failed:  # once: a gone socket must not flood the log
                log.warning("cannot notify systemd at %s: %s", self.address, exc)
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str = "") -> bool:
        fields: list[tuple[str, object]] = [("READY", 1)]
        if status:
            fields.append(("STATUS", status))
        fields.append(("MAINPID", os.getpid()))
        return self.send(*fields)

    def status(self, text: str) -> bool:
        return self.send(("STATUS", text))

    def watchdog(self) -> bool:
        return self.send(("WATCHDOG", 1))

    def stopping(self, status: str = "") -> bool:
        fields: list[tuple[str, object]] = [("STOPPING", 1)]
        if status:
            fields.append(("STATUS", status))
        return self.send(*fields)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more to start or stop (systemd 236+)."""
        return self.send(("EXTEND_TIMEOUT_USEC", int(seconds * 1_000_000)))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_period(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings: half of systemd's WATCHDOG_USEC, or None when the
    watchdog is off or meant for another process (WATCHDOG_PID)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID", "0") or 0)
    except ValueError:
        log.warning("WATCHDOG_USEC/WATCHDOG_PID are not numbers; no watchdog pings")
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 2_000_000
