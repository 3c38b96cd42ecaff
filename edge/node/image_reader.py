"""From an image to its plate reads (find the plates, read them): the stage photos and
video frames share, each with its own settings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.core.boxes import Region, as_box, enclosing
from edge.core.types import Detections, PlateRead, PlateText
from edge.node.config import PipelineConfig
from edge.node.detect.finder import PlateFinder
from edge.node.detect.schedule import WindowSchedule
from edge.node.engines import Engines
from edge.node.ocr.memo import RememberedReads
from edge.node.read import CropGeometry, PlateReader, crop_plate
from edge.node.timing import StageTimer


class ImageReader:
    """Plate boxes found in an image and read, best first.

    A photo alone is worth more time than a video frame: `for_photos` adds tiles for
    small plates in big photos (with `detect.still_tiles_if_missed`, only where the whole
    photo found none) and more crops (`ocr.still_crops`) of every plate (with
    `ocr.still_adaptive`, only of those the main crop and the first of them do not read
    alike: `read.confirmed`); `for_video`
    uses the cheaper video settings and searches most frames only in windows around the
    plates of the last frames (`WindowSchedule`).
    """

    def __init__(self, engines: Engines, config: PipelineConfig, *, tiles: int,
                 crops: Sequence[tuple[float, float]], adaptive: bool,
                 schedule: WindowSchedule | None = None, remember: bool = False,
                 confirm: bool = False, tiles_if_missed: bool = False):
        self.config = config
        self.finder = PlateFinder(engines.plates, engines.vehicles, config.detect, schedule)
        self.tiles = tiles
        self.tiles_if_missed = tiles_if_missed
        geometry = CropGeometry(widen=config.ocr.widen, trim=config.ocr.trim,
                                straighten=config.ocr.straighten,
                                alternatives=tuple(crops), adaptive=adaptive,
                                confirm=confirm)
        # video: a pass's views read again at its end come through crops their frames read
        recognise = RememberedReads(engines.ocr) if remember else engines.ocr
        self.reader = PlateReader(recognise, geometry=geometry, countries=config.countries)

    @classmethod
    def for_photos(cls, engines: Engines, config: PipelineConfig) -> ImageReader:
        return cls(engines, config, tiles=config.detect.still_tiles,
                   crops=config.ocr.still_crops, adaptive=config.ocr.still_adaptive,
                   confirm=True, tiles_if_missed=config.detect.still_tiles_if_missed)

    @classmethod
    def for_video(cls, engines: Engines, config: PipelineConfig) -> ImageReader:
        d = config.detect
        schedule = WindowSchedule(every=d.full_every, margin=d.window_margin,
                                  hold=d.window_hold, motion_max=d.motion_window_max,
                                  quiet_every=d.full_every_quiet)
        return cls(engines, config, tiles=d.tiles, crops=config.ocr.video_crops,
                   adaptive=True, schedule=schedule, remember=True)

    def find(self, image: np.ndarray, timer: StageTimer, night: bool, *,
             motion: Sequence[Region] | None = None) -> tuple[Detections, Detections]:
        """(plates, vehicles) in image pixels, with the night threshold where it is night;
        `motion`, the moving blobs' boxes (None: not known), for the video's windows
        between whole frames."""
        threshold = (self.config.night.plate_confidence if night
                     else self.config.detect.plate_confidence)
        return self.finder(image, timer, confidence=threshold, n_tiles=self.tiles,
                           motion=motion, tiles_if_missed=self.tiles_if_missed)

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
            box = as_box(plates.xyxy[i])
            if i in fresh:
                plate, crop = fresh[i]
            else:
                plate, crop = known[i], crop_plate(image, box, self.reader.geometry)
            reads.append(PlateRead(box=box, detection_confidence=float(plates.confidence[i]),
                                   plate=plate, crop=crop, night=night,
                                   vehicle_box=enclosing(box, vehicles.xyxy)))
        reads.sort(key=lambda r: (bool(r.plate.text), r.confidence), reverse=True)
        return reads
