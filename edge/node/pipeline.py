"""The edge pipelines: a photo's plate reads; a camera's frames in, reads per frame and one
event per vehicle pass out."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from edge.core.types import Detections, Frame, PlateEvent, PlateRead, PlateText
from edge.node.bytetrack import ByteTrackAssociation
from edge.node.config import PipelineConfig
from edge.node.engines import Engines
from edge.node.image_reader import ImageReader
from edge.node.jpeg import jpeg_of_width
from edge.node.read import View, cut_view, view_score
from edge.node.scene import MotionGate, NightDetector, looks_night
from edge.node.settled import SettledReads
from edge.node.timing import StageTimer
from edge.node.track import PlateTracker
from edge.node.vehicle import VehicleDescriber
from edge.node.vote import MIN_LENGTH, read_text

log = logging.getLogger(__name__)


@dataclass
class FrameResult:
    frame_index: int
    pts: float
    processed: bool  # False when the motion gate let the frame pass unseen
    night: bool
    reads: list[PlateRead] = field(default_factory=list)
    vehicles: Detections = field(default_factory=Detections.empty)
    events: list[PlateEvent] = field(default_factory=list)
    # passes still in view whose fused text is new this frame (provisional events)
    sightings: list[PlateEvent] = field(default_factory=list)
    ms: dict[str, float] = field(default_factory=dict)


class StillReader:
    """Plates in a single photo, best first (no tracking, no motion gate).

    For a photo alone it spends more: tiles for small plates in big photos, and several
    crops of each plate (`ImageReader.for_photos`). A video pipeline uses its own,
    cheaper settings.
    """

    def __init__(self, engines: Engines, config: PipelineConfig):
        self.config = config
        self.reader = ImageReader.for_photos(engines, config)

    def read(self, image: np.ndarray, timer: StageTimer | None = None,
             night: bool | None = None) -> list[PlateRead]:
        timer = timer or StageTimer()
        if night is None:
            with timer.stage("scene"):
                night = looks_night(image, self.config.night)
        plates, vehicles = self.reader.find(image, timer, night)
        return self.reader.read_boxes(image, plates, vehicles, timer, night)


class VideoPipeline:
    """One camera's pipeline: motion gate, night profile, plates, reading, tracking, voting."""

    def __init__(self, engines: Engines, config: PipelineConfig, camera: str = "", *,
                 scene_width: int = 0):
        self.config = config
        self.camera = camera
        self.scene_width = scene_width  # > 0: keep each read's frame as evidence, this wide
        self.reader = ImageReader.for_video(engines, config)
        self.gate = MotionGate(config.motion)
        self.night = NightDetector(config.night)
        t = config.track
        self.tracker = PlateTracker(max_age_s=t.max_age_s, min_reads=t.min_reads,
                                    max_history=t.max_history, countries=config.countries,
                                    camera=camera, single_read_confidence=t.single_read_confidence,
                                    dedupe_s=t.dedupe_s, min_confidence=t.min_confidence,
                                    association=(ByteTrackAssociation(max_age_s=t.max_age_s)
                                                 if t.association == "bytetrack" else None))
        self.tracker.reread = self._reread
        self.settled = SettledReads(streak=t.settle_after) if t.settle_after else None
        self.last_processed = -1e9
        self.last_sampled = -1e9
        self._sighted: dict[int, tuple[str, int, int]] = {}  # live passes' sightings, as last given
        self._closed: list[int] = []  # passes ended without a final event: take_closed()
        self.describer = (VehicleDescriber(engines.vehicles, config.describe,
                                           config.detect.vehicle_confidence)
                          if config.describe.enabled else None)

    def wants(self, pts: float) -> bool:
        """Whether a frame at `pts` is due for analysis at the configured rate. A clock
        that went back (a source reopened on its own clock) is a new one: due at once."""
        return (pts < self.last_sampled
                or pts - self.last_sampled >= 1.0 / self.config.analysis_fps - 1e-6)

    def process(self, frame: Frame) -> FrameResult:
        timer = StageTimer()
        restarted: list[PlateEvent] = []
        if frame.pts < self.last_sampled:
            # Whatever was in view belongs to the old clock: those passes end now, and
            # the rate, the motion keep-alive and the settled plates start again.
            log.warning("camera %s: frame clock went back from %.2f s to %.2f s; passes in "
                        "flight ended", self.camera, self.last_sampled, frame.pts)
            restarted = self.finish()
            self.last_processed = -1e9
            if self.settled:
                self.settled.clear()
        self.last_sampled = frame.pts
        with timer.stage("gate"):
            motion = self.gate.moving(frame.image) if self.config.motion.enabled else True
        m = self.config.motion
        due = (frame.pts - self.last_processed >= (m.keepalive_s if self.tracker.active
                                                  else m.idle_check_s))
        small = self.gate.small if self.config.motion.enabled else None
        night = self.night.is_night(frame.image if small is None else small, frame.wall)
        result = FrameResult(frame.index, frame.pts, processed=motion or due, night=night)
        if result.processed:
            self.last_processed = frame.pts
            plates, vehicles = self.reader.find(frame.image, timer, night,
                                                motion=(self.gate.last_regions
                                                        if self.config.motion.enabled
                                                        else None))
            known = (self.settled.known(plates, frame.pts, self.tracker.sure_texts())
                     if self.settled else {})
            reads = self.reader.read_boxes(frame.image, plates, vehicles, timer, night, known)
            if self.settled:
                self.settled.update(reads, frame.pts, (id(p) for p in known.values()))
            min_conf = self.config.ocr.min_confidence
            for read in reads:
                read.pts, read.frame_index = frame.pts, frame.index
            result.reads = [r for r in reads if r.plate.text and r.plate.confidence >= min_conf]
            # the frame as evidence, for the reads that can be a pass's best (a vote's
            # voters): a fragment's frame is never shown, and is not encoded
            voters = [r for r in result.reads if len(read_text(r)) >= MIN_LENGTH]
            if voters and self.scene_width:
                with timer.stage("evidence"):
                    scene = jpeg_of_width(frame.image, self.scene_width)
                for read in voters:
                    read.scene_jpeg = scene
        with timer.stage("track"):
            result.events = restarted + self._confident(self.tracker.update(result.reads,
                                                                            frame.pts))
            if result.reads:
                self._keep_views(frame.image, result.reads, night and self.config.night.enhance)
                result.sightings = self.tracker.sightings(frame.pts, self._sighted)
        if self.describer is not None:
            with timer.stage("describe"):
                self._describe(frame, result, vehicles if result.processed else None)
        result.ms = timer.ms
        return result

    def _keep_views(self, image: np.ndarray, reads: list[PlateRead], enhance: bool) -> None:
        """Each pass keeps its best looks at the plate (size, sharpness, detector
        confidence), the plate with a margin cut from the frame, to read them again."""
        fresh = {id(r) for r in reads}
        for track in self.tracker.tracks:
            read = track.reads[-1] if track.reads else None
            if read is not None and id(read) in fresh:
                score = view_score(read)
                if track.wants_view(score):
                    track.keep_view(cut_view(image, read, enhance, score))

    def _reread(self, views: list[View]) -> list[PlateText]:
        return self.reader.reader.reread(views, self.config.ocr.still_crops)

    def finish(self) -> list[PlateEvent]:
        events = self._confident(self.tracker.flush())
        if self.describer is not None:
            self.describer.apply(events)
            self.describer.keep_only(())
        return events

    def _describe(self, frame: Frame, result: FrameResult, vehicles: Detections | None) -> None:
        """Look at the vehicles of the passes read in this frame (a few times a pass), and
        give the events leaving now what was seen of theirs."""
        assert self.describer is not None
        if result.reads:
            mine = {id(r) for r in result.reads}
            # this frame's read of each live pass: the one the tracker just gave it
            reads = {t.id: t.reads[-1] for t in self.tracker.tracks
                     if t.reads and id(t.reads[-1]) in mine}
            found = vehicles if self.config.detect.mode != "full" else None
            self.describer.look(frame.image, reads, result.night, found,
                                busy=self.reader.finder.whole)
        self.describer.apply(result.events + result.sightings)
        self.describer.keep_only(t.id for t in self.tracker.tracks)

    def _confident(self, events: list[PlateEvent]) -> list[PlateEvent]:
        floor = self.config.track.min_confidence
        for event in events:
            if event.confidence < floor:
                log.debug("camera %s: pass %r dropped, confidence %.2f", self.camera,
                          event.text, event.confidence)
                self._closed += [event.track_id, *event.absorbed]
        return [e for e in events if e.confidence >= floor]

    def take_closed(self) -> list[int]:
        """The passes (track ids) that ended since the last call without a final event:
        whatever they raised while in view will not be completed."""
        closed, self._closed = self._closed + self.tracker.take_closed(), []
        return closed

    def run(self, frames: Iterable[Frame]) -> Iterator[FrameResult]:
        """Analyse frames at the configured rate; the rest are skipped unseen."""
        for frame in frames:
            if self.wants(frame.pts):
                yield self.process(frame)
