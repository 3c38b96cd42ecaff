"""How the collector judges a node from its heartbeats: ok, late or unhealthy, and why."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from edge.core.status import NodeStatus, Problem
from edge.core.times import parse_iso

LATE_BEATS = 3  # heartbeats a node may miss before it is late
MIN_LATE_S = 30.0
DEFAULT_HEARTBEAT_S = 10.0  # a node's, when its status does not say
UNREADABLE = "unreadable status"


class UnreadableStatus(ValueError):
    """A stored status that is not a `NodeStatus` (written by an older collector)."""


def read_status(raw: object) -> NodeStatus | None:
    """A node's stored status as the record it is: `raw` is the JSON text of the nodes
    table, or that text already loaded; None where no status was ever stored.

    The collector stores only what validated on receipt; a row an older collector wrote
    may not, and raises `UnreadableStatus`: readers show it as such, never fail on it.
    """
    if raw is None or raw == "":
        return None
    try:
        if isinstance(raw, str | bytes):
            raw = json.loads(raw)
        return NodeStatus.model_validate(raw)
    except (ValueError, RecursionError, ValidationError) as e:  # json's: ValueError
        raise UnreadableStatus(str(e)[:200]) from None


@dataclass(frozen=True)
class NodeHealth:
    """The collector's verdict on a node ('ok', 'late' or 'unhealthy'), and why: its own
    findings (`notes`: not heard, an unreadable status) and what the node said is wrong
    (`problems`); `status` is the node's last status, if it could be read."""

    verdict: str
    notes: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    status: NodeStatus | None = None

    @property
    def reasons(self) -> list[str]:
        """Why, as operators read it: the collector's notes, then the node's problems."""
        return [*self.notes, *(str(p) for p in self.problems)]


def judge_node(n: Mapping[str, Any], now: dt.datetime,
               late_after_s: float | None = None) -> NodeHealth:
    """Judge node row `n` (`last_seen`, `status`, as the store gives them): late when no
    heartbeat came for `late_after_s` (default: three of the node's own heartbeat
    intervals, at least 30 s); unhealthy when its last status says something is wrong (a
    camera frozen, black, dead or slow, a hung loop, a store near its budget) or cannot
    be read."""
    notes: tuple[str, ...] = ()
    try:
        status = read_status(n.get("status"))
    except UnreadableStatus:
        status, notes = None, (UNREADABLE,)
    problems: tuple[Problem, ...] = ()
    if status is not None and not status.health.ok:
        problems = tuple(status.health.problems)
        if not problems:
            notes = ("unhealthy",)
    if not n.get("last_seen"):
        return NodeHealth("late", ("never heard",), status=status)
    age = (now - parse_iso(n["last_seen"])).total_seconds()
    beat = status.heartbeat_s if status is not None else None
    limit = late_after_s or max(MIN_LATE_S, LATE_BEATS * (beat or DEFAULT_HEARTBEAT_S))
    if age > limit:
        late = f"not heard for {age:.0f} s (late after {limit:.0f} s)"
        return NodeHealth("late", (late, *notes), problems, status)
    return NodeHealth("unhealthy" if notes or problems else "ok", notes, problems, status)
