"""YOLOv8 detection with onnxruntime: letterbox in, boxes in image pixels out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.core.boxes import nms
from edge.core.types import Detections
from edge.node.runtime import make_session

STRIDE = 32


@dataclass(frozen=True)
class Letterbox:
    """How an image was scaled and padded into the network's input."""

    scale: float
    pad_x: float
    pad_y: float


def letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, Letterbox]:
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
    pad_x, pad_y = (width - new_w) / 2, (height - new_h) / 2
    top, left = int(round(pad_y - 0.1)), int(round(pad_x - 0.1))
    out = cv2.copyMakeBorder(resized, top, height - new_h - top, left, width - new_w - left,
                             cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return out, Letterbox(scale, left, top)


def frame_input(hw: tuple[int, int], size: int) -> tuple[tuple[int, int], float,
                                                        tuple[int, int]]:
    """A dynamic model's input for an image `hw` at long side `size`, as `letterbox`
    makes it: ((input h, w), scale, (left, top) padding)."""
    h, w = hw
    scale = size / max(h, w)
    up = lambda v: max(STRIDE, int(np.ceil(v * scale / STRIDE)) * STRIDE)  # noqa: E731
    in_h, in_w = up(h), up(w)
    s = min(in_w / w, in_h / h)
    new_w, new_h = max(1, round(w * s)), max(1, round(h * s))
    left, top = int(round((in_w - new_w) / 2 - 0.1)), int(round((in_h - new_h) / 2 - 0.1))
    return (in_h, in_w), s, (left, top)


class YoloDetector:
    """A YOLOv8 ONNX detector (output `(1, 4 + classes, anchors)`, boxes as cx, cy, w, h).

    With a model exported with dynamic axes, `size` is the long side of the input and
    the short side shrinks to the image's aspect (a 16:9 frame costs 40% less than a
    square); a fixed-size model always gets its own square.
    """

    def __init__(self, path: Path, *, size: int = 640, classes: Sequence[int] | None = None,
                 confidence: float = 0.25, iou: float = 0.5, threads: int | None = None):
        self.session = make_session(path, threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        h, w = inp.shape[2], inp.shape[3]
        self.fixed = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        self.size = self.fixed[1] if self.fixed else size
        self.classes = None if classes is None else np.asarray(list(classes), dtype=np.int32)
        self.confidence = confidence
        self.iou = iou

    def input_shape(self, image_hw: tuple[int, int], size: int | None = None) -> tuple[int, int]:
        if self.fixed:
            return self.fixed
        return frame_input(image_hw, size or self.size)[0]

    def __call__(self, image: np.ndarray, *, size: int | None = None,
                 confidence: float | None = None) -> Detections:
        in_h, in_w = self.input_shape(image.shape[:2], size)
        boxed, lb = letterbox(image, in_w, in_h)
        blob = cv2.dnn.blobFromImage(boxed, 1 / 255.0, swapRB=True)
        out = self.session.run(None, {self.input_name: blob})[0][0]  # (4 + nc, anchors)
        return self._postprocess(out, lb, image.shape[:2], confidence or self.confidence)

    def _postprocess(self, out: np.ndarray, lb: Letterbox, hw: tuple[int, int],
                     threshold: float) -> Detections:
        scores_all = out[4:]
        if self.classes is not None:
            scores_all = scores_all[self.classes]
        best = scores_all.argmax(axis=0)
        scores = scores_all[best, np.arange(scores_all.shape[1])]
        mask = scores >= threshold
        if not mask.any():
            return Detections.empty()
        cx, cy, bw, bh = out[:4, mask]
        scores, best = scores[mask], best[mask]
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        xyxy -= np.array([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y], dtype=np.float32)
        xyxy /= lb.scale
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, hw[1])
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, hw[0])
        class_id = best if self.classes is None else self.classes[best]
        keep = nms_per_class(xyxy, scores, class_id, self.iou)
        return Detections(xyxy[keep], scores[keep], class_id[keep])


def nms_per_class(xyxy: np.ndarray, scores: np.ndarray, class_id: np.ndarray,
                  iou: float) -> np.ndarray:
    # offset boxes by class so that one NMS pass never suppresses across classes
    offset = class_id.astype(np.float32)[:, None] * (xyxy.max() + 1.0)
    return nms(xyxy + offset, scores, iou)
