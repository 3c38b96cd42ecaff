"""From a plate box to plate text: crop, straighten, enhance at night, recognise, apply rules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from edge.core import plates
from edge.core.types import OcrResult, PlateRead, PlateText
from edge.node.backends import PlateRecogniser

# A view keeps this much of the frame around its plate box, of the box's width and height
# on each side: room for every alternative crop (widen up to 0.5 of the width).
VIEW_MARGIN = 0.5
SHARPNESS_HALF = 100.0  # Laplacian variance at which a view counts half sharp


@dataclass(frozen=True)
class CropGeometry:
    """How a plate box becomes the recogniser's input.

    Widening the box by 10% a side and cutting 10% of its height top and bottom was
    measured to help most (US exact reads .63 -> .81): frames, slogans and state names
    leave the crop while the outer characters stay in. Padding all round hurt everywhere.
    """

    widen: float = 0.10
    trim: float = 0.10
    # more crops of one plate, each (widen, trim), read too; the most plausible reading
    # wins. Plates differ in how much frame, state name or slogan their box holds.
    alternatives: tuple[tuple[float, float], ...] = ()
    adaptive: bool = False  # read the alternatives only where the main crop reads doubtfully
    # with `adaptive`: a plate whose main crop is not `sure_alone` is read with the first
    # alternative, and with the others only where the two do not read alike (`confirmed`)
    confirm: bool = False
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


@dataclass(frozen=True)
class View:
    """One of a pass's best looks at its plate, kept to be read again: the frame around the
    plate box (a copy, not the frame), the box in its pixels, and the read it gave."""

    patch: np.ndarray
    box: tuple[float, float, float, float]
    enhance: bool  # read with the night enhancement, as the frame was
    read: PlateRead
    score: float


def sharpness(crop: np.ndarray | None) -> float:
    """Variance of the Laplacian of a crop's grey levels: higher is sharper."""
    if crop is None or crop.size == 0:
        return 0.0
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def view_score(read: PlateRead) -> float:
    """How good a look a read had at its plate: the plate's size (the square root of its
    area, in pixels), its sharpness, and the detector's confidence."""
    x1, y1, x2, y2 = read.box
    size = math.sqrt(max(0.0, x2 - x1) * max(0.0, y2 - y1))
    sharp = sharpness(read.crop)
    return read.detection_confidence * size * sharp / (sharp + SHARPNESS_HALF)


def cut_view(image: np.ndarray, read: PlateRead, enhance: bool,
             score: float | None = None) -> View:
    """A `View` of `read`'s plate in `image`: its box with `VIEW_MARGIN` all round."""
    x1, y1, x2, y2 = map(float, read.box)
    mx, my = VIEW_MARGIN * (x2 - x1), VIEW_MARGIN * (y2 - y1)
    H, W = image.shape[:2]
    ix1, iy1 = max(0, int(math.floor(x1 - mx))), max(0, int(math.floor(y1 - my)))
    ix2, iy2 = min(W, int(math.ceil(x2 + mx))), min(H, int(math.ceil(y2 + my)))
    patch = image[iy1:iy2, ix1:ix2].copy()
    box = (x1 - ix1, y1 - iy1, x2 - ix1, y2 - iy1)
    return View(patch, box, enhance, read, view_score(read) if score is None else score)


class PlateReader:
    """Turns plate boxes in one image into `PlateText`s, one recogniser batch per call."""

    def __init__(self, recognizer: PlateRecogniser, *, geometry: CropGeometry | None = None,
                 countries: Sequence[str] | None = None):
        self.recognize = recognizer
        self.geometry = geometry or CropGeometry()
        self.countries = list(countries) if countries else None

    def layouts(self, image: np.ndarray, box: Sequence[float], night: bool, *,
                main: bool = True, more: bool | slice = True,
                geometry: CropGeometry | None = None) -> list[list[np.ndarray]]:
        """Ways to read one plate, each a list of line images: with `main`, the main crop
        (and for a squarish plate its two lines); with `more`, the alternative crops (a
        slice: those of them).

        A wide plate is one line. A squarish one may be two lines (motorcycles, square
        EU and TR plates) or one line seen at an angle or with a tall frame (many US
        plates): both readings are tried and the more confident one is kept.
        """
        geometry = geometry or self.geometry
        out = []
        if main:
            one_line = self._crop(image, box, geometry, night)
            if one_line is None:
                return []
            out.append([one_line])
            squarish = (box[2] - box[0]) / max(1e-6, box[3] - box[1]) < geometry.two_line_aspect
            if squarish:  # the trim that cleans one line would cut two lines' characters
                whole = self._crop(image, box,
                                   replace(geometry, trim=min(geometry.trim, 0.03)), night)
                if whole is not None:
                    h = whole.shape[0]
                    cut = int(h * 0.45)
                    out.append([whole[: cut + h // 20], whole[cut - h // 20:]])
        if more is not False:
            chosen = geometry.alternatives[more if isinstance(more, slice) else slice(None)]
            for widen, trim in chosen:
                other = self._crop(image, box, replace(geometry, widen=widen, trim=trim),
                                   night)
                if other is not None:
                    out.append([other])
        return out

    def _crop(self, image: np.ndarray, box: Sequence[float], geometry: CropGeometry,
              night: bool) -> np.ndarray | None:
        crop = crop_plate(image, box, geometry)
        if crop.size == 0:
            return None
        if geometry.straighten:
            crop = straighten(crop, geometry)
        if night:
            crop = enhance_night(crop)
        return crop

    def read(self, image: np.ndarray, boxes: Sequence[Sequence[float]], *,
             night: bool = False) -> list[tuple[PlateText, np.ndarray | None]]:
        """One (plate text, crop) per box, in the boxes' order; empty text where unreadable.

        With `geometry.adaptive`, the alternative crops are read only for plates whose
        main reading is doubtful (`sure`) and reads some text: MIN_TEXT_FOR_MORE characters
        (on the dashcam clip 68 of the 179 boxes read with them read fewer: lamps and signs,
        whose other crops read other fragments, none of them a plate). With
        `geometry.confirm` too (stills), in three steps: the main crop; the first
        alternative for the plates not `sure_alone`; the others for those two crops do not
        read alike (`confirmed`). Otherwise every crop is read.
        Each step is one recogniser batch for all the plates.
        """
        g = self.geometry
        adaptive = g.adaptive and bool(g.alternatives)
        candidates = self._recognise([self.layouts(image, box, night, more=not adaptive)
                                      for box in boxes], [night] * len(boxes))
        if adaptive and g.confirm:
            unsure = [i for i, c in enumerate(candidates)
                      if c and not sure_alone(c, self.countries)]
            self._more(candidates, image, boxes, night, unsure, slice(0, 1))
            unsure = [i for i in unsure if not confirmed(candidates[i])]
            self._more(candidates, image, boxes, night, unsure, slice(1, None))
        elif adaptive:
            self._more(candidates, image, boxes, night,
                       [i for i, c in enumerate(candidates) if c and not sure(_agree(c))
                        and max(len(p.text) for p in c) >= MIN_TEXT_FOR_MORE], True)
        return [(_agree(c), crop_plate(image, box, self.geometry) if c else None)
                for c, box in zip(candidates, boxes, strict=True)]

    def _more(self, candidates: list[list[PlateText]], image: np.ndarray,
              boxes: Sequence[Sequence[float]], night: bool, which: list[int],
              more: bool | slice) -> None:
        """The plates `which` read with `more` of the alternative crops too, in one batch."""
        extra = self._recognise([self.layouts(image, boxes[i], night, main=False, more=more)
                                 for i in which], [night] * len(which))
        for i, readings in zip(which, extra, strict=True):
            candidates[i].extend(readings)

    def reread(self, views: Sequence[View],
               crops: Sequence[tuple[float, float]]) -> list[PlateText]:
        """The views read again, one reading each, in one recogniser batch: the main crop and
        the `crops` (widen, trim) the still path reads, the text most agree on."""
        geometry = replace(self.geometry, alternatives=tuple(crops), adaptive=False)
        per_view = [self.layouts(v.patch, v.box, v.enhance, geometry=geometry) for v in views]
        found = self._recognise(per_view, [v.enhance for v in views])
        return [_agree(c) for c in found]

    def _recognise(self, per_box: list[list[list[np.ndarray]]],
                   nights: Sequence[bool]) -> list[list[PlateText]]:
        """Every layout of every box read in one recogniser batch; `nights` says, per box,
        whether it was read at night."""
        lines = [line for layouts in per_box for layout in layouts for line in layout]
        results = iter(self.recognize(lines) if lines else [])
        return [[self._to_plate([next(results) for _ in layout], night) for layout in layouts]
                for layouts, night in zip(per_box, nights, strict=True)]

    def _to_plate(self, parts: list[OcrResult], night: bool = False) -> PlateText:
        raw = "".join(p.text for p in parts)
        chars: list[float] = []
        for part in parts:
            for ch, conf in zip(part.text, part.char_confidence, strict=False):
                # keep one confidence per character that survives normalisation
                chars.extend([conf] * len(plates.normalise(ch)))
        confidence = float(np.mean(chars)) if chars else 0.0
        return plates.parse(raw, confidence, chars, countries=self.countries, night=night)


def _agree(candidates: list[PlateText]) -> PlateText:
    """One reading from several of the same plate: the text most readings agree on,
    weighted by how plausible each is; a reading alone wins by plausibility."""
    if not candidates:
        return plates.parse("")
    support: dict[str, float] = {}
    for c in candidates:
        support[c.text] = support.get(c.text, 0.0) + _plausibility(c)
    text = max(support, key=support.__getitem__)
    return max((c for c in candidates if c.text == text), key=_plausibility)


def sure(plate: PlateText) -> bool:
    """A reading that needs no second look: it fits a known format, every character
    read with confidence."""
    return (plate.country is not None and plate.confidence >= 0.9
            and min(plate.char_confidence, default=0.0) >= 0.6)


# video: a box whose main crop reads fewer characters is not read with the other crops
MIN_TEXT_FOR_MORE = 3
SURE_CHAR = 0.9  # a main crop alone settles a plate with every character read this surely
CONFIRM_CHAR = 0.6  # a character read below this by either crop leaves a plate unconfirmed


def sure_alone(candidates: list[PlateText], countries: Sequence[str] | None) -> bool:
    """The main crop's reading (the first) settles the plate by itself: of a plate's length,
    every character read with at least `SURE_CHAR`, in a format of the camera's
    `countries` (of any known country where it has none), and not outweighed by the two-line
    reading of a squarish plate (the candidates after it).

    A read in a country the camera does not expect, or one that fits no format, is
    doubtful however surely it was read: a dropped or an extra character reads surely too.
    """
    main = candidates[0]
    if not 4 <= len(main.text) <= 10 or min(main.char_confidence, default=0.0) < SURE_CHAR:
        return False
    fits = (main.country in countries if countries
            else main.country is not None or bool(plates.country_candidates(main.text)))
    return fits and _agree(candidates).text == main.text


def confirmed(candidates: list[PlateText]) -> bool:
    """Two crops of a plate read it alike, so the others need not be read: the main crop
    (the first reading) and the first alternative (the last) give the same text, of a
    plate's length, with every character of both read with at least `CONFIRM_CHAR`.
    A squarish plate's two-line reading (between them) must not read otherwise more
    plausibly, or the plate is not settled.

    Two crops that cut the plate differently (more or less frame, band and slogan) and
    still read every character alike and surely are the evidence the other crops would
    add; they are read where the two disagree or either is unsure of a character.
    """
    if len(candidates) < 2:
        return False
    main, check = candidates[0], candidates[-1]
    if main.text != check.text or not 4 <= len(main.text) <= 10:
        return False
    if min(min(c.char_confidence, default=0.0) for c in (main, check)) < CONFIRM_CHAR:
        return False
    return _agree(candidates).text == main.text


def doubtful(plate: PlateText) -> bool:
    """A reading worth a second look: read unsurely, or fitting no known format."""
    return not (plate.confidence >= 0.9 and min(plate.char_confidence, default=0.0) >= 0.6
                and (plate.country is not None or bool(plates.country_candidates(plate.text))))


def _plausibility(plate: PlateText) -> float:
    """How much a candidate reading looks like a plate: confident, of plate length, and
    fitting a known format."""
    length_ok = 1.0 if 4 <= len(plate.text) <= 10 else 0.5
    return plate.confidence * length_ok * (1.1 if plate.country else 1.0)
