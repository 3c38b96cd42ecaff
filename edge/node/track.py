"""Follow each vehicle's plate across frames and emit one event per pass."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from edge.core.boxes import iou
from edge.core.edit import levenshtein
from edge.core.types import PlateEvent, PlateRead
from edge.node.vote import Vote, read_text, similar, vote

log = logging.getLogger(__name__)

BEST_KEPT = 5  # the best reads a track keeps even after its history rolls over
VELOCITY_POINTS = 5  # recent points the constant-velocity fit uses
MAX_SCALE = 2.5  # largest plate size change allowed between two sightings
TEXT_BONUS = 0.3  # cost taken off when a read's text matches the track's
CLASH_IOU = 0.5  # overlap a clearly different text needs to join a track anyway
NEAR_WIDTHS = 8.0  # "near the same place" for merging duplicates, in plate widths
# A pass's sightings are given again while its agreeing reads grow up to this many: the
# early match's rule wants a few, and past them a pass in view for long costs nothing.
SIGHTING_SUPPORT = 3


class Point(NamedTuple):
    """A plate box as centre and size, at a time."""

    pts: float
    cx: float
    cy: float
    w: float
    h: float

    @classmethod
    def of(cls, box: tuple[float, float, float, float], pts: float) -> Point:
        x1, y1, x2, y2 = box
        return cls(pts, (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1.0), max(y2 - y1, 1.0))

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (
            self.cx - self.w / 2,
            self.cy - self.h / 2,
            self.cx + self.w / 2,
            self.cy + self.h / 2,
        )


@dataclass
class Track:
    """One plate followed across frames; all its memory is bounded."""

    id: int
    first_seen: float
    last_seen: float
    reads: deque[PlateRead]
    head: list[Point] = field(default_factory=list)  # the first points, kept for direction
    tail: deque[Point] = field(default_factory=deque)  # the latest points
    seen: int = 0  # reads added, including those rolled out of `reads`
    label: str = ""  # text of the most confident read so far
    _label_confidence: float = -1.0
    _best: list[tuple[float, int, PlateRead]] = field(default_factory=list)  # min-heap
    _velocity: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # cx, cy, w, h per s

    @classmethod
    def start(cls, track_id: int, read: PlateRead, pts: float, max_history: int) -> Track:
        track = cls(
            id=track_id,
            first_seen=pts,
            last_seen=pts,
            reads=deque(maxlen=max_history),
            tail=deque(maxlen=max_history),
        )
        track.add(read, pts)
        return track

    def add(self, read: PlateRead, pts: float) -> None:
        self.reads.append(read)
        self.seen += 1
        self.last_seen = max(self.last_seen, pts)
        entry = (read.confidence, self.seen, read)
        if len(self._best) < BEST_KEPT:
            heapq.heappush(self._best, entry)
        elif entry[0] > self._best[0][0]:
            heapq.heapreplace(self._best, entry)
        text = read_text(read)
        if len(text) >= 3 and read.confidence >= self._label_confidence:
            self.label, self._label_confidence = text, read.confidence
        point = Point.of(read.box, pts)
        if len(self.head) < max(3, (self.tail.maxlen or 3) // 3):
            self.head.append(point)
        self.tail.append(point)
        self._velocity = _velocity(list(itertools.islice(reversed(self.tail), VELOCITY_POINTS)))

    @property
    def trajectory(self) -> list[Point]:
        """The first points and the latest ones, without repeats, in time order."""
        tail = list(self.tail)
        rolled = self.seen - len(tail)  # points no longer in the tail
        return self.head[:rolled] + tail

    def predict(self, pts: float) -> Point:
        """Where the plate box should be at `pts`, moving as it has lately."""
        last = self.tail[-1]
        dt = max(0.0, pts - last.pts)
        vx, vy, vw, vh = self._velocity
        w = min(max(last.w + vw * dt, last.w / MAX_SCALE), last.w * MAX_SCALE)
        h = min(max(last.h + vh * dt, last.h / MAX_SCALE), last.h * MAX_SCALE)
        return Point(pts, last.cx + vx * dt, last.cy + vy * dt, w, h)

    def voting_reads(self) -> list[PlateRead]:
        """The history plus the best reads it may have rolled past."""
        reads = list(self.reads)
        kept = {id(r) for r in reads}
        reads += [r for _, _, r in self._best if id(r) not in kept]
        return sorted(reads, key=lambda r: r.pts)


@dataclass
class _Recent:
    """An emitted event, remembered briefly so a re-found plate is not reported twice."""

    text: str
    last_seen: float
    where: Point
    track_id: int


class PlateTracker:
    """Associates each frame's plate reads with tracks (SORT-like: constant-velocity
    prediction, IoU plus centre distance plus text similarity, greedy matching),
    and turns each ended track into one voted `PlateEvent`.

    Times are the frames' `pts` in seconds; frames may come at irregular intervals.
    `max_speed` is the fastest a plate may move, in its own widths per second.
    """

    def __init__(
        self,
        *,
        max_age_s: float = 1.0,
        min_reads: int = 2,
        max_history: int = 30,
        iou_threshold: float = 0.05,
        max_speed: float = 30.0,
        single_read_confidence: float = 0.9,
        dedupe_s: float = 5.0,
        countries: Sequence[str] | None = None,
        camera: str = "",
    ) -> None:
        if max_age_s <= 0 or min_reads < 1 or max_history < 1 or max_speed <= 0:
            raise ValueError("max_age_s, min_reads, max_history and max_speed must be positive")
        self.max_age_s = max_age_s
        self.min_reads = min_reads
        self.max_history = max_history
        self.iou_threshold = iou_threshold
        self.max_speed = max_speed
        self.single_read_confidence = single_read_confidence
        self.dedupe_s = dedupe_s
        self.countries = countries
        self.camera = camera
        self._tracks: dict[int, Track] = {}
        self._ids = itertools.count(1)
        self._recent: deque[_Recent] = deque(maxlen=64)
        self._last_pts: float | None = None

    @property
    def active(self) -> int:
        """Live tracks."""
        return len(self._tracks)

    @property
    def tracks(self) -> tuple[Track, ...]:
        return tuple(self._tracks.values())

    def update(self, reads: Sequence[PlateRead], pts: float) -> list[PlateEvent]:
        """Take one frame's reads (none for a frame without plates) and return the
        events of the tracks that ended: unseen for more than `max_age_s`."""
        events: list[PlateEvent] = []
        if self._last_pts is not None and pts < self._last_pts:
            log.info("pts went back from %.3f to %.3f: ending all tracks", self._last_pts, pts)
            events += self.flush()
        self._last_pts = pts
        expired = [t for t in self._tracks.values() if pts - t.last_seen > self.max_age_s]
        events += self._end(expired)
        if reads:
            self._associate(reads, pts)
        return events

    def tick(self, pts: float) -> list[PlateEvent]:
        """A frame with no reads (e.g. motion-gated): only ends tracks."""
        return self.update([], pts)

    def flush(self) -> list[PlateEvent]:
        """End every track, e.g. at the end of a video."""
        events = self._end(list(self._tracks.values()))
        self._recent.clear()
        self._last_pts = None
        return events

    def _associate(self, reads: Sequence[PlateRead], pts: float) -> None:
        texts = [read_text(r) for r in reads]
        pairs: list[tuple[float, int, int]] = []
        for track in self._tracks.values():
            predicted = track.predict(pts)
            speed = self.max_speed if track.seen < 2 else self.max_speed / 2
            allowed = 1.0 + speed * max(0.0, pts - track.last_seen)
            for i, read in enumerate(reads):
                cost = self._cost(track, predicted, allowed, read, texts[i])
                if cost is not None:
                    pairs.append((cost, track.id, i))
        pairs.sort()
        used_tracks: set[int] = set()
        used_reads: set[int] = set()
        for _, track_id, i in pairs:
            if track_id in used_tracks or i in used_reads:
                continue
            used_tracks.add(track_id)
            used_reads.add(i)
            self._tracks[track_id].add(reads[i], pts)
        for i, read in enumerate(reads):
            if i not in used_reads:
                track_id = next(self._ids)
                self._tracks[track_id] = Track.start(track_id, read, pts, self.max_history)

    def _cost(
        self, track: Track, predicted: Point, allowed: float, read: PlateRead, text: str
    ) -> float | None:
        """Cost of giving `read` to `track` (lower is better), or None where it cannot be."""
        seen = Point.of(read.box, predicted.pts)
        ratio = seen.w / predicted.w
        if not 1 / MAX_SCALE <= ratio <= MAX_SCALE:
            return None
        overlap = iou(predicted.box, seen.box)
        distance = math.hypot(seen.cx - predicted.cx, seen.cy - predicted.cy)
        distance /= (seen.w + predicted.w) / 2
        label = track.label
        clash = len(label) >= 4 and len(text) >= 4 and levenshtein(label, text) > 2
        # A clearly different text is another plate unless it sits right where this
        # one should be (then it is this plate read badly); otherwise the box must
        # overlap the prediction or lie within the distance the plate could move.
        if clash and overlap < CLASH_IOU:
            return None
        if overlap < self.iou_threshold and distance > allowed:
            return None
        cost = 0.5 * (1 - overlap) + 0.5 * min(distance / allowed, 1.0)
        cost += 0.2 * abs(math.log(ratio))
        if label and len(text) >= 3 and similar(label, text):
            cost -= TEXT_BONUS
        return cost

    def _end(self, tracks: list[Track]) -> list[PlateEvent]:
        events = []
        for track in sorted(tracks, key=lambda t: (t.last_seen, t.id)):
            del self._tracks[track.id]
            event = self._event(track)
            if event is not None:
                events.append(event)
        return events

    def _event(self, track: Track) -> PlateEvent | None:
        reads = track.voting_reads()
        enough = len(reads) >= self.min_reads or any(
            r.confidence >= self.single_read_confidence for r in reads
        )
        if not enough:
            log.debug("track %d ended with %d read(s): too few to vote", track.id, len(reads))
            return None
        agreed = vote(reads, self.countries)
        if agreed is None:
            log.debug("track %d ended without an agreed read", track.id)
            return None
        trajectory = track.trajectory
        if self._is_duplicate(track, agreed, trajectory):
            return None
        best = agreed.best
        return PlateEvent(
            text=agreed.plate.text,
            formatted=agreed.plate.formatted,
            country=agreed.plate.country,
            confidence=agreed.confidence,
            first_seen=track.first_seen,
            last_seen=track.last_seen,
            frames=len(reads),
            direction=direction(trajectory),
            track_id=track.id,
            raw=agreed.plate.raw,
            camera=self.camera,
            best_crop=best.crop,
            best_box=best.box,
            scene_jpeg=best.scene_jpeg,
            alternatives=list(agreed.alternatives),
            night=2 * sum(r.night for r in reads) > len(reads),
        )

    def _is_duplicate(self, track: Track, agreed: Vote, trajectory: list[Point]) -> bool:
        """Whether an event for this pass was already emitted; if so, merge into it.

        The same text within `dedupe_s` is the same vehicle wherever it was seen
        (the tracker lost and re-found it); a similar text must also be near.
        """
        text = agreed.plate.text
        while self._recent and track.first_seen - self._recent[0].last_seen > self.dedupe_s:
            self._recent.popleft()
        first = trajectory[0]
        for recent in self._recent:
            if track.first_seen - recent.last_seen > self.dedupe_s:
                continue
            near = math.hypot(
                first.cx - recent.where.cx, first.cy - recent.where.cy
            ) <= NEAR_WIDTHS * max(first.w, recent.where.w)
            # A plate lost and found again reads the same, or one character off, and
            # comes back soon; two cars in a row may have plates two characters apart
            # (RK906AJ, RK026AJ) at the same place a few seconds apart.
            soon = track.first_seen - recent.last_seen <= 2 * self.max_age_s
            if text == recent.text or (
                near and soon and levenshtein(text, recent.text) <= 1
            ):
                log.debug(
                    "track %d read %s again: merged into track %d's event",
                    track.id,
                    text,
                    recent.track_id,
                )
                recent.last_seen = max(recent.last_seen, track.last_seen)
                recent.where = trajectory[-1]
                return True
        self._recent.append(_Recent(text, track.last_seen, trajectory[-1], track.id))
        return False


    def sightings(self, pts: float, shown: dict[int, tuple[str, int]]) -> list[PlateEvent]:
        """Provisional events of the live passes read at `pts` whose fused text so far is
        new, or is better supported than when last given (up to SIGHTING_SUPPORT agreeing
        reads), for an early watchlist match while the vehicle is still in view.

        `shown` (track id -> (text, agreeing reads) last given) is kept up to date here and
        rid of the tracks that ended. An event's `frames` counts the reads that agree with
        its text, not all of them.
        """
        for gone in [t for t in shown if t not in self._tracks]:
            del shown[gone]
        out: list[PlateEvent] = []
        for track in self._tracks.values():
            if track.last_seen != pts:
                continue  # no new read: its fused text is what it was
            agreed = vote(track.voting_reads(), self.countries)
            if agreed is None:
                continue
            key = (agreed.plate.text, min(agreed.votes, SIGHTING_SUPPORT))
            if shown.get(track.id) == key:
                continue
            shown[track.id] = key
            best = agreed.best
            out.append(PlateEvent(
                text=agreed.plate.text, formatted=agreed.plate.formatted,
                country=agreed.plate.country, confidence=agreed.confidence,
                first_seen=track.first_seen, last_seen=track.last_seen, frames=agreed.votes,
                direction=direction(track.trajectory), track_id=track.id,
                raw=agreed.plate.raw, camera=self.camera, best_crop=best.crop,
                best_box=best.box, scene_jpeg=best.scene_jpeg,
                alternatives=list(agreed.alternatives), night=best.night, provisional=True,
            ))  # fmt: skip
        return out


def direction(trajectory: Sequence[Point]) -> str:
    """Direction of travel from a plate's trajectory, comparing the means of its
    first and last thirds: growing or moving down the frame is approaching."""
    if len(trajectory) < 3:
        return "unknown"
    k = max(1, len(trajectory) // 3)
    first, last = trajectory[:k], trajectory[-k:]

    def mean(points: Sequence[Point], attr: str) -> float:
        return sum(getattr(p, attr) for p in points) / len(points)

    width = (mean(first, "w") + mean(last, "w")) / 2
    dx = (mean(last, "cx") - mean(first, "cx")) / width
    dy = (mean(last, "cy") - mean(first, "cy")) / width
    growth = math.log(mean(last, "w") / mean(first, "w"))
    if abs(dx) >= 1.0 and abs(dx) >= 2 * abs(dy) and abs(growth) < math.log(1.5):
        return "right" if dx > 0 else "left"
    if abs(growth) >= math.log(1.15):
        return "approaching" if growth > 0 else "receding"
    if abs(dy) >= 1.0:
        return "approaching" if dy > 0 else "receding"
    if math.hypot(dx, dy) < 0.5:
        return "stationary"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "approaching" if dy > 0 else "receding"


def _velocity(points: Sequence[Point]) -> tuple[float, float, float, float]:
    """Least-squares rate of change of centre and size, per second."""
    if len(points) < 2:
        return (0.0, 0.0, 0.0, 0.0)
    t0 = sum(p.pts for p in points) / len(points)
    var = sum((p.pts - t0) ** 2 for p in points)
    if var <= 1e-12:
        return (0.0, 0.0, 0.0, 0.0)
    rates = []
    for attr in ("cx", "cy", "w", "h"):
        mean = sum(getattr(p, attr) for p in points) / len(points)
        rates.append(sum((p.pts - t0) * (getattr(p, attr) - mean) for p in points) / var)
    return (rates[0], rates[1], rates[2], rates[3])
