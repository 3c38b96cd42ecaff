"""Stand-ins that see a synthetic clip as it was drawn: its plates where they are, read as
written, and its vehicles' boxes, so that a test of what a pass's vehicle is needs no model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.core.types import Detections, OcrResult
from edge.node.vehicle import window
from edge.synthetic.drive_by import SyntheticDriveBy, _vehicle_parts, compact

CAR = 2  # COCO


class DrawnScene:
    """The truth of one frame of `clip` at a time (set `index` before each frame), as a
    plate detector, a vehicle detector (whole frame or a window cut from it) and a
    recogniser. `vehicle_calls` counts the vehicle detector's runs."""

    def __init__(self, clip: SyntheticDriveBy):
        self.clip = clip
        self.index = 0
        self.vehicle_calls = 0

    def _live(self) -> list[int]:
        fps = self.clip.fps
        return [i for i, v in enumerate(self.clip.vehicles) if self.index in v.frames(fps)]

    def plate_box(self, i: int) -> tuple[float, float, float, float] | None:
        box = self.clip.plate_box(i, self.index)
        cam = self.clip.camera
        if box is None or box[0] < 0 or box[1] < 0 or box[2] > cam.width or box[3] > cam.height:
            return None
        return box

    def vehicle_box(self, i: int) -> tuple[float, float, float, float]:
        v = self.clip.vehicles[i]
        t = self.index / self.clip.fps - v.start / self.clip.fps
        parts = _vehicle_parts(v, np.zeros(3, np.float32), t, self.clip.camera)
        pts = np.concatenate([p for kind, p, _ in parts if kind != "shadow"])
        cam = self.clip.camera
        x1, y1 = np.clip(pts.min(axis=0), 0, [cam.width, cam.height])
        x2, y2 = np.clip(pts.max(axis=0), 0, [cam.width, cam.height])
        return float(x1), float(y1), float(x2), float(y2)

    def plates(self, image: np.ndarray, *, size: int | None = None,
               confidence: float | None = None) -> Detections:
        boxes = [b for i in self._live() if (b := self.plate_box(i)) is not None]
        return Detections(np.array(boxes, np.float32).reshape(-1, 4),
                          np.full(len(boxes), 0.9), np.zeros(len(boxes)))

    def vehicles(self, image: np.ndarray, *, size: int | None = None,
                 confidence: float | None = None) -> Detections:
        """The drawn vehicles' boxes, in the pixels of `image`: the whole frame, or the
        window around one of its plates that the describer cut."""
        self.vehicle_calls += 1
        cam = self.clip.camera
        origin = (0, 0)
        if image.shape[:2] != (cam.height, cam.width):
            for i in self._live():
                plate = self.plate_box(i)
                if plate is None:
                    continue
                x1, y1, x2, y2 = window(plate, (cam.height, cam.width))
                if (y2 - y1, x2 - x1) == image.shape[:2]:
                    origin = (x1, y1)
        boxes = [self.vehicle_box(i) for i in self._live()]
        xyxy = np.array(boxes, np.float32).reshape(-1, 4) - np.array(origin * 2, np.float32)
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, image.shape[1])
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, image.shape[0])
        return Detections(xyxy, np.full(len(boxes), 0.9), np.full(len(boxes), CAR))

    def ocr(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        live = self._live()
        text = compact(self.clip.vehicles[live[0]].text) if live else ""
        return [OcrResult(text, 0.95, (0.95,) * len(text)) for _ in crops]
