"""What carries a plate: the vehicle's type, from the vehicle detector, and its main colour,
measured on its paint; looked at a bounded number of times per pass."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from edge.core.boxes import Box, as_box
from edge.core.types import Detections, PlateEvent, PlateRead
from edge.node.backends import VehicleDetector
from edge.node.config import DescribeConfig
from edge.node.detect.finder import detect_in

# COCO class ids of the vehicle detector; a van is a truck to COCO
VEHICLE_TYPES: dict[int, str] = {2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}

# The names operators use, and what each is on the hue circle (OpenCV hue, 0..180)
ACHROMATIC = ("black", "grey", "silver", "white")
CHROMATIC = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "beige")
PALETTE = ACHROMATIC + CHROMATIC
# Dark pixels in a vehicle's box are mostly not paint (grille, tyres, glass, shadow):
# black wins only where it clearly dominates.
_NAME_WEIGHT = np.array([0.5, 1.0, 1.0, 1.0] + [1.2] * len(CHROMATIC), np.float32)
MONOCHROME_CHROMA = 2.0  # mean |B-G| + |G-R| of a frame under which it has no colour


@dataclass(frozen=True)
class VehicleDescription:
    """One look at the vehicle around a plate."""

    type: str | None
    colour: str | None
    box: Box
    confidence: float  # the vehicle detector's


def colour_names(pixels: np.ndarray) -> np.ndarray:
    """Index into PALETTE of each BGR pixel ((..., 3) uint8), by hue, saturation and value."""
    px = pixels.reshape(-1, 3).astype(np.uint8)
    hsv = cv2.cvtColor(px[None], cv2.COLOR_BGR2HSV)[0].astype(np.float32)
    h, v = hsv[:, 0], hsv[:, 2]
    f = px.astype(np.float32)
    chroma = f.max(axis=1) - f.min(axis=1)
    names = np.empty(len(px), np.int64)
    s = chroma / np.maximum(v, 1.0)
    # a tint of light on white, silver or grey; shade and overcast skies cast blue, so
    # blue paint must be more saturated than a cast
    bluish = (h >= 86) & (h < 132)
    grey = (chroma < 18.0) | (s < np.where(bluish, 0.35, 0.2))
    names[:] = np.where(v < 60, 0, np.where(v < 135, 1, np.where(v < 195, 2, 3)))
    idx = {n: PALETTE.index(n) for n in CHROMATIC}
    col = np.full(len(px), idx["purple"], np.int64)
    col[(h < 8) | (h >= 165)] = idx["red"]
    col[(h >= 8) & (h < 20)] = idx["orange"]
    col[(h >= 20) & (h < 34)] = idx["yellow"]
    col[(h >= 34) & (h < 86)] = idx["green"]
    col[(h >= 86) & (h < 132)] = idx["blue"]
    warm = (h >= 8) & (h < 34)
    col[warm & (v < 150)] = idx["brown"]  # dark orange or yellow
    col[(h >= 5) & (h < 30) & (s < 0.35) & (v >= 150)] = idx["beige"]
    names[~grey] = col[~grey]
    return names


def main_colour(pixels: np.ndarray, weights: np.ndarray | None = None) -> str | None:
    """The palette name most of these BGR pixels have, dark ones discounted; None for
    none."""
    names = colour_names(pixels)
    if names.size == 0:
        return None
    w = np.ones(names.size, np.float32) if weights is None else weights.reshape(-1)
    votes = np.bincount(names, weights=w, minlength=len(PALETTE)) * _NAME_WEIGHT
    return PALETTE[int(votes.argmax())]


def monochrome(image: np.ndarray) -> bool:
    """Whether an image has no colour to speak of (an infrared camera's grey frame)."""
    small = image[::8, ::8].astype(np.int16)
    chroma = (np.abs(small[..., 0] - small[..., 1]) + np.abs(small[..., 1] - small[..., 2]))
    return float(chroma.mean()) < MONOCHROME_CHROMA


def paint_region(vehicle: Box, plate: Box, hw: tuple[int, int]) -> tuple[Box, Box] | None:
    """Where a vehicle's paint is, about its plate: the bonnet or boot lid above it and the
    bumper beside it (lamps at the corners, glass higher up and road and shadow below
    left out), with the plate itself, widened, to leave out of it. None if it is empty."""
    px1, py1, px2, py2 = plate
    pw, ph = max(px2 - px1, 1.0), max(py2 - py1, 1.0)
    cx = (px1 + px2) / 2
    vx1, vy1, vx2, vy2 = vehicle
    inset = 0.06 * (vx2 - vx1)
    x1 = max(cx - 1.5 * pw, vx1 + inset, 0.0)
    x2 = min(cx + 1.5 * pw, vx2 - inset, float(hw[1]))
    y1 = max(py1 - 0.9 * pw, vy1 + 0.08 * (vy2 - vy1), 0.0)
    y2 = min(py2 + 0.2 * ph, vy2, float(hw[0]))
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    hole = (px1 - 0.15 * pw, py1 - 0.6 * ph, px2 + 0.15 * pw, py2 + 0.6 * ph)
    return (x1, y1, x2, y2), hole


def vehicle_colour(image: np.ndarray, vehicle: Box, plate: Box, *,
                   night: bool = False, samples: int = 48) -> str | None:
    """The main colour of the vehicle in `vehicle` that carries `plate` (boxes in image
    pixels), by name; None by night or in a frame without colour (infrared), where a
    name would be a guess."""
    if night or monochrome(image):
        return None
    region = paint_region(vehicle, plate, image.shape[:2])
    if region is None:
        return None
    (x1, y1, x2, y2), (hx1, hy1, hx2, hy2) = region
    patch = image[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))]
    if patch.size == 0:
        return None
    # a small, blurred copy: noise, JPEG blocks and specks average out; cheap to name
    scale = min(1.0, samples / max(patch.shape[:2]))
    size = (max(1, round(patch.shape[1] * scale)), max(1, round(patch.shape[0] * scale)))
    small = cv2.resize(cv2.GaussianBlur(patch, (0, 0), max(0.8, 0.5 / scale)), size,
                       interpolation=cv2.INTER_AREA)
    ys = y1 + (np.arange(size[1]) + 0.5) / scale
    xs = x1 + (np.arange(size[0]) + 0.5) / scale
    keep = ~(((ys >= hy1) & (ys <= hy2))[:, None] & ((xs >= hx1) & (xs <= hx2))[None, :])
    return main_colour(small[keep]) if keep.any() else None


def holder(vehicles: Detections, plate: Box) -> int | None:
    """Index of the vehicle box that carries `plate`: it holds the plate's centre in its
    lower part; the detector's surest such box."""
    cx, cy = (plate[0] + plate[2]) / 2, (plate[1] + plate[3]) / 2
    best, best_conf = None, -1.0
    for i, (x1, y1, x2, y2) in enumerate(vehicles.xyxy.tolist()):
        if x1 <= cx <= x2 and y1 + 0.3 * (y2 - y1) <= cy <= y2 + 0.05 * (y2 - y1):
            if float(vehicles.confidence[i]) > best_conf:
                best, best_conf = i, float(vehicles.confidence[i])
    return best


def window(plate: Box, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where to look for the vehicle around a plate: several plate widths either side
    (an angled car spreads to one of them), more above the plate than below."""
    px1, py1, px2, py2 = plate
    pw = max(px2 - px1, 1.0)
    cx, cy = (px1 + px2) / 2, (py1 + py2) / 2
    return (int(max(0, cx - 4.5 * pw)), int(max(0, cy - 3.5 * pw)),
            int(min(hw[1], cx + 4.5 * pw)), int(min(hw[0], cy + 1.5 * pw)))


def enclosing_region(regions: Iterable[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """The smallest region holding all of `regions`."""
    x1, y1, x2, y2 = zip(*regions, strict=True)
    return min(x1), min(y1), max(x2), max(y2)


def plate_like(read: PlateRead) -> bool:
    """A read that looks like a plate's: a few characters read with some confidence."""
    return len(read.plate.text) >= 4 and read.plate.confidence >= 0.5


@dataclass
class _Pass:
    looks: int = 0
    last_width: float = 0.0
    found: VehicleDescription | None = None
    waited: bool = False  # its look was put off once, from a frame already busy


class VehicleDescriber:
    """Describes the vehicle of each pass (by track id) a bounded number of times: once
    its plate is big enough, and again when it has grown well past the last look (an
    approaching vehicle's best view), at most `max_looks` times.

    Where a frame's vehicle boxes are at hand (detect.mode vehicles or both) they are
    used; otherwise the vehicle detector runs on a window around the plate, small.
    """

    def __init__(self, detector: VehicleDetector | None, config: DescribeConfig,
                 vehicle_confidence: float = 0.3):
        self.detector = detector
        self.config = config
        self.vehicle_confidence = vehicle_confidence
        self._passes: dict[int, _Pass] = {}
        self.looks = 0  # passes looked at, for the curious
        self.runs = 0  # vehicle detector runs

    def due(self, track_id: int, plate: Box) -> bool:
        """Whether a pass whose plate is now `plate` is due a look."""
        width, height = plate[2] - plate[0], plate[3] - plate[1]
        state = self._passes.get(track_id)
        if height < self.config.min_plate_height:
            return False
        if state is None or state.looks == 0:
            return True
        if state.looks >= self.config.max_looks:
            return False
        growth = self.config.regrow if state.found is not None else 1.15
        return width >= growth * state.last_width

    def look(self, image: np.ndarray, reads: Mapping[int, PlateRead], night: bool,
             vehicles: Detections | None = None, *, busy: bool = False) -> None:
        """Describe the passes due a look among `reads` (track id -> this frame's read);
        `vehicles`: the frame's vehicle boxes where the frame was searched for them.

        Looks cost a frame at most one vehicle detector run: the passes due in one frame
        share a run over their windows together. Only a read that looks like a plate
        earns its pass a look (a pass of fragments raises no event to describe). With
        `busy` (the frame already paid for a whole plate search), the looks wait for the
        pass's next read, once: a frame's cost stays bounded, and no pass goes without.
        """
        due = {track_id: read for track_id, read in reads.items()
               if plate_like(read) and self.due(track_id, read.box)}
        if busy and vehicles is None:
            waited = {t for t in due if self._passes.get(t, _Pass()).waited}
            for track_id in set(due) - waited:
                self._passes.setdefault(track_id, _Pass()).waited = True
            due = {t: r for t, r in due.items() if t in waited}
        if not due:
            return
        if vehicles is None and self.detector is not None:
            hw = image.shape[:2]
            vehicles = detect_in(self.detector, image,
                                 enclosing_region([window(r.box, hw) for r in due.values()]),
                                 self.config.size, self.vehicle_confidence)
            self.runs += 1
        for track_id, read in due.items():
            state = self._passes.setdefault(track_id, _Pass())
            state.looks += 1
            state.waited = False
            state.last_width = read.box[2] - read.box[0]
            self.looks += 1
            found = self._describe(image, read.box, night, vehicles)
            if found is not None:
                state.found = _better(state.found, found)

    def _describe(self, image: np.ndarray, plate: Box, night: bool,
                  vehicles: Detections | None) -> VehicleDescription | None:
        if vehicles is None:
            return None
        i = holder(vehicles, plate)
        if i is None:
            return None
        box = as_box(vehicles.xyxy[i])
        return VehicleDescription(VEHICLE_TYPES.get(int(vehicles.class_id[i])),
                                  vehicle_colour(image, box, plate, night=night), box,
                                  float(vehicles.confidence[i]))

    def apply(self, events: Iterable[PlateEvent]) -> None:
        """Fill the vehicle fields of events from their passes' looks; a final event's
        pass is then forgotten."""
        for event in events:
            state = (self._passes.get(event.track_id) if event.provisional
                     else self._passes.pop(event.track_id, None))
            if state is None or state.found is None:
                continue
            event.vehicle_type = state.found.type
            event.vehicle_colour = state.found.colour
            event.vehicle_box = state.found.box

    def keep_only(self, live: Iterable[int]) -> None:
        """Forget passes that are no longer tracked (ended without an event)."""
        alive = set(live)
        for track_id in [t for t in self._passes if t not in alive]:
            del self._passes[track_id]


def _better(old: VehicleDescription | None, new: VehicleDescription) -> VehicleDescription:
    """The later, closer look, keeping the surer type and a colour where it has none."""
    if old is None:
        return new
    kind = new.type if new.confidence >= old.confidence else old.type
    return VehicleDescription(kind, new.colour or old.colour, new.box,
                              max(new.confidence, old.confidence))
