"""Settled reads: a plate read the same way several times running is followed, not re-read."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from edge.core.boxes import iou
from edge.core.types import Detections, PlateRead, PlateText


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

    def known(self, plates: Detections, pts: float,
              sure: Collection[str] = ()) -> dict[int, PlateText]:
        """The boxes (by index) whose text is known without reading them: settled ones,
        and those whose last read is the text of a pass already `sure` of its plate (the
        tracker's: many reads of it agree), however short their streak."""
        out = {}
        for i, box in enumerate(plates.xyxy):
            entry = self._match(box, pts)
            if entry is None or entry.reused + 1 >= self.reread_every:
                continue
            settled = ((entry.streak >= self.streak or entry.plate.text in sure)
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

    def clear(self) -> None:
        """Forget every plate (the source's clock started again)."""
        self.entries = []


def _plate_like(plate: PlateText) -> bool:
    return len(plate.text) >= 4 and plate.confidence >= 0.5
