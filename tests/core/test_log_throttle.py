"""The one log throttle (`edge.core.log_throttle`): once a period per kind, with the count."""

from __future__ import annotations

import logging
import math

from edge.core.log_throttle import LogThrottle

log = logging.getLogger("test.log_throttle")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_once_a_period_per_kind_then_the_count_of_the_rest(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    clock = Clock()
    throttle = LogThrottle(log, 10.0, clock=clock)
    assert throttle("disk", "disk failed: %s", "EIO")
    assert not throttle("disk", "disk failed: %s", "EIO")
    assert throttle("store", "store failed")  # another kind is not held back
    clock.now += 9.9
    assert not throttle("disk", "disk failed: %s", "EIO")
    clock.now += 0.1
    assert throttle("disk", "disk failed: %s", "ENOSPC")
    assert messages(caplog) == [
        "disk failed: EIO",
        "store failed",
        "disk failed: ENOSPC (2 more like it not logged)",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert caplog.records[0].funcName == "test_once_a_period_per_kind_then_the_count_of_the_rest"


def test_a_flood_of_new_kinds_is_forgotten_not_kept(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    throttle = LogThrottle(log, math.inf, level=logging.ERROR, max_keys=3, clock=Clock())
    for key in range(10):
        assert throttle(key, "bad change %d", key)
        assert not throttle(key, "bad change %d", key)  # once, for as long as remembered
    assert len(throttle._last) <= 4 and len(throttle._quiet) <= 4
    assert len(messages(caplog)) == 10 and caplog.records[0].levelno == logging.ERROR
