"""How the collector judges a node from its heartbeats: ok, late or unhealthy, and why."""

from __future__ import annotations

import datetime as dt
from typing import Any

from edge.core.times import parse_iso

LATE_BEATS = 3  # heartbeats a node may miss before it is late
MIN_LATE_S = 30.0


def judge_node(n: dict[str, Any], now: dt.datetime,
               late_after_s: float | None = None) -> tuple[str, list[str]]:
    """'ok', 'late' or 'unhealthy', and why: late when no heartbeat came for
    `late_after_s` (default: three of the node's own heartbeat intervals, at least 30 s);
    unhealthy when its last status says something is wrong (a camera frozen, black,
    dead or slow, a hung loop, a store near its budget)."""
    status = n.get("status") or {}
    health = status.get("health")
    problems = []
    if isinstance(health, dict) and not health.get("ok", True):
        problems = [str(p) for p in health.get("problems") or []] or ["unhealthy"]
    if not n.get("last_seen"):
        return "late", ["never heard"]
    age = (now - parse_iso(n["last_seen"])).total_seconds()
    beat = status.get("heartbeat_s")
    limit = late_after_s or max(MIN_LATE_S, LATE_BEATS * float(
        beat if isinstance(beat, int | float) else 10.0))
    if age > limit:
        return "late", [f"not heard for {age:.0f} s (late after {limit:.0f} s)", *problems]
    return ("unhealthy" if problems else "ok"), problems
