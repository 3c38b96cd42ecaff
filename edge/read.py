"""From a plate box to plate text: crop, straighten, enhance at night, recognise, apply rules."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from edge import plates
from edge.types import OcrResult, PlateText

Recognizer = Callable[[Sequence[np.ndarray]], list[OcrResult]]


@dataclass(frozen=True)
class CropGeometry:
    """How a plate box becomes the recogniser's input.

    Widening the box by 10% a side and cutting 10% of its height top and bottom was
    measured to help most (US exact reads .63 -> .81): frames, slogans and state names
    leave the crop while the outer characters stay in. Padding all round hurt everywhere.
    """

    widen: float = 0.10
    trim: float = 0.10
    two_line_aspect: float = 1.6  # below this width/height, a plate is read as two lines
    straighten: bool = True
    max_skew_deg: float = 25.0


def crop_plate(image: np.ndarray, box: Sequence[float], geometry: CropGeometry) -> np.ndarray:
    x1, y1, x2, y2 = map(float, box)
    w, h = x2 - x1, y2 - y1
    x1, x2 = x1 - geometry.widen * w, x2 + geometry.widen * w
    y1, y2 = y1 + geometry.trim * h, y2 - geometry.trim * h
    H, W = image.shape[:2]
    ix1, iy1 = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
    ix2, iy2 = min(W, int(math.ceil(x2))), min(H, int(math.ceil(y2)))
    if ix2 - ix1 < 4 or iy2 - iy1 < 4:
        return np.zeros((0, 0, 3), np.uint8)
    return image[iy1:iy2, ix1:ix2]


def skew_angle(crop: np.ndarray, limit_deg: float = 25.0) -> float:
    """The dominant near-horizontal edge angle in degrees (0 when none is clear)."""
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    h, w = gray.shape
    if w < 40 or h < 12:
        return 0.0
    edges = cv2.Canny(gray, 60, 180)
    lines = cv2.HoughLinesP(edges, 1, np.pi / 180, threshold=max(15, w // 4),
                            minLineLength=w // 2, maxLineGap=max(3, w // 20))
    if lines is None:
        return 0.0
    angles, weights = [], []
    for x1, y1, x2, y2 in lines.reshape(-1, 4).tolist():
        angle = math.degrees(math.atan2(y2 - y1, x2 - x1))
        if abs(angle) <= limit_deg:
            angles.append(angle)
            weights.append(math.hypot(x2 - x1, y2 - y1))
    if not angles:
        return 0.0
    order = np.argsort(angles)
    cum = np.cumsum(np.asarray(weights)[order])
    return float(np.asarray(angles)[order][np.searchsorted(cum, cum[-1] / 2)])  # weighted median


def straighten(crop: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    angle = skew_angle(crop, geometry.max_skew_deg)
    if abs(angle) < 2.0:
        return crop
    h, w = crop.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(crop, matrix, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))


def enhance_night(crop: np.ndarray) -> np.ndarray:
    """Local contrast for dark or infrared plates; colour is meaningless there anyway."""
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(_CLAHE.apply(gray), cv2.COLOR_GRAY2BGR)


class PlateReader:
    """Turns plate boxes in one image into `PlateText`s, one recogniser batch per call."""

    def __init__(self, recognizer: Recognizer, *, geometry: CropGeometry | None = None,
                 countries: Sequence[str] | None = None):
        self.recognize = recognizer
        self.geometry = geometry or CropGeometry()
        self.countries = list(countries) if countries else None

    def prepare(self, image: np.ndarray, box: Sequence[float], night: bool) -> list[np.ndarray]:
        """The line images to recognise for one plate (one, or two for a two-line plate)."""
        geometry = self.geometry
        two_lines = (box[2] - box[0]) / max(1e-6, box[3] - box[1]) < geometry.two_line_aspect
        if two_lines:  # the trim that cleans a one-line plate would cut its characters
            geometry = replace(geometry, trim=min(geometry.trim, 0.03))
        crop = crop_plate(image, box, geometry)
        if crop.size == 0:
            return []
        if geometry.straighten:
            crop = straighten(crop, geometry)
        if night:
            crop = enhance_night(crop)
        if two_lines:
            h = crop.shape[0]
            cut = int(h * 0.45)
            return [crop[: cut + h // 20], crop[cut - h // 20:]]
        return [crop]

    def read(self, image: np.ndarray, boxes: Sequence[Sequence[float]], *,
             night: bool = False) -> list[tuple[PlateText, np.ndarray | None]]:
        """One (plate text, crop) per box, in the boxes' order; empty text where unreadable."""
        lines: list[np.ndarray] = []
        owners: list[int] = []
        crops: list[np.ndarray | None] = []
        for i, box in enumerate(boxes):
            parts = self.prepare(image, box, night)
            crops.append(crop_plate(image, box, self.geometry) if parts else None)
            lines.extend(parts)
            owners.extend([i] * len(parts))
        results = self.recognize(lines) if lines else []
        merged: list[list[OcrResult]] = [[] for _ in boxes]
        for owner, result in zip(owners, results, strict=True):
            merged[owner].append(result)
        return [(self._to_plate(parts), crop) for parts, crop in zip(merged, crops, strict=True)]

    def _to_plate(self, parts: list[OcrResult]) -> PlateText:
        raw = "".join(p.text for p in parts)
        chars: list[float] = []
        for part in parts:
            for ch, conf in zip(part.text, part.char_confidence, strict=False):
                # keep one confidence per character that survives normalisation
                chars.extend([conf] * len(plates.normalise(ch)))
        confidence = float(np.mean(chars)) if chars else 0.0
        return plates.parse(raw, confidence, chars, countries=self.countries)
