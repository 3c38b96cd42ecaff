"""A problem that recurs is logged once a period, not once a time: `LogThrottle`.

(Not the console's sign-in limits, `edge.collector.console.throttle`: those refuse
requests; this only keeps a log readable.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable


class LogThrottle:
    """Log each kind of event at most once per `every_s`, saying how many were not logged.

    A kind is any hashable `key` the caller chooses ("disk", a node's name, a public key).
    At most `max_keys` kinds are remembered; past that all are forgotten, so a peer that
    makes up a new kind for every message cannot grow the table.  Thread-safe.
    """

    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = 10.0,
        *,
        level: int = logging.WARNING,
        max_keys: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger = logger
        self.every_s = every_s
        self.level = level
        self.max_keys = max_keys
        self.clock = clock
        self._last: dict[Hashable, float] = {}
        self._quiet: Counter[Hashable] = Counter()
        self._lock = threading.Lock()

    def __call__(self, key: Hashable, msg: str, *args: object) -> bool:
        """Log `msg % args` unless `key` was logged within `every_s`; whether it was."""
        now = self.clock()
        with self._lock:
            if now - self._last.get(key, float("-inf")) < self.every_s:
                self._quiet[key] += 1
                return False
            if len(self._last) > self.max_keys:
                self._last.clear()
                self._quiet.clear()
            self._last[key] = now
            quiet = self._quiet.pop(key, 0)
        suffix = f" ({quiet} more like it not logged)" if quiet else ""
        self.logger.log(self.level, msg + suffix, *args, stacklevel=2)
        return True
