"""Per-frame scene state that decides how much work a frame needs: motion and day/night."""

from __future__ import annotations

import datetime as dt

import cv2
import numpy as np

from edge.core.boxes import Region
from edge.node.config import MotionConfig, NightConfig

GATE_WIDTH = 160


# Moving blobs, on the gate's small grey copy: an opening of this many pixels a side drops
# what cannot be a vehicle (isolated noise pixels, grain, rain streaks a pixel or two
# wide: at 160 pixels across, a vehicle with a readable plate spans several pixels), and
# a closing of JOIN pixels a side joins the pieces of one vehicle (its edges, windows and
# lights change, its plain panels may not) into one blob.
OPEN = 3
JOIN = 7
# At most this many regions: more blobs than that (rain, a moving camera) are joined into
# their enclosing box, which the schedule then finds too large to search in windows.
MAX_BLOBS = 8


class MotionGate:
    """Says whether a frame holds motion, from a small grey copy against a running background.

    An empty road at night then costs a resize and a subtraction, not a detector run. It
    also says where the frame moves: the boxes of its moving blobs (`last_regions`), each
    at least `motion.min_blob` of the frame, so that one noisy pixel or a swaying branch
    far from the road does not make the moving region the whole frame.
    """

    def __init__(self, config: MotionConfig):
        self.config = config
        self.background: np.ndarray | None = None
        self.last_motion_fraction = 0.0
        # the boxes (frame pixels) of the blobs that moved on the last frame; empty:
        # nothing did; None: no background yet (everything may have moved)
        self.last_regions: list[Region] | None = None
        # the last frame's small colour copy: the night detector judges the light on it
        # (a second downscale of the whole frame cost 1.3 ms of a 720p frame, this 0.1)
        self.small: np.ndarray | None = None
        self._open = cv2.getStructuringElement(cv2.MORPH_RECT, (OPEN, OPEN))
        self._join = cv2.getStructuringElement(cv2.MORPH_RECT, (JOIN, JOIN))

    def moving(self, image: np.ndarray) -> bool:
        h, w = image.shape[:2]
        small = cv2.resize(image, (GATE_WIDTH, max(1, round(GATE_WIDTH * h / w))),
                           interpolation=cv2.INTER_AREA)
        self.small = small
        gray = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        gray = gray.astype(np.float32)
        if self.background is None or self.background.shape != gray.shape:
            self.background = gray
            self.last_regions = None
            return True
        diff = cv2.absdiff(gray, self.background)
        cv2.accumulateWeighted(gray, self.background, 0.2)
        # the threshold follows the scene's noise so that sensor grain at night is no motion
        noise = float(np.median(diff))
        changed = diff > max(12.0, 4.0 * noise)
        self.last_motion_fraction = float(changed.mean())
        self.last_regions = self._blobs(changed, w / GATE_WIDTH, (h, w))
        return self.last_motion_fraction >= self.config.min_area

    def _blobs(self, changed: np.ndarray, f: float, hw: tuple[int, int]) -> list[Region]:
        """The boxes, in frame pixels, of the moving blobs of a small `changed` mask."""
        mask = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, self._open)
        if not mask.any():
            return []
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._join)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        least = self.config.min_blob * mask.size
        boxes = [(int(x), int(y), int(x + bw), int(y + bh))
                 for x, y, bw, bh, area in stats[1:n] if area >= least]
        if len(boxes) > MAX_BLOBS:
            boxes = [(min(b[0] for b in boxes), min(b[1] for b in boxes),
                      max(b[2] for b in boxes), max(b[3] for b in boxes))]
        h, w = hw
        # one small pixel of margin: the blur and the opening eat a blob's rim
        return [(max(0, int((x1 - 1) * f)), max(0, int((y1 - 1) * f)),
                 min(w, int(np.ceil((x2 + 1) * f))), min(h, int(np.ceil((y2 + 1) * f))))
                for x1, y1, x2, y2 in boxes]


class NightDetector:
    """Day or night, by the frame itself (dark, or monochrome infrared) or by the clock.

    Frame-based switching uses a running average with hysteresis so that one bright
    headlight does not flip the profile back and forth.
    """

    SWITCH_FRAMES = 3

    def __init__(self, config: NightConfig):
        self.config = config
        self.state = config.mode == "night"
        self.contrary = 0
        self.first = True
        self.brightness: float | None = None
        self.saturation: float | None = None

    def is_night(self, image: np.ndarray, wall: float | None = None) -> bool:
        """Whether the scene is at night now; `image` is the frame or a small copy of it
        (the gate's: the light is judged on a tiny copy either way)."""
        mode = self.config.mode
        if mode in ("day", "night"):
            return mode == "night"
        if mode == "clock":
            when = dt.datetime.fromtimestamp(wall) if wall else dt.datetime.now()
            return _in_window(when.time(), self.config.start, self.config.end)
        sat, val = frame_light(image)
        self.brightness = _ema(self.brightness, val)
        self.saturation = _ema(self.saturation, sat)
        looks_night = (self.brightness < self.config.max_brightness
                       or self.saturation < self.config.max_saturation)
        if self.first:
            self.state, self.first = looks_night, False
        # switch only after several frames in a row say so: one headlight is not daylight
        self.contrary = self.contrary + 1 if looks_night != self.state else 0
        if self.contrary >= self.SWITCH_FRAMES:
            self.state, self.contrary = looks_night, 0
        return self.state


def frame_light(image: np.ndarray) -> tuple[float, float]:
    """Mean saturation and brightness (0..255) of a frame, from a tiny copy."""
    small = cv2.resize(image, (64, 36), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    return float(hsv[..., 1].mean()), float(hsv[..., 2].mean())


def looks_night(image: np.ndarray, config: NightConfig) -> bool:
    """One frame judged alone (a still photo): dark, or without colour (infrared)."""
    if config.mode in ("day", "night"):
        return config.mode == "night"
    sat, val = frame_light(image)
    return val < config.max_brightness or sat < config.max_saturation


def _ema(previous: float | None, value: float, alpha: float = 0.3) -> float:
    return value if previous is None else (1 - alpha) * previous + alpha * value


def _in_window(now: dt.time, start: str, end: str) -> bool:
    s = dt.time.fromisoformat(start)
    e = dt.time.fromisoformat(end)
    return (s <= now < e) if s <= e else (now >= s or now < e)
