"""The edge pipeline: frames in, plate reads per frame and one event per vehicle pass out."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from edge.core.boxes import iou
from edge.core.types import Detections, Frame, PlateEvent, PlateRead, PlateText
from edge.node.config import DetectConfig, PipelineConfig
from edge.node.detect.yolo import YoloDetector, nms
from edge.node.jpeg import jpeg_of_width
from edge.node.models import Manifest, load_manifest
from edge.node.ocr.ppocr import PpOcrRecognizer
from edge.node.read import CropGeometry, PlateReader, crop_plate
from edge.node.scene import MotionGate, NightDetector, looks_night
from edge.node.track import PlateTracker

log = logging.getLogger(__name__)

VEHICLE_CLASSES = (2, 3, 5, 7)  # COCO car, motorcycle, bus, truck


class StageTimer:
    """Milliseconds per stage for one frame; the timings travel with the result."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000


class Engines:
    """The loaded models, shared by every camera of a process (sessions are thread-safe)."""

    def __init__(self, manifest: Manifest | None = None, *, ocr_model: str = "ocr-ppocrv6-small",
                 vehicles: bool = False, threads: int | None = None):
        self.manifest = manifest or load_manifest()
        m = self.manifest
        self.plates = YoloDetector(m.path("plates"), classes=None, threads=threads)
        self.vehicles = (YoloDetector(m.path("vehicles"), classes=VEHICLE_CLASSES,
                                      threads=threads) if vehicles else None)
        self.ocr_model = ocr_model
        self.ocr = PpOcrRecognizer(m.path(ocr_model), dictionary=m.dictionary_path(ocr_model),
                                   threads=threads)
        self.warm_up()

    def warm_up(self) -> None:
        """First runs allocate; do it at load, not on the first vehicle."""
        blank = np.full((360, 640, 3), 114, np.uint8)
        self.plates(blank)
        if self.vehicles is not None:
            self.vehicles(blank)
        self.ocr([blank[:48, :200]])

    def versions(self) -> dict[str, str]:
        return self.manifest.versions()


class PlateFinder:
    """Plate boxes in a frame: on the whole frame, inside vehicles, or both; optional tiles."""

    def __init__(self, engines: Engines, config: DetectConfig):
        if config.mode != "full" and engines.vehicles is None:
            raise ValueError(f"detect.mode {config.mode!r} needs the vehicle detector loaded")
        self.engines = engines
        self.config = config

    def __call__(self, image: np.ndarray, timer: StageTimer, *, confidence: float,
                 n_tiles: int = 0) -> tuple[Detections, Detections]:
        """(plates, vehicles) in frame pixels; vehicles is empty in `full` mode."""
        cfg = self.config
        parts: list[Detections] = []
        vehicles = Detections.empty()
        if cfg.mode in ("full", "both"):
            with timer.stage("detect_plates"):
                parts.append(self.engines.plates(image, size=cfg.plate_size,
                                                 confidence=confidence))
                for tile in tiles(image.shape[:2], n_tiles, cfg.plate_size):
                    found = self._in_region(image, tile, cfg.plate_size, confidence)
                    # a plate cut by the tile's inner edge is found whole elsewhere
                    parts.append(found[~touches_inner_edge(found.xyxy, tile, image.shape[:2])])
        if cfg.mode in ("vehicles", "both"):
            assert self.engines.vehicles is not None
            with timer.stage("detect_vehicles"):
                vehicles = self.engines.vehicles(image, size=cfg.vehicle_size,
                                                 confidence=cfg.vehicle_confidence)
            with timer.stage("detect_plates"):
                for box in vehicles.xyxy:
                    parts.append(self._in_region(image, tuple(box), cfg.crop_size, confidence))
        plates = Detections.merge(parts)
        if len(plates) > 1:
            plates = plates[nms(plates.xyxy, plates.confidence, 0.4)]
            plates = plates[~nested(plates.xyxy)]
        heights = plates.xyxy[:, 3] - plates.xyxy[:, 1]
        plates = plates[heights >= cfg.min_plate_height]
        order = np.argsort(-plates.confidence)[: cfg.max_plates]
        return plates[order], vehicles

    def _in_region(self, image: np.ndarray, box: tuple[float, ...], size: int,
                   confidence: float) -> Detections:
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (int(max(0, box[0])), int(max(0, box[1])),
                          int(min(w, box[2])), int(min(h, box[3])))
        if x2 - x1 < 16 or y2 - y1 < 16:
            return Detections.empty()
        found = self.engines.plates(image[y1:y2, x1:x2], size=size, confidence=confidence)
        found.xyxy += np.array([x1, y1, x1, y1], dtype=np.float32)
        return found


def tiles(hw: tuple[int, int], count: int, input_size: int = 0) -> list[tuple[int, int, int, int]]:
    """`count` square tiles spread evenly along the long side (they overlap where needed).

    None for a frame whose long side is under 1.5x the detector's input: it is hardly
    shrunk, so tiles would find nothing the whole frame does not.
    """
    h, w = hw
    if count <= 0 or max(h, w) < 1.5 * input_size:
        return []
    side = min(h, w)
    long = max(h, w)
    if long - side < 8:
        return []
    starts = np.linspace(0, long - side, count).astype(int) if count > 1 else [(long - side) // 2]
    if w >= h:
        return [(int(s), 0, int(s) + side, h) for s in starts]
    return [(0, int(s), w, int(s) + side) for s in starts]


def nested(xyxy: np.ndarray, inside: float = 0.7) -> np.ndarray:
    """Boxes that lie mostly inside a larger one: one plate found twice, whole and in part
    (their IoU is low, so NMS keeps both)."""
    x1, y1, x2, y2 = xyxy.T
    area = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    w = (np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None])).clip(0)
    h = (np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None])).clip(0)
    share = (w * h) / np.maximum(area[:, None], 1e-6)  # of box i inside box j
    np.fill_diagonal(share, 0.0)
    larger = area[None, :] > area[:, None]
    return ((share >= inside) & larger).any(axis=1)


def touches_inner_edge(xyxy: np.ndarray, region: tuple[int, int, int, int],
                       hw: tuple[int, int], margin: float = 2.0) -> np.ndarray:
    """Boxes that reach an edge of `region` which is not an edge of the whole image."""
    x0, y0, x1, y1 = region
    h, w = hw
    out = np.zeros(len(xyxy), dtype=bool)
    if x0 > 0:
        out |= xyxy[:, 0] <= x0 + margin
    if y0 > 0:
        out |= xyxy[:, 1] <= y0 + margin
    if x1 < w:
        out |= xyxy[:, 2] >= x1 - margin
    if y1 < h:
        out |= xyxy[:, 3] >= y1 - margin
    return out


@dataclass
class FrameResult:
    frame_index: int
    pts: float
    processed: bool  # False when the motion gate let the frame pass unseen
    night: bool
    reads: list[PlateRead] = field(default_factory=list)
    vehicles: Detections = field(default_factory=Detections.empty)
    events: list[PlateEvent] = field(default_factory=list)
    ms: dict[str, float] = field(default_factory=dict)


class StillReader:
    """Plates in a single photo, best first (no tracking, no motion gate).

    For a photo alone it spends more: tiles for small plates in big photos, and several
    crops of each plate. A video pipeline uses its own, cheaper settings.
    """

    def __init__(self, engines: Engines, config: PipelineConfig, *, video: bool = False):
        self.config = config
        self.finder = PlateFinder(engines, config.detect)
        self.tiles = config.detect.tiles if video else config.detect.still_tiles
        crops = config.ocr.video_crops if video else config.ocr.still_crops
        geometry = CropGeometry(widen=config.ocr.widen, trim=config.ocr.trim,
                                straighten=config.ocr.straighten,
                                alternatives=tuple(tuple(c) for c in crops),
                                adaptive=video)
        self.reader = PlateReader(engines.ocr, geometry=geometry, countries=config.countries)

    def read(self, image: np.ndarray, timer: StageTimer | None = None,
             night: bool | None = None) -> list[PlateRead]:
        timer = timer or StageTimer()
        if night is None:
            with timer.stage("scene"):
                night = looks_night(image, self.config.night)
        plates, vehicles = self.find(image, timer, night)
        return self.read_boxes(image, plates, vehicles, timer, night)

    def find(self, image: np.ndarray, timer: StageTimer,
             night: bool) -> tuple[Detections, Detections]:
        threshold = (self.config.night.plate_confidence if night
                     else self.config.detect.plate_confidence)
        return self.finder(image, timer, confidence=threshold, n_tiles=self.tiles)

    def read_boxes(self, image: np.ndarray, plates: Detections, vehicles: Detections,
                   timer: StageTimer, night: bool,
                   known: dict[int, PlateText] | None = None) -> list[PlateRead]:
        """Reads of the plate boxes, best first; `known` texts (by box index) are not
        read again."""
        known = known or {}
        todo = [i for i in range(len(plates)) if i not in known]
        with timer.stage("ocr"):
            texts = self.reader.read(image, plates.xyxy[todo].tolist(),
                                     night=night and self.config.night.enhance)
        fresh = dict(zip(todo, texts, strict=True))
        reads = []
        for i in range(len(plates)):
            box = tuple(float(v) for v in plates.xyxy[i])
            if i in fresh:
                plate, crop = fresh[i]
            else:
                plate, crop = known[i], crop_plate(image, box, self.reader.geometry)
            reads.append(PlateRead(box=box,  # type: ignore[arg-type]
                                   detection_confidence=float(plates.confidence[i]),
                                   plate=plate, crop=crop, night=night,
                                   vehicle_box=_enclosing(box, vehicles)))
        reads.sort(key=lambda r: (bool(r.plate.text), r.confidence), reverse=True)
        return reads


@dataclass
class _Settled:
    box: np.ndarray
    pts: float
    plate: PlateText
    velocity: np.ndarray  # box corners, pixels a second
    streak: int = 1  # reads in a row of this text along this path
    reused: int = 0  # times since it was last really read

    def predict(self, pts: float) -> np.ndarray:
        return self.box + self.velocity * (pts - self.pts)


class SettledReads:
    """A plate that has read the same text confidently several times in a row need not
    be read on every frame: parked cars along a dashcam's road, a queue at a toll booth,
    a car crossing the picture. Its box is followed (constant velocity), its text reused,
    and the plate re-read every few frames to notice a change."""

    def __init__(self, *, streak: int = 3, confidence: float = 0.9, reread_every: int = 4,
                 iou: float = 0.5):
        self.streak, self.confidence = streak, confidence
        self.reread_every, self.iou = reread_every, iou
        self.entries: list[_Settled] = []

    def _match(self, box: np.ndarray, pts: float) -> _Settled | None:
        best, best_iou = None, self.iou
        for entry in self.entries:
            overlap = iou(box, entry.predict(pts))
            if overlap >= best_iou:
                best, best_iou = entry, overlap
        return best

    def known(self, plates: Detections, pts: float) -> dict[int, PlateText]:
        out = {}
        for i, box in enumerate(plates.xyxy):
            entry = self._match(box, pts)
            if entry is None or entry.reused + 1 >= self.reread_every:
                continue
            settled = (entry.streak >= self.streak
                       and entry.plate.confidence >= self.confidence)
            # a box that keeps reading as nothing plate-like (a sign, a wheel, a plate
            # too blurred to read) is skipped the same way until its next look
            hopeless = entry.streak >= 2 and not _plate_like(entry.plate)
            if settled or hopeless:
                out[i] = entry.plate
        return out

    def update(self, reads: Sequence[PlateRead], pts: float, reused: Iterable[int]) -> None:
        reused_ids = set(reused)
        kept = []
        for read in reads:
            box = np.asarray(read.box, np.float32)
            entry = self._match(box, pts)
            same = entry is not None and (
                entry.plate.text == read.plate.text
                or not (_plate_like(entry.plate) or _plate_like(read.plate)))
            if entry is None or not same:
                kept.append(_Settled(box, pts, read.plate, np.zeros(4, np.float32)))
                continue
            dt = pts - entry.pts
            velocity = (box - entry.box) / dt if dt > 0 else entry.velocity
            if id(read.plate) in reused_ids:
                kept.append(_Settled(box, pts, entry.plate, velocity, entry.streak,
                                     entry.reused + 1))
            else:
                kept.append(_Settled(box, pts, read.plate, velocity, entry.streak + 1, 0))
        self.entries = kept


def _plate_like(plate: PlateText) -> bool:
    return len(plate.text) >= 4 and plate.confidence >= 0.5


class VideoPipeline:
    """One camera's pipeline: motion gate, night profile, plates, reading, tracking, voting."""

    def __init__(self, engines: Engines, config: PipelineConfig, camera: str = "", *,
                 scene_width: int = 0):
        self.config = config
        self.camera = camera
        self.scene_width = scene_width  # > 0: keep each read's frame as evidence, this wide
        self.still = StillReader(engines, config, video=True)
        self.gate = MotionGate(config.motion)
        self.night = NightDetector(config.night)
        t = config.track
        self.tracker = PlateTracker(max_age_s=t.max_age_s, min_reads=t.min_reads,
                                    max_history=t.max_history, countries=config.countries,
                                    camera=camera, single_read_confidence=t.single_read_confidence,
                                    dedupe_s=t.dedupe_s)
        self.settled = SettledReads(streak=t.settle_after) if t.settle_after else None
        self.last_processed = -1e9
        self.last_sampled = -1e9

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
                self.settled.entries = []
        self.last_sampled = frame.pts
        with timer.stage("gate"):
            motion = self.gate.moving(frame.image) if self.config.motion.enabled else True
        m = self.config.motion
        due = (frame.pts - self.last_processed >= (m.keepalive_s if self.tracker.active
                                                  else m.idle_check_s))
        night = self.night.is_night(frame.image, frame.wall)
        result = FrameResult(frame.index, frame.pts, processed=motion or due, night=night)
        if result.processed:
            self.last_processed = frame.pts
            plates, vehicles = self.still.find(frame.image, timer, night)
            known = self.settled.known(plates, frame.pts) if self.settled else {}
            reads = self.still.read_boxes(frame.image, plates, vehicles, timer, night, known)
            if self.settled:
                self.settled.update(reads, frame.pts, (id(p) for p in known.values()))
            min_conf = self.config.ocr.min_confidence
            for read in reads:
                read.pts, read.frame_index = frame.pts, frame.index
            result.reads = [r for r in reads if r.plate.text and r.plate.confidence >= min_conf]
            if result.reads and self.scene_width:
                with timer.stage("evidence"):
                    scene = jpeg_of_width(frame.image, self.scene_width)
                for read in result.reads:
                    read.scene_jpeg = scene
        with timer.stage("track"):
            result.events = restarted + self._confident(self.tracker.update(result.reads,
                                                                            frame.pts))
        result.ms = timer.ms
        return result

    def finish(self) -> list[PlateEvent]:
        return self._confident(self.tracker.flush())

    def _confident(self, events: list[PlateEvent]) -> list[PlateEvent]:
        floor = self.config.track.min_confidence
        for event in events:
            if event.confidence < floor:
                log.debug("camera %s: pass %r dropped, confidence %.2f", self.camera,
                          event.text, event.confidence)
        return [e for e in events if e.confidence >= floor]

    def run(self, frames: Iterable[Frame]) -> Iterator[FrameResult]:
        """Analyse frames at the configured rate; the rest are skipped unseen."""
        for frame in frames:
            if self.wants(frame.pts):
                yield self.process(frame)


def _enclosing(box: tuple[float, ...],
               vehicles: Detections) -> tuple[float, float, float, float] | None:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    for x1, y1, x2, y2 in vehicles.xyxy.tolist():
        if x1 <= cx <= x2 and y1 <= cy <= y2:
            return (x1, y1, x2, y2)
    return None
