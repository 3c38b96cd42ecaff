"""Where plates are looked for in an image: the whole of it, inside vehicles, or both; tiles."""

from __future__ import annotations

import numpy as np

from edge.core.boxes import nested, nms, tiles, touches_inner_edge
from edge.core.types import Detections
from edge.node.backends import PlateDetector, VehicleDetector
from edge.node.config import DetectConfig
from edge.node.detect.schedule import Region, WindowSchedule
from edge.node.timing import StageTimer

MIN_WINDOW_INPUT = 128  # a window's detector input, at least: some context around the plate


class PlateFinder:
    """Plate boxes in a frame: on the whole frame, inside vehicles, or both; optional tiles.

    With a `schedule` (video, `full` mode), most frames are searched only in windows around
    the plates of the last frames and the moving region, at the whole frame's scale (the
    plates keep the size in pixels the detector sees them at on a whole frame).
    """

    def __init__(self, plates: PlateDetector, vehicles: VehicleDetector | None,
                 config: DetectConfig, schedule: WindowSchedule | None = None):
        if config.mode != "full" and vehicles is None:
            raise ValueError(f"detect.mode {config.mode!r} needs the vehicle detector loaded")
        self.plates = plates
        self.vehicles = vehicles
        self.config = config
        self.schedule = schedule if config.mode == "full" else None

    def __call__(self, image: np.ndarray, timer: StageTimer, *, confidence: float,
                 n_tiles: int = 0, motion: Region | None = None) -> tuple[Detections, Detections]:
        """(plates, vehicles) in frame pixels; vehicles is empty in `full` mode. `motion`:
        the moving region (frame pixels), searched between whole frames when small."""
        cfg = self.config
        parts: list[Detections] = []
        vehicles = Detections.empty()
        windows = (self.schedule.regions(image.shape[:2], motion) if self.schedule
                   else None)
        if windows is not None:
            scale = cfg.plate_size / max(image.shape[:2])
            with timer.stage("detect_plates"):
                for win in windows:
                    size = max(MIN_WINDOW_INPUT,
                               int(np.ceil(max(win[2] - win[0], win[3] - win[1]) * scale)))
                    found = self._in_region(image, win, size, confidence)
                    parts.append(found[~touches_inner_edge(found.xyxy, win, image.shape[:2])])
        elif cfg.mode in ("full", "both"):
            with timer.stage("detect_plates"):
                parts.append(self.plates(image, size=cfg.plate_size, confidence=confidence))
                for tile in tiles(image.shape[:2], n_tiles, cfg.plate_size):
                    found = self._in_region(image, tile, cfg.plate_size, confidence)
                    # a plate cut by the tile's inner edge is found whole elsewhere
                    parts.append(found[~touches_inner_edge(found.xyxy, tile, image.shape[:2])])
        if cfg.mode in ("vehicles", "both"):
            assert self.vehicles is not None
            with timer.stage("detect_vehicles"):
                vehicles = self.vehicles(image, size=cfg.vehicle_size,
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
        if self.schedule:
            self.schedule.update(plates.xyxy[order])
        return plates[order], vehicles

    def _in_region(self, image: np.ndarray, box: tuple[float, ...], size: int,
                   confidence: float) -> Detections:
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (int(max(0, box[0])), int(max(0, box[1])),
                          int(min(w, box[2])), int(min(h, box[3])))
        if x2 - x1 < 16 or y2 - y1 < 16:
            return Detections.empty()
        found = self.plates(image[y1:y2, x1:x2], size=size, confidence=confidence)
        found.xyxy += np.array([x1, y1, x1, y1], dtype=np.float32)
        return found
