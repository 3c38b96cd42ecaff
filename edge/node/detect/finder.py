"""Where plates are looked for in an image: the whole of it, inside vehicles, or both; tiles."""

from __future__ import annotations

import numpy as np

from edge.core.boxes import nested, nms, tiles, touches_inner_edge
from edge.core.types import Detections
from edge.node.backends import PlateDetector, VehicleDetector
from edge.node.config import DetectConfig
from edge.node.timing import StageTimer


class PlateFinder:
    """Plate boxes in a frame: on the whole frame, inside vehicles, or both; optional tiles."""

    def __init__(self, plates: PlateDetector, vehicles: VehicleDetector | None,
                 config: DetectConfig):
        if config.mode != "full" and vehicles is None:
            raise ValueError(f"detect.mode {config.mode!r} needs the vehicle detector loaded")
        self.plates = plates
        self.vehicles = vehicles
        self.config = config

    def __call__(self, image: np.ndarray, timer: StageTimer, *, confidence: float,
                 n_tiles: int = 0) -> tuple[Detections, Detections]:
        """(plates, vehicles) in frame pixels; vehicles is empty in `full` mode."""
        cfg = self.config
        parts: list[Detections] = []
        vehicles = Detections.empty()
        if cfg.mode in ("full", "both"):
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
