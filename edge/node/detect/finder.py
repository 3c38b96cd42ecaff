"""Where plates are looked for in an image: the whole of it, inside vehicles, or both; tiles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.core.boxes import Region, nested, nms, tiles, touches_inner_edge
from edge.core.types import Detections
from edge.node.backends import PlateDetector, VehicleDetector
from edge.node.config import DetectConfig
from edge.node.detect.schedule import WindowSchedule, merge_regions
from edge.node.detect.yolo import frame_input
from edge.node.timing import StageTimer

GRID = 32  # the detector's stride: its input's cells, in input pixels
PAD = 114  # the letterbox's grey


class PlateFinder:
    """Plate boxes in a frame: on the whole frame, inside vehicles, or both; optional tiles.

    With a `schedule` (video, `full` mode), most frames are searched only in windows around
    the plates of the last frames and the moving blobs, at the whole frame's scale (the
    plates keep the size in pixels the detector sees them at on a whole frame). Each
    window is snapped to the whole frame's detector grid (its letterboxed input, cut on the
    stride's cells): a plate in a window falls on the same pixels and cells as on a whole
    frame, so the detector scores it as it would there, and a plate is found between whole
    frames when a whole frame would find it.
    """

    def __init__(self, plates: PlateDetector, vehicles: VehicleDetector | None,
                 config: DetectConfig, schedule: WindowSchedule | None = None):
        if config.mode != "full" and vehicles is None:
            raise ValueError(f"detect.mode {config.mode!r} needs the vehicle detector loaded")
        self.plates = plates
        self.vehicles = vehicles
        self.config = config
        self.schedule = schedule if config.mode == "full" else None
        self.whole = False  # whether the last call searched the whole image
        self.searched_area = 0.0  # the fraction of the image the last call searched

    def __call__(self, image: np.ndarray, timer: StageTimer, *, confidence: float,
                 n_tiles: int = 0, motion: Sequence[Region] | None = None,
                 tiles_if_missed: bool = False) -> tuple[Detections, Detections]:
        """(plates, vehicles) in frame pixels; vehicles is empty in `full` mode. `motion`:
        the moving blobs' boxes (frame pixels; None: not known), searched between whole
        frames when small.
        `tiles_if_missed`: the tiles are searched only where the whole image found no
        plate `min_plate_height` tall (tiles are for the small plates it misses)."""
        cfg = self.config
        parts: list[Detections] = []
        vehicles = Detections.empty()
        windows = (self.schedule.regions(image.shape[:2], motion) if self.schedule
                   else None)
        self.whole = windows is None and cfg.mode in ("full", "both")
        self.searched_area = 1.0 if windows is None else 0.0
        if windows is not None:
            h, w = image.shape[:2]
            with timer.stage("detect_plates"):
                for win in merge_regions([self._on_grid(win, image.shape[:2])
                                          for win in windows]):
                    self.searched_area += (win[2] - win[0]) * (win[3] - win[1]) / (h * w)
                    found = self._in_window(image, win, confidence)
                    parts.append(found[~touches_inner_edge(found.xyxy, win, image.shape[:2])])
        elif cfg.mode in ("full", "both"):
            with timer.stage("detect_plates"):
                parts.append(self.plates(image, size=cfg.plate_size, confidence=confidence))
                if tiles_if_missed and _found(parts[0], cfg.min_plate_height):
                    n_tiles = 0
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

    def _on_grid(self, region: Region, hw: tuple[int, int]) -> Region:
        """`region` grown to whole cells of the whole frame's letterboxed detector input,
        in frame pixels (it may reach past the frame into the letterbox's padding)."""
        (in_h, in_w), s, (pad_x, pad_y) = frame_input(hw, self.config.plate_size)
        x0 = max(0, int(np.floor((region[0] * s + pad_x) / GRID)) * GRID)
        y0 = max(0, int(np.floor((region[1] * s + pad_y) / GRID)) * GRID)
        x1 = min(in_w, int(np.ceil((region[2] * s + pad_x) / GRID)) * GRID)
        y1 = min(in_h, int(np.ceil((region[3] * s + pad_y) / GRID)) * GRID)
        return (round((x0 - pad_x) / s), round((y0 - pad_y) / s),
                round((x1 - pad_x) / s), round((y1 - pad_y) / s))

    def _in_window(self, image: np.ndarray, win: Region, confidence: float) -> Detections:
        """Plates in a window on the grid, at the whole frame's scale; the part of it past
        the frame is the letterbox's grey, as on the whole frame's input."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = win
        (_, _), s, _ = frame_input((h, w), self.config.plate_size)
        size = round(max(x1 - x0, y1 - y0) * s)
        if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
            view = image[y0:y1, x0:x1]
        else:
            view = np.full((y1 - y0, x1 - x0, 3), PAD, image.dtype)
            cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
            view[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = image[cy0:cy1, cx0:cx1]
        found = self.plates(view, size=size, confidence=confidence)
        found.xyxy += np.array([x0, y0, x0, y0], dtype=np.float32)
        found.xyxy[:, [0, 2]] = found.xyxy[:, [0, 2]].clip(0, w)
        found.xyxy[:, [1, 3]] = found.xyxy[:, [1, 3]].clip(0, h)
        return found

    def _in_region(self, image: np.ndarray, box: tuple[float, ...], size: int,
                   confidence: float) -> Detections:
        return detect_in(self.plates, image, box, size, confidence)


def _found(plates: Detections, min_height: float) -> bool:
    """Whether any of `plates` is kept: at least `min_height` tall."""
    return bool(((plates.xyxy[:, 3] - plates.xyxy[:, 1]) >= min_height).any())


def detect_in(detector: PlateDetector, image: np.ndarray, box: Sequence[float], size: int,
              confidence: float) -> Detections:
    """What `detector` finds in the part of `image` within `box`, in image pixels; nothing
    where that part is under 16 pixels a side."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(max(0, box[0])), int(max(0, box[1])),
                      int(min(w, box[2])), int(min(h, box[3])))
    if x2 - x1 < 16 or y2 - y1 < 16:
        return Detections.empty()
    found = detector(image[y1:y2, x1:x2], size=size, confidence=confidence)
    found.xyxy += np.array([x1, y1, x1, y1], dtype=np.float32)
    return found
