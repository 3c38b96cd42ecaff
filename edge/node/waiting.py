"""Hits the outbox could not store yet (its disk is full): kept in memory, in order, bounded.

A hit waits here only until its store succeeds; it is never sent from here, so the
order "committed, then sent" holds.  When the queue outgrows its bounds the oldest
scene pictures go first; only when no scene is left to drop does a hit go, the least
urgent and oldest first, each loss logged at ERROR and counted.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

# What a hit costs in memory beyond its frames: the Python objects around them.
_OVERHEAD = 512


@dataclass(eq=False)  # one hit is one object: found and removed by identity
class WaitingHit:
    """A hit encoded for the outbox (its wire frames), waiting for room on the disk."""

    hit_id: str
    priority: int
    frames: list[bytes]  # tag, header, crop, scene: as the outbox stores them
    added: float  # the outbox clock when it was added

    @property
    def nbytes(self) -> int:
        return sum(len(f) for f in self.frames) + _OVERHEAD

    @property
    def has_scene(self) -> bool:
        return len(self.frames) > 3 and bool(self.frames[3])

    def drop_scene(self) -> None:
        self.frames = [*self.frames[:3], b""]


class WaitingHits:
    """A FIFO of hits waiting to be stored, bounded by count and by bytes."""

    def __init__(self, max_hits: int, max_bytes: int):
        if max_hits < 1 or max_bytes < 1:
            raise ValueError("the waiting queue needs room for at least one hit")
        self.max_hits = max_hits
        self.max_bytes = max_bytes
        self._queue: deque[WaitingHit] = deque()
        self._ids: set[str] = set()
        self.nbytes = 0
        self.dropped_scenes = 0  # scenes dropped to stay within the bounds
        self.dropped_hits = 0  # hits lost to the bounds: the last resort

    def __len__(self) -> int:
        return len(self._queue)

    def __iter__(self) -> Iterator[WaitingHit]:
        return iter(self._queue)

    def __contains__(self, hit_id: object) -> bool:
        return hit_id in self._ids

    def push(self, hit: WaitingHit) -> None:
        """Queue `hit` at the end (a hit already waiting is not queued twice), then trim."""
        if hit.hit_id in self._ids:
            return
        self._queue.append(hit)
        self._ids.add(hit.hit_id)
        self.nbytes += hit.nbytes
        self._trim()

    def first(self) -> WaitingHit | None:
        return self._queue[0] if self._queue else None

    def pop_first(self) -> WaitingHit:
        hit = self._queue.popleft()
        self._ids.discard(hit.hit_id)
        self.nbytes -= hit.nbytes
        return hit

    def drop_scenes(self) -> None:
        """Drop every waiting hit's scene: the last try to store the hits themselves."""
        for hit in self._queue:
            self._drop_scene(hit)

    def _drop_scene(self, hit: WaitingHit) -> None:
        if hit.has_scene:
            before = hit.nbytes
            hit.drop_scene()
            self.nbytes -= before - hit.nbytes
            self.dropped_scenes += 1
            log.error("disk full: hit %s waits in memory without its scene picture",
                      hit.hit_id)

    def _trim(self) -> None:
        # Past the count no scene dropped helps; past the bytes, scenes go before hits.
        while len(self._queue) > self.max_hits:
            self._drop_hit()
        for hit in self._queue:  # oldest first
            if self.nbytes <= self.max_bytes:
                break
            self._drop_scene(hit)
        while self.nbytes > self.max_bytes:
            self._drop_hit()

    def _drop_hit(self) -> None:
        # The least urgent (largest priority number), and of those the oldest.
        victim = max(self._queue, key=lambda h: h.priority)
        self._queue.remove(victim)
        self._ids.discard(victim.hit_id)
        self.nbytes -= victim.nbytes
        self.dropped_hits += 1
        log.error("disk full: hit %s (priority %d) LOST: the memory queue is full "
                  "(%d hits, %d bytes at most)", victim.hit_id, victim.priority,
                  self.max_hits, self.max_bytes)
