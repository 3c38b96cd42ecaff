"""Follow each vehicle's plate across frames and emit one event per pass."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Protocol

from edge.core import plates
from edge.core.boxes import iou
from edge.core.confusions import CLASSES
from edge.core.edit import levenshtein
from edge.core.types import PlateEvent, PlateRead, PlateText
from edge.node.read import View, doubtful
from edge.node.vote import Vote, read_text, similar, vote

log = logging.getLogger(__name__)

BEST_KEPT = 5  # the best reads a track keeps even after its history rolls over
BEST_VIEWS = 3  # the best looks at its plate a track keeps to read again at its end
PASS_SURE = 0.8  # a pass's agreed read this confident, in a known format, needs no second look
VELOCITY_POINTS = 5  # recent points the constant-velocity fit uses
MAX_SCALE = 2.5  # largest plate size change allowed between two sightings
TEXT_BONUS = 0.3  # cost taken off when a read's text matches the track's
CLASH_IOU = 0.5  # overlap a clearly different text needs to join a track anyway
NEAR_WIDTHS = 8.0  # "near the same place" for merging duplicates, in plate widths
SIZE_SLACK = math.log(1.35)  # plate size off its predicted size a track accepts (log) ...
SIZE_RATE = 1.0  # ... plus this much (log) a second unseen
VEHICLE_IOU = 0.3  # least overlap of a read's vehicle box with the track's vehicle
APART_IOU = 0.1  # two boxes in one frame overlapping less than this are two plates
GAP_FRAMES = 1.5  # a track unseen for this many frame intervals has lost its plate
SETTLED_READS = 3  # reads of one text that make it a track's own
MOVED_WIDTHS = 2.0  # a plate that moved this many of its widths along its pass was moving
CONTINUES_WIDTHS = 1.0  # how near its motion's prediction a moving plate found again lies
PLATE_SEEN = 4  # characters a read needs before its pass's views are read again at its end
TOGETHER_KEPT = 32  # the tracks a track remembers having been seen beside
# each look-alike (0 D O Q, 2 Z, 5 S, ...) as its class's first: reads of one plate that
# differ only in those are the same text to the tracker
_FOLD = str.maketrans({c: group[0] for group in CLASSES for c in group})


def folded(text: str) -> str:
    """`text` with look-alike characters made one."""
    return text.translate(_FOLD)


def same_text(a: str, b: str) -> bool:
    """Whether two folded texts are one plate's, but for a character read at either end
    (a band, an emblem, a screw)."""
    if len(a) < len(b):
        a, b = b, a
    return a == b or (len(a) == len(b) + 1 and b in (a[1:], a[:-1]))
# A pass's sightings are given again while its agreeing reads grow up to this many: the
# early match's rule wants a few, and past them a pass in view for long costs nothing.
SIGHTING_SUPPORT = 3
SIGHTING_STEPS = 10  # a sighting is given again as its fused confidence rises by a tenth


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
    views: list[View] = field(default_factory=list)  # the best looks, best first
    _velocity: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # cx, cy, w, h per s
    # the vehicle the plate was last seen on, and the plate's box then
    vehicle_box: tuple[float, float, float, float] | None = None
    vehicle_at: Point | None = None
    # tracks seen in the same frame as this one, apart from it: other plates (bounded)
    together: dict[int, None] = field(default_factory=dict)
    # when a read with a text (not a fragment) first and last came: see `read_span`
    _read_first: float | None = None
    _read_last: float | None = None
    agreed: Vote | None = None  # its reads' vote at its latest sighting
    agreed_at: float | None = None  # ... and that sighting's time
    # the tracks found to be this one's pass and merged into it, whose sightings (and the
    # early hits they raised) its final event completes
    absorbed: tuple[int, ...] = ()

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
        if len(text) >= 3:
            self._read_first = pts if self._read_first is None else min(self._read_first, pts)
            self._read_last = pts if self._read_last is None else max(self._read_last, pts)
        point = Point.of(read.box, pts)
        if len(self.head) < max(3, (self.tail.maxlen or 3) // 3):
            self.head.append(point)
        self.tail.append(point)
        self._velocity = _velocity(list(itertools.islice(reversed(self.tail), VELOCITY_POINTS)))

    def read_span(self) -> tuple[float, float]:
        """When the plate was read: from its first to its last read with a text, not the
        fragments at either end (a blur, a bumper or the road where the plate was, read as
        a character or two once the car has gone), which say nothing of this plate and may
        fall in the next car's time.  The track's own times where no read had a text."""
        if self._read_first is None or self._read_last is None:
            return self.first_seen, self.last_seen
        return self._read_first, self._read_last

    @property
    def trajectory(self) -> list[Point]:
        """The first points and the latest ones, without repeats, in time order."""
        tail = list(self.tail)
        rolled = self.seen - len(tail)  # points no longer in the tail
        return self.head[:rolled] + tail

    def predict(self, pts: float) -> Point:
        """Where the plate box should be at `pts`, moving as it has lately."""
        return extrapolate(self.tail[-1], self._velocity, pts)

    def wants_view(self, score: float) -> bool:
        """Whether a look this good would be among the track's best views."""
        return len(self.views) < BEST_VIEWS or score > self.views[-1].score

    def keep_view(self, view: View) -> None:
        """Keep `view` among the best `BEST_VIEWS`, dropping the worst."""
        self.views.append(view)
        self.views.sort(key=lambda v: v.score, reverse=True)
        del self.views[BEST_VIEWS:]

    def text(self) -> str:
        """The folded text most of its recent reads agree on (the most confident read's
        on a tie)."""
        return self.consensus()[0]

    def consensus(self) -> tuple[str, int]:
        """`text`, and how many of the recent reads have it."""
        label = folded(self.label)
        counts = Counter(t for t in (folded(read_text(r)) for r in self.reads) if len(t) >= 3)
        if not counts:
            return label, 0
        top = max(counts.values())
        if counts.get(label, 0) == top:
            return label, top
        return next(t for t, n in counts.items() if n == top), top

    def predicted_vehicle(self, plate: Point) -> tuple[float, float, float, float] | None:
        """The vehicle's box moved and scaled as its plate is from `vehicle_at` to `plate`."""
        if self.vehicle_box is None or self.vehicle_at is None:
            return None
        at, scale = self.vehicle_at, plate.w / self.vehicle_at.w
        x1, y1, x2, y2 = self.vehicle_box
        return (plate.cx + (x1 - at.cx) * scale, plate.cy + (y1 - at.cy) * scale,
                plate.cx + (x2 - at.cx) * scale, plate.cy + (y2 - at.cy) * scale)

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
    first_seen: float
    last_seen: float
    where: Point
    track_id: int
    together: frozenset[int]  # tracks seen beside it: other plates


class BoxAssociation(Protocol):
    """Another tracker's box association (e.g. ByteTrack): one frame's plate boxes in,
    each box's track id out (its own ids, new ones for new tracks)."""

    def assign(self, boxes: Sequence[tuple[float, float, float, float]],
               confidences: Sequence[float], pts: float) -> list[int]: ...

    def reset(self) -> None: ...


class PlateTracker:
    """Associates each frame's plate reads with tracks (SORT-like: constant-velocity
    prediction, IoU plus centre distance plus text similarity, greedy matching),
    and turns each ended track into one voted `PlateEvent`.

    Times are the frames' `pts` in seconds; frames may come at irregular intervals.
    `max_speed` is the fastest a plate may move, in its own widths per second.
    """

    # Reads a pass's best views again at its end (the still path's crops, one recogniser
    # batch), one reading per view; the pipeline sets it.  None: no re-reading.
    reread: Callable[[list[View]], list[PlateText]] | None = None

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
        association: BoxAssociation | None = None,
        min_confidence: float = 0.0,
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
        self.min_confidence = min_confidence  # a pass less sure is not reported
        self._tracks: dict[int, Track] = {}
        self._ids = itertools.count(1)
        self._recent: deque[_Recent] = deque(maxlen=64)
        self._last_pts: float | None = None
        self._intervals: deque[float] = deque(maxlen=9)  # between recent frames, seconds
        # None: our own association; else another tracker's, its ids mapped to ours
        self.association = association
        self._outside: dict[int, int] = {}
        self._closed: list[int] = []

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
        if self._last_pts is not None and pts > self._last_pts:
            self._intervals.append(pts - self._last_pts)
        self._last_pts = pts
        expired = [t for t in self._tracks.values() if pts - t.last_seen > self.max_age_s]
        events += self._end(expired)
        if self.association is not None:
            self._associate_outside(reads, pts)
        elif reads:
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
        self._intervals.clear()
        if self.association is not None:
            self.association.reset()
        self._outside.clear()
        return events

    def take_closed(self) -> list[int]:
        """The tracks that ended since the last call without an event of their own (too few
        reads, no agreed read, a duplicate of a pass already given) and those merged into
        them: their sightings will never be completed by a final event."""
        closed, self._closed = self._closed, []
        return closed

    def _interval(self) -> float:
        """The usual time between two analysed frames (0 until there are a few)."""
        if len(self._intervals) < 3:
            return 0.0
        return sorted(self._intervals)[len(self._intervals) // 2]

    def _associate(self, reads: Sequence[PlateRead], pts: float) -> None:
        texts = [read_text(r) for r in reads]
        interval = self._interval()
        pairs: list[tuple[float, int, int]] = []
        for track in self._tracks.values():
            predicted = track.predict(pts)
            speed = self.max_speed if track.seen < 2 else self.max_speed / 2
            allowed = 1.0 + speed * max(0.0, pts - track.last_seen)
            # unseen on a frame or more: its plate was lost, and what comes back may be
            # the car behind
            lost = interval > 0 and pts - track.last_seen > GAP_FRAMES * interval
            vehicle = track.predicted_vehicle(predicted)
            known, support = track.consensus()
            lost = lost and support >= SETTLED_READS
            for i, read in enumerate(reads):
                cost = self._cost(track, predicted, allowed, read, texts[i], lost=lost,
                                  vehicle=vehicle, known=known)
                if cost is not None:
                    pairs.append((cost, track.id, i))
        pairs.sort()
        chosen: dict[int, int] = {}  # read -> track
        used_tracks: set[int] = set()
        for _, track_id, i in pairs:
            if track_id in used_tracks or i in chosen:
                continue
            used_tracks.add(track_id)
            chosen[i] = track_id
        self._give(reads, pts, [chosen.get(i) for i in range(len(reads))])

    def _associate_outside(self, reads: Sequence[PlateRead], pts: float) -> None:
        """Another tracker's association: its track ids, mapped to ours."""
        assert self.association is not None
        ids = self.association.assign([r.box for r in reads],
                                      [r.detection_confidence for r in reads], pts)
        ours = [self._outside.get(i) for i in ids]
        ours = [o if o in self._tracks else None for o in ours]
        given = self._give(reads, pts, ours)
        for outside, track_id in zip(ids, given, strict=True):
            self._outside[outside] = track_id

    def _give(self, reads: Sequence[PlateRead], pts: float,
              tracks: Sequence[int | None]) -> list[int]:
        """Add each read to its track (None: a new one); note which tracks were seen
        beside which, apart: those are different plates."""
        given = []
        for read, track_id in zip(reads, tracks, strict=True):
            if track_id is None or track_id in given:
                track_id = next(self._ids)
                self._tracks[track_id] = Track.start(track_id, read, pts, self.max_history)
            else:
                self._tracks[track_id].add(read, pts)
            track = self._tracks[track_id]
            if read.vehicle_box is not None:
                track.vehicle_box, track.vehicle_at = read.vehicle_box, Point.of(read.box, pts)
            given.append(track_id)
        for a, read_a in zip(given, reads, strict=True):
            for b, read_b in zip(given, reads, strict=True):
                if a != b and iou(read_a.box, read_b.box) < APART_IOU:
                    together = self._tracks[a].together
                    together[b] = None
                    while len(together) > TOGETHER_KEPT:
                        del together[next(iter(together))]
        return given

    def _cost(
        self, track: Track, predicted: Point, allowed: float, read: PlateRead, text: str, *,
        lost: bool = False, vehicle: tuple[float, float, float, float] | None = None,
        known: str = "",
    ) -> float | None:
        """Cost of giving `read` to `track` (lower is better), or None where it cannot be."""
        seen = Point.of(read.box, predicted.pts)
        ratio = seen.w / predicted.w
        if not 1 / MAX_SCALE <= ratio <= MAX_SCALE:
            return None
        unseen = max(0.0, predicted.pts - track.last_seen)
        # A followed plate grows or shrinks as it has lately; one suddenly much smaller or
        # larger than predicted is another car's (the next one, further back).
        if track.seen >= 2 and abs(math.log(ratio)) > SIZE_SLACK + SIZE_RATE * unseen:
            return None
        overlap = iou(predicted.box, seen.box)
        distance = math.hypot(seen.cx - predicted.cx, seen.cy - predicted.cy)
        distance /= (seen.w + predicted.w) / 2
        label = track.label
        known = known or folded(label)
        fold = folded(text)
        differs = (len(known) >= 4 and len(text) >= 4 and not same_text(known, fold)
                   and not same_text(folded(label), fold))
        clash = (len(label) >= 4 and len(text) >= 4
                 and levenshtein(folded(label), fold) > 2 and levenshtein(known, fold) > 2)
        # A plate that comes back after it was lost, reading otherwise, is the car behind
        # (a misread of the same plate starts a track of its own, and its event merges
        # into this one's). While it is followed, a clearly different text is another
        # plate unless it sits right where this one should be (then it is this plate
        # read badly); otherwise the box must overlap the prediction or lie within the
        # distance the plate could move.
        if lost and differs:
            return None
        if clash and overlap < CLASH_IOU:
            return None
        if overlap < self.iou_threshold and distance > allowed:
            return None
        cost = 0.5 * (1 - overlap) + 0.5 * min(distance / allowed, 1.0)
        cost += 0.2 * abs(math.log(ratio))
        if vehicle is not None and read.vehicle_box is not None:
            # a plate belongs to its vehicle: another vehicle's box is another plate
            on_vehicle = iou(vehicle, read.vehicle_box)
            if on_vehicle < VEHICLE_IOU:
                return None
            cost += 0.3 * (1 - on_vehicle)
        if label and len(text) >= 3 and (similar(label, text) or similar(known, fold)):
            cost -= TEXT_BONUS
        return cost

    def _end(self, tracks: list[Track]) -> list[PlateEvent]:
        events = []
        ended = {t.id for t in tracks}
        if self._outside and ended:
            self._outside = {k: v for k, v in self._outside.items() if v not in ended}
        for track_id in [t.id for t in sorted(tracks, key=lambda t: (t.last_seen, t.id))]:
            track = self._tracks.pop(track_id)
            into = self._same_pass(track)
            if into is not None:
                log.debug("track %d is track %d's pass: merged", track.id, into.id)
                self._tracks[into.id] = merged(into, track, self.max_history)
                continue
            event = self._event(track)
            if event is not None:
                events.append(event)
            else:
                self._closed += [track.id, *track.absorbed]
        return events

    def _same_pass(self, track: Track) -> Track | None:
        """A live track following the same plate as `track` (which has ended): one that
        reads the same and was followed at the same time, or took up where it was lost;
        never one seen beside it."""
        texts = self._texts(track, ended=True)
        if not texts:
            return None
        # a track whose reads never agreed on a text (SETTLED_READS) saw its plate badly:
        # one that takes up where it was lost, its text not clearly different (two
        # characters at most, as `_cost` judges a clash), is that plate read better, not
        # the car behind (which comes after a plate read surely)
        unsettled = track.consensus()[1] < SETTLED_READS
        moving = _moved(track.trajectory)
        last = track.tail[-1]
        for other in self._tracks.values():
            if other.id in track.together or track.id in other.together:
                continue
            theirs = self._texts(other)
            if not theirs:
                continue  # fragments only: nothing to compare
            edits = min(levenshtein(a, b) for a in texts for b in theirs)
            same = any(same_text(a, b) for a in texts for b in theirs)
            first = other.trajectory[0]
            if other.first_seen <= track.last_seen:
                near = math.hypot(first.cx - last.cx, first.cy - last.cy)
                if same and near <= NEAR_WIDTHS * max(first.w, last.w):
                    return other
                continue
            if other.first_seen - track.last_seen > self.max_age_s:
                continue
            if (same or (unsettled and edits <= 2)) and self._continues(
                    last, track._velocity, first):
                return other
            # A moving plate lost for a moment and found again right where its motion puts
            # it, reading a character otherwise (a look-alike at night), is the same plate:
            # the car behind comes from where this one came, not from where it went.
            if moving and edits <= 1 and self._continues(last, track._velocity, first,
                                                         widths=CONTINUES_WIDTHS):
                return other
        return None

    def _texts(self, track: Track, *, ended: bool = False) -> set[str]:
        """The folded texts (4 characters or more) a track reads: the text most of its
        reads agree on, and its vote's, fused character by character. A plate read from
        afar, through rain or a band's glyph, may give no two reads alike; its vote still
        reads the plate. An ended track's vote is brought up to date (`_vote`)."""
        agreed = self._vote(track) if ended else track.agreed
        texts = {track.text()} | ({folded(agreed.plate.text)} if agreed is not None else set())
        return {t for t in texts if len(t) >= 4}

    def _vote(self, track: Track) -> Vote | None:
        """The vote of all of `track`'s reads: its latest sighting's where that came with
        its last read, else taken now (and kept as its latest)."""
        if track.agreed is None or track.agreed_at != track.last_seen:
            track.agreed = vote(track.voting_reads(), self.countries)
            track.agreed_at = track.last_seen
        return track.agreed

    def _event(self, track: Track) -> PlateEvent | None:
        reads = track.voting_reads()
        enough = len(reads) >= self.min_reads or any(
            r.confidence >= self.single_read_confidence for r in reads
        )
        if not enough:
            log.debug("track %d ended with %d read(s): too few to vote", track.id, len(reads))
            return None
        agreed = self._vote(track)
        if self.reread is not None and track.views and _plate_seen(reads):
            reads, again = _read_again(track.views, reads, agreed, self.reread)
            if again:
                agreed = vote(reads, self.countries) or agreed
        if agreed is None:
            log.debug("track %d ended without an agreed read", track.id)
            return None
        trajectory = track.trajectory
        if self._is_duplicate(track, agreed, trajectory):
            return None
        first_seen, last_seen = track.read_span()
        return self._pass_event(track, agreed, first_seen, last_seen, frames=len(reads),
                                night=2 * sum(r.night for r in reads) > len(reads),
                                trajectory=trajectory)

    def _pass_event(self, track: Track, agreed: Vote, first_seen: float, last_seen: float, *,
                    frames: int, night: bool, trajectory: list[Point] | None = None,
                    provisional: bool = False) -> PlateEvent:
        """The event of a pass from its vote: the final one, or a provisional sighting.
        Both carry the vote's other readings, which the watchlist match tries too."""
        best = agreed.best
        return PlateEvent(
            text=agreed.plate.text,
            formatted=agreed.plate.formatted,
            country=agreed.plate.country,
            confidence=agreed.confidence,
            first_seen=first_seen,
            last_seen=last_seen,
            frames=frames,
            direction=direction(track.trajectory if trajectory is None else trajectory),
            track_id=track.id,
            raw=agreed.plate.raw,
            camera=self.camera,
            best_crop=best.crop,
            best_box=best.box,
            scene_jpeg=best.scene_jpeg or _scene_of(track, agreed.plate.text),
            alternatives=list(agreed.alternatives),
            night=night,
            readings=list(agreed.readings),
            provisional=provisional,
            absorbed=list(track.absorbed),
        )

    def _is_duplicate(self, track: Track, agreed: Vote, trajectory: list[Point]) -> bool:
        """Whether an event for this pass was already emitted; if so, merge into it.

        The same text (but for look-alikes and a character at either end) within
        `dedupe_s` is the same vehicle wherever it was seen: the tracker lost and found it
        again. A text a character off is the same vehicle only where both tracks were
        followed at once, near each other, and never seen side by side in one frame; a
        plate that comes back reading otherwise is the car behind, whose plate may be a
        character or two off (RK906AJ, RK026AJ).
        """
        text = agreed.plate.text
        while self._recent and track.first_seen - self._recent[0].last_seen > self.dedupe_s:
            self._recent.popleft()
        if agreed.confidence < self.min_confidence:
            return False  # not reported: it must not hide a surer read of the same pass
        first = trajectory[0]
        for recent in self._recent:
            if track.first_seen - recent.last_seen > self.dedupe_s:
                continue
            if text == recent.text or same_text(folded(text), folded(recent.text)):
                same = True
            elif track.id in recent.together or recent.track_id in track.together:
                same = False
            elif track.first_seen <= recent.last_seen:  # both followed at once
                same = levenshtein(folded(text), folded(recent.text)) <= 1 and math.hypot(
                    first.cx - recent.where.cx, first.cy - recent.where.cy
                ) <= NEAR_WIDTHS * max(first.w, recent.where.w)
            else:
                same = False
            if same:
                log.debug(
                    "track %d read %s again: merged into track %d's event",
                    track.id,
                    text,
                    recent.track_id,
                )
                if track.last_seen >= recent.last_seen:
                    recent.last_seen = track.last_seen
                    recent.where = trajectory[-1]
                recent.together = recent.together | frozenset(track.together)
                return True
        self._recent.append(_Recent(text, track.first_seen, track.last_seen, trajectory[-1],
                                    track.id, frozenset(track.together)))
        return False

    def sightings(self, pts: float, shown: dict[int, tuple[str, int, int]]) -> list[PlateEvent]:
        """Provisional events of the live passes read at `pts` whose fused text so far is
        new, or is better supported than when last given (up to SIGHTING_SUPPORT agreeing
        reads, or a tenth more fused confidence), for an early watchlist match while the
        vehicle is still in view.

        `shown` (track id -> (text, agreeing reads, confidence step) last given) is kept
        up to date here and rid of the tracks that ended. An event's `frames` counts the
        reads that agree with its text, not all of them.
        """
        for gone in [t for t in shown if t not in self._tracks]:
            del shown[gone]
        out: list[PlateEvent] = []
        for track in self._tracks.values():
            if track.last_seen != pts:
                continue  # no new read: its fused text is what it was
            agreed = self._vote(track)
            if agreed is None:
                continue
            # again as its confidence rises a step: a pass whose first reads were
            # fragments is sure of its text only reads later, while still in view
            key = (agreed.plate.text, min(agreed.votes, SIGHTING_SUPPORT),
                   int(agreed.confidence * SIGHTING_STEPS))
            if shown.get(track.id) == key:
                continue
            shown[track.id] = key
            out.append(self._pass_event(track, agreed, track.first_seen, track.last_seen,
                                        frames=agreed.votes, night=agreed.best.night,
                                        provisional=True))
        return out

    def sure_texts(self) -> set[str]:
        """The fused texts of the live passes already sure of their plate (as of their
        latest sighting): SETTLED_READS reads agree, the vote is sure (PASS_SURE) and fits
        a known format. More reads of such a plate add nothing the pass lacks."""
        return {t.agreed.plate.text for t in self._tracks.values()
                if t.agreed is not None and t.agreed.votes >= SETTLED_READS
                and not doubtful_vote(t.agreed)}

    def _continues(self, last: Point, velocity: tuple[float, float, float, float],
                   first: Point, widths: float | None = None) -> bool:
        """Whether a plate first seen at `first` is where, and the size, that a plate
        last seen at `last` would have been by then, moving as it did: within `widths`
        plate widths of it, or by default as far as it could have strayed meanwhile."""
        dt = max(0.0, first.pts - last.pts)
        there = extrapolate(last, velocity, first.pts)
        if abs(math.log(first.w / there.w)) > SIZE_SLACK + SIZE_RATE * dt:
            return False
        distance = math.hypot(first.cx - there.cx, first.cy - there.cy)
        allowed = 1.0 + self.max_speed / 2 * dt if widths is None else widths
        return distance / ((first.w + there.w) / 2) <= allowed


def _moved(trajectory: Sequence[Point]) -> bool:
    """Whether a plate moved along its pass (MOVED_WIDTHS of its width across the frame, or
    30% bigger or smaller), rather than standing (a car at a barrier)."""
    if len(trajectory) < 2:
        return False
    a, b = trajectory[0], trajectory[-1]
    width = (a.w + b.w) / 2
    return (math.hypot(b.cx - a.cx, b.cy - a.cy) >= MOVED_WIDTHS * width
            or abs(math.log(b.w / a.w)) >= math.log(1.3))


def merged(live: Track, ended: Track, max_history: int) -> Track:
    """One track of two that followed one plate: `live` (still followed) with `ended`'s
    reads, in time order, bounded as a track is."""
    reads = sorted(live.voting_reads() + ended.voting_reads(), key=lambda r: r.pts)
    track = Track.start(live.id, reads[0], reads[0].pts, max_history)
    for read in reads[1:]:
        track.add(read, read.pts)
    track.first_seen = min(live.first_seen, ended.first_seen)
    track.vehicle_box, track.vehicle_at = live.vehicle_box, live.vehicle_at
    for view in ended.views + live.views:  # the best looks of both, for the end's re-read
        track.keep_view(view)
    track.absorbed = (*live.absorbed, ended.id, *ended.absorbed)
    track.together = dict.fromkeys(list(ended.together) + list(live.together))
    while len(track.together) > TOGETHER_KEPT:
        del track.together[next(iter(track.together))]
    return track


def _scene_of(track: Track, text: str) -> bytes | None:
    """The frame of the pass's most confident read that kept one, of its text first: its
    best read may be a view read again at its end whose frame, a fragment's then, was
    not kept."""
    kept = [r for r in track.reads if r.scene_jpeg]
    if not kept:
        return None
    return max(kept, key=lambda r: (r.plate.text == text, r.confidence)).scene_jpeg


def doubtful_vote(agreed: Vote) -> bool:
    """Whether a pass's vote is worth a second look: not sure (PASS_SURE), or fitting no
    known format."""
    return agreed.confidence < PASS_SURE or not (
        agreed.plate.country or plates.country_candidates(agreed.plate.text))


def _plate_seen(reads: Sequence[PlateRead]) -> bool:
    """Whether any read of a pass shows a plate's worth of characters (PLATE_SEEN): a pass
    of fragments only (a wheel, a sign, the road read as a character or two) is not worth
    the still path's crops at its end."""
    return any(len(read_text(r)) >= PLATE_SEEN for r in reads)


def _read_again(
    views: Sequence[View],
    reads: list[PlateRead],
    agreed: Vote | None,
    reread: Callable[[list[View]], list[PlateText]],
) -> tuple[list[PlateRead], bool]:
    """The pass's reads with its doubtful best views read again (all of them where the
    pass's own text is doubtful), each new reading in place of the view's first read; and
    whether any view was read again."""
    doubtful_pass = agreed is None or doubtful_vote(agreed)
    todo = [v for v in views if doubtful_pass or doubtful(v.read.plate)]
    if not todo:
        return reads, False
    again = {id(v.read): replace(v.read, plate=p)
             for v, p in zip(todo, reread(list(todo)), strict=True) if p.text}
    out = [again.pop(id(r), r) for r in reads]
    out += sorted(again.values(), key=lambda r: r.pts)  # views rolled out of the history
    return out, True


def extrapolate(last: Point, velocity: tuple[float, float, float, float], pts: float) -> Point:
    """Where a plate last at `last` is at `pts`, moving at `velocity` (cx, cy, w, h per
    second); its size changes by MAX_SCALE at most."""
    dt = max(0.0, pts - last.pts)
    vx, vy, vw, vh = velocity
    w = min(max(last.w + vw * dt, last.w / MAX_SCALE), last.w * MAX_SCALE)
    h = min(max(last.h + vh * dt, last.h / MAX_SCALE), last.h * MAX_SCALE)
    return Point(pts, last.cx + vx * dt, last.cy + vy * dt, w, h)


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
