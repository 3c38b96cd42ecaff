"""Drive-by clips made in code, with ground truth: plates of known text on simple vehicles
approaching a pole-mounted camera, by day (colour) and by night (infrared monochrome)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from edge.core.status import CameraState
from edge.core.types import Frame
from edge.node.sources.base import SourceBase

# --------------------------------------------------------------------------- plates

PLATE_MM = (520, 110)  # the EU size; every style here is drawn on it
BAND_MM = 44  # the blue band (or flag band) on the left
CHAR_MM = 75  # character height
GROUP_GAP_MM = 18  # a space on the plate
CHAR_GAP_MM = 5

# BGR colours
_EU_BLUE = (153, 51, 0)
_EU_YELLOW = (0, 204, 255)
_UA_BLUE = (183, 91, 0)
_UA_YELLOW = (0, 213, 255)
_WHITE_PLATE = (236, 240, 240)
_YELLOW_PLATE = (20, 190, 245)
_INK = (22, 22, 22)


@dataclass(frozen=True)
class PlateStyle:
    """How one country's plate looks: its band and background."""

    band: str  # "eu" (blue, stars, code), "tr" (blue, code), "ua" (flag, code), "" none
    code: str  # the letters on the band
    background: tuple[int, int, int] = _WHITE_PLATE


STYLES: dict[str, PlateStyle] = {
    **{c: PlateStyle("eu", c) for c in ("LT", "LV", "PL", "BG", "RO", "EE", "FI", "DE")},
    "TR": PlateStyle("tr", "TR"),
    "UA": PlateStyle("ua", "UA"),
    "NL": PlateStyle("eu", "NL", _YELLOW_PLATE),  # the yellow variant
}

# Plate texts as written, by country: L a letter the country uses, D a digit, N 1-9,
# {CODE} one of a closed list of region codes.
_TEXT_PATTERNS: dict[str, tuple[str, ...]] = {
    "LT": ("LLL DDD",),
    "LV": ("LL-NDDD", "LL-NDD"),
    "PL": ("{PL2} DDDDD", "{PL2} DDDLL", "{PL3} NLDD"),
    "BG": ("{BG2} DDDD LL", "{BG1} DDDD LL"),
    "RO": ("{RO} DD LLL", "B DDD LLL"),
    "EE": ("DDD LLL",),
    "FI": ("LLL-NDD", "LL-NDD"),
    "DE": ("{DE1} LL NDDD", "{DE2} L NDD", "{DE3} LL NDD"),
    "TR": ("{TR} LLL DD", "{TR} L NDDD", "{TR} LL NDD"),
    "UA": ("LL DDDD LL",),
    "NL": ("LL-DDD-L", "D-LLL-DD", "DD-LLL-D"),
}
_LETTERS: dict[str, str] = {
    "BG": "ABEKMHOPCTXY",  # the letters Cyrillic and Latin share
    "UA": "ABCEHIKMOPTX",
    "TR": "ABCDEFGHJKLMNPRSTUVYZ",  # no Q W X
    "NL": "BDFGHJKLNPRSTVXZ",  # no vowels, no C Q W
    "PL": "ACEFGHJKLMNPRSTUVWXY",  # B D I O Z are not used after the district
}
_DEFAULT_LETTERS = "ABCDEFGHJKLMNPRSTUVXYZ"  # I, O, Q, W left out as most countries do
_REGIONS: dict[str, tuple[str, ...]] = {
    "PL2": ("WX", "WA", "KR", "PO", "GD", "LU", "EL", "SK"),
    "PL3": ("WPR", "KRA", "SZC", "WPI", "DWR"),
    "BG1": tuple("ABEKMHPCTXY"),
    "BG2": ("CA", "CB", "PB", "KH", "BT", "EH", "CO", "PA"),
    "RO": ("CJ", "BV", "IS", "TM", "AG", "CT", "PH", "SV"),
    "DE1": tuple("BMKFHSD"),
    "DE2": ("HH", "KA", "DO", "HB", "LE", "GI"),
    "DE3": ("MTK", "HSK", "BAD"),
    "TR": tuple(f"{i:02d}" for i in range(1, 82)),
}


def plate_text(country: str, rng: np.random.Generator) -> str:
    """A plausible plate of `country`, as written on it (with its spaces or dashes)."""
    pattern = str(rng.choice(_TEXT_PATTERNS[country]))
    letters = _LETTERS.get(country, _DEFAULT_LETTERS)
    out = []
    for token in pattern.split(" "):
        if token.startswith("{"):
            out.append(str(rng.choice(_REGIONS[token[1:-1]])))
            continue
        chars = []
        for ch in token:
            if ch == "L":
                chars.append(letters[int(rng.integers(len(letters)))])
            elif ch == "D":
                chars.append(str(rng.integers(0, 10)))
            elif ch == "N":
                chars.append(str(rng.integers(1, 10)))
            else:
                chars.append(ch)
        out.append("".join(chars))
    return " ".join(out)


def compact(text: str) -> str:
    """A plate text without its separators, as the pipeline reports it."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


@lru_cache(maxsize=512)
def _glyph(ch: str, height: int, weight: int = 560) -> np.ndarray:
    """One character's ink (0..255, uint8), `height` pixels tall, condensed like DIN 1451."""
    big = 240
    canvas = np.zeros((big * 2, big * 2), np.uint8)
    if hasattr(cv2, "FontFace"):  # OpenCV 5's built-in sans: close to the plate fonts
        cv2.putText(canvas, ch, (big // 3, big * 3 // 2), 255, cv2.FontFace("sans"), big, weight)
    else:
        stroke = round(big * weight / 5000)
        scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, big - stroke, stroke)
        cv2.putText(
            canvas,
            ch,
            (big // 3, big * 3 // 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            255,
            stroke,
            cv2.LINE_AA,
        )
    ys, xs = np.nonzero(canvas > 96)
    if len(xs) == 0:
        return np.zeros((height, max(1, height // 5)), np.uint8)
    ink = canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    narrow = 0.95 if ch in "MW" else 0.82  # condensed M reads as N
    if ch == "0" and hasattr(cv2, "FontFace"):  # its zero is slashed; plates' is a narrow O
        ink, narrow = _glyph("O", big, weight), 0.8
    if ch == "-":  # a dash sits at mid height and is short
        out = np.zeros((height, max(2, height // 4)), np.uint8)
        t = max(2, height // 9)
        out[height // 2 - t // 2 : height // 2 - t // 2 + t, :] = 255
        out.flags.writeable = False
        return out
    width = max(2, round(ink.shape[1] * height / ink.shape[0] * narrow))
    glyph: np.ndarray = cv2.resize(ink, (width, height), interpolation=cv2.INTER_AREA)
    glyph.flags.writeable = False  # cached: shared by every caller
    return glyph


def render_plate(
    text: str,
    country: str,
    *,
    px_per_mm: float = 2.0,
    dirt: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """A front plate of `country` reading `text` (spaces and dashes as written), BGR,
    520 x 110 mm at `px_per_mm`. `dirt` (0..1) adds grime, `rng` makes it vary."""
    style = STYLES.get(country, PlateStyle("eu", country[:3]))
    s = px_per_mm
    w, h = round(PLATE_MM[0] * s), round(PLATE_MM[1] * s)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = style.background
    # a faint vertical sheen, as on embossed retro-reflective sheet
    shade = np.linspace(1.02, 0.94, h, dtype=np.float32)[:, None, None]
    img = np.clip(img * shade, 0, 255).astype(np.uint8)
    band = round(BAND_MM * s) if style.band else 0
    if style.band in ("eu", "tr"):
        img[:, :band] = _EU_BLUE
    elif style.band == "ua":
        img[:, :band] = _WHITE_PLATE
        fy1, fy2 = round(18 * s), round(46 * s)
        fx1, fx2 = round(5 * s), band - round(5 * s)
        img[fy1 : (fy1 + fy2) // 2, fx1:fx2] = _UA_BLUE
        img[(fy1 + fy2) // 2 : fy2, fx1:fx2] = _UA_YELLOW
    if style.band == "eu":
        cx, cy, r = band / 2, 30 * s, 15 * s
        for k in range(12):
            a = 2 * math.pi * k / 12
            cv2.circle(
                img,
                (round(cx + r * math.cos(a)), round(cy + r * math.sin(a))),
                max(1, round(2.2 * s)),
                _EU_YELLOW,
                -1,
                cv2.LINE_AA,
            )
    if style.band:
        _draw_code(img, style.code, band, s, dark=style.band == "ua")
    # the characters: glyphs, and gaps between characters ("char") and groups ("group")
    char_h = round(CHAR_MM * s)
    pieces: list[tuple[str, int] | np.ndarray] = []
    for g, group in enumerate(text.upper().split(" ")):
        if g:
            pieces.append(("group", round(GROUP_GAP_MM * s)))
        for c, ch in enumerate(group):
            if c:
                pieces.append(("char", round(CHAR_GAP_MM * s)))
            pieces.append(_glyph(ch, char_h))
    total = sum(p[1] if isinstance(p, tuple) else p.shape[1] for p in pieces)
    left, right = band + round(6 * s), w - round(8 * s)
    room = round((right - left) * 0.94)  # long plates get narrower characters, not less margin
    left += (right - left - room) // 2
    squeeze = min(1.0, room / max(total, 1))
    x = left + (room - total * squeeze) / 2
    y = (h - char_h) // 2
    alpha = np.zeros((h, w), np.float32)
    seals_x = None
    for p in pieces:
        if isinstance(p, tuple):
            if p[0] == "group" and seals_x is None:
                seals_x = x + p[1] * squeeze / 2
            x += p[1] * squeeze
            continue
        gw = max(1, round(p.shape[1] * squeeze))
        glyph = cv2.resize(p, (gw, char_h), interpolation=cv2.INTER_AREA) if gw != p.shape[1] else p
        xi = round(x)
        alpha[y : y + char_h, xi : xi + gw] = np.maximum(
            alpha[y : y + char_h, xi : xi + gw], glyph[:, : w - xi] / 255.0
        )
        x += gw
    if country == "DE" and seals_x is not None:
        # the registration seal and the inspection sticker, after the district code
        r = round(6.5 * s)
        for cy, colour in ((h * 0.34, (40, 120, 200)), (h * 0.68, (90, 90, 200))):
            cv2.circle(img, (round(seals_x), round(cy)), r, colour, -1, cv2.LINE_AA)
            cv2.circle(img, (round(seals_x), round(cy)), r, (200, 200, 200), 1, cv2.LINE_AA)
    ink = np.array(_INK, np.float32)
    img = (img * (1 - alpha[..., None]) + ink * alpha[..., None]).astype(np.uint8)
    # the black border, inset, with rounded corners
    t = max(1, round(1.6 * s))
    inset = round(2.5 * s)
    _rounded_rect(img, (inset, inset), (w - 1 - inset, h - 1 - inset), round(6 * s), _INK, t)
    if dirt > 0:
        rng = rng or np.random.default_rng(0)
        grime = cv2.GaussianBlur(
            rng.random((h // 8 + 1, w // 8 + 1), dtype=np.float32), (0, 0), 1.5
        )
        grime = cv2.resize(grime, (w, h))[..., None]
        img = np.clip(img * (1 - dirt * 0.35 * grime), 0, 255).astype(np.uint8)
    return img


def _draw_code(img: np.ndarray, code: str, band: int, s: float, *, dark: bool) -> None:
    h = img.shape[0]
    size = round(20 * s)
    total = sum(_glyph(ch, size, 420).shape[1] for ch in code) + round(2 * s) * (len(code) - 1)
    x = (band - total) // 2
    y = h - round(12 * s) - size
    colour = np.array((150, 60, 10) if dark else (250, 250, 250), np.float32)
    for ch in code:
        g = _glyph(ch, size, 420).astype(np.float32)[..., None] / 255.0
        gw = g.shape[1]
        region = img[y : y + size, x : x + gw].astype(np.float32)
        img[y : y + size, x : x + gw] = (region * (1 - g) + colour * g).astype(np.uint8)
        x += gw + round(2 * s)


def _rounded_rect(
    img: np.ndarray,
    p1: tuple[int, int],
    p2: tuple[int, int],
    r: int,
    colour: tuple[int, int, int],
    thickness: int,
) -> None:
    (x1, y1), (x2, y2) = p1, p2
    cv2.line(img, (x1 + r, y1), (x2 - r, y1), colour, thickness, cv2.LINE_AA)
    cv2.line(img, (x1 + r, y2), (x2 - r, y2), colour, thickness, cv2.LINE_AA)
    cv2.line(img, (x1, y1 + r), (x1, y2 - r), colour, thickness, cv2.LINE_AA)
    cv2.line(img, (x2, y1 + r), (x2, y2 - r), colour, thickness, cv2.LINE_AA)
    for (cx, cy), start in (
        ((x1 + r, y1 + r), 180),
        ((x2 - r, y1 + r), 270),
        ((x2 - r, y2 - r), 0),
        ((x1 + r, y2 - r), 90),
    ):
        cv2.ellipse(img, (cx, cy), (r, r), 0, start, start + 90, colour, thickness, cv2.LINE_AA)


def infrared(image: np.ndarray, *, retro: bool = False) -> np.ndarray:
    """How `image` looks to a monochrome camera under its infrared lamp: grey; blue ink
    goes pale. `retro`: retro-reflective sheet, which sends the lamp straight back."""
    b, g, r = (image[..., i].astype(np.float32) for i in range(3))
    grey = 0.2 * b + 0.3 * g + 0.5 * r  # blue dyes reflect infrared: not as dark as in visible
    if retro:
        grey = 30 + 225 * (grey / 255.0) ** 0.7
    return np.clip(grey, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- camera


@dataclass(frozen=True)
class Camera:
    """A pinhole camera on a pole or gantry over the road, looking down the lanes.

    World metres: X to the right, Y up from the road, Z along the road away from the
    camera. The defaults frame the road from about 9 to 26 m out, where a plate is
    50 to 125 px wide: a typical ANPR set-up.
    """

    width: int = 1280
    height: int = 720
    focal: float = 2200.0
    mount: float = 5.0
    pitch_deg: float = 20.0
    x: float = 0.0

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points to (N, 2) pixels."""
        s, c = math.sin(math.radians(self.pitch_deg)), math.cos(math.radians(self.pitch_deg))
        p = np.asarray(points, np.float64).reshape(-1, 3)
        vx, vy, vz = p[:, 0] - self.x, p[:, 1] - self.mount, p[:, 2]
        yc = -c * vy - s * vz
        zc = np.maximum(-s * vy + c * vz, 1e-3)
        return np.stack(
            [self.width / 2 + self.focal * vx / zc, self.height / 2 + self.focal * yc / zc], axis=1
        )

    def ground(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, Z) on the road under every pixel's centre (float32, H x W)."""
        s, c = math.sin(math.radians(self.pitch_deg)), math.cos(math.radians(self.pitch_deg))
        u = np.arange(self.width) + 0.5
        v = np.arange(self.height) + 0.5
        du = ((u - self.width / 2) / self.focal)[None, :]
        dv = ((v - self.height / 2) / self.focal)[:, None]
        t = self.mount / np.maximum(c * dv + s, 1e-4)  # along the ray to the road
        x = (self.x + t * du).astype(np.float32)
        return x, np.broadcast_to((t * (c - s * dv)).astype(np.float32), x.shape).copy()


# --------------------------------------------------------------------------- the road

LANES = (-1.8, 1.8)  # lane centres, metres
_ROAD_EDGE = 3.6


def lamp_falloff(distance: np.ndarray | float) -> np.ndarray:
    """How much of the infrared lamp's light reaches a surface `distance` metres out,
    relative to one at 11 m (not quite inverse-square: the lamp's beam is aimed far)."""
    return np.clip((11.0 / np.maximum(distance, 1.0)) ** 1.6, 0.15, 1.3).astype(np.float32)


def render_road(camera: Camera, rng: np.random.Generator, *, night: bool) -> np.ndarray:
    """The empty road: asphalt with grain and wheel tracks, lane markings, verges."""
    X, Z = camera.ground()
    texture = _periodic_noise(rng, 512, 0.7) * 0.8 + _periodic_noise(rng, 512, 12.0) * 0.5
    grain = cv2.remap(
        texture,
        np.mod(X * 60, 511),
        np.mod(Z * 60, 511),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_WRAP,
    )
    lum = 100 + 9 * grain
    for lane in LANES:  # darker where the tyres run
        for side in (-0.75, 0.75):
            d = (X - np.float32(lane + side)) * np.float32(1 / 0.28)
            lum -= 9 * np.exp(-d * d)
    # Markings with soft edges one pixel wide: coverage from the distance to the edge
    # in pixels, so that they are smooth without drawing at a larger size.
    px_x = np.abs(np.gradient(X, axis=1)) + 1e-6
    px_z = np.abs(np.gradient(Z, axis=0)) + 1e-6

    def inside(distance: np.ndarray, pixel: np.ndarray) -> np.ndarray:
        return np.clip(distance / pixel + 0.5, 0, 1)

    edge_line = inside(0.075 - np.abs(np.abs(X) - (_ROAD_EDGE - 0.1)), px_x)
    dash = np.mod(Z, 9.0)
    centre = inside(0.06 - np.abs(X), px_x) * inside(np.minimum(dash, 3.0 - dash), px_z)
    marking = np.maximum(edge_line, centre)[..., None]
    verge = inside(np.abs(X) - _ROAD_EDGE, px_x)[..., None]
    if night:
        falloff = lamp_falloff(Z)[..., None]
        road: np.ndarray = (lum * 0.32)[..., None]
        road = road * (1 - marking) + 140 * marking  # paint beads are retro-reflective
        road = road * (1 - verge) + (18 + 5 * grain)[..., None] * verge
        out = np.repeat(road * falloff, 3, axis=2)
    else:
        road = lum[..., None] * np.array([1.06, 1.0, 0.92], np.float32)  # bluish grey
        road = road * (1 - marking) + np.array([218, 222, 222], np.float32) * marking
        grass = np.stack([60 + 10 * grain, 112 + 14 * grain, 78 + 10 * grain], axis=2)
        out = road * (1 - verge) + grass * verge
    return np.clip(out, 0, 255).astype(np.uint8)


def _periodic_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-blurred noise that tiles without seams, scaled to unit deviation."""
    f = np.fft.fftfreq(size)
    gain = np.exp(-2 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    noise = np.fft.ifft2(np.fft.fft2(rng.normal(0, 1, (size, size))) * gain).real
    return (noise / max(noise.std(), 1e-6)).astype(np.float32)


# --------------------------------------------------------------------------- vehicles

BODY_COLOURS = (  # BGR
    (226, 226, 222),
    (176, 172, 168),
    (38, 38, 40),
    (92, 48, 28),
    (40, 42, 168),
    (112, 112, 110),
    (52, 80, 44),
    (150, 178, 196),
    (150, 110, 40),
)
_FRONT_M = (1.76, 0.62)  # the front face sprite, metres wide and tall
_FRONT_TOP = 0.80  # metres above the road
_FRONT_PX_PER_M = 500
_PLATE_Y = 0.46  # plate centre, metres above the road


@dataclass
class Vehicle:
    """One car of the clip: what it carries, where it drives and when."""

    text: str
    country: str
    night: bool
    lane: float  # X of the lane centre
    start: int  # frame at which it is at `z_start`
    speed: float  # metres per second
    colour: tuple[int, int, int]
    sway: float = 0.0  # metres of side-to-side drift
    roll_deg: float = 0.0  # plate mounted a little askew
    z_start: float = 28.0
    z_end: float = 2.5

    def z_at(self, t: float) -> float:
        return self.z_start - self.speed * t

    def x_at(self, t: float) -> float:
        return self.lane + self.sway * math.sin(0.9 * t + self.lane)

    def frames(self, fps: float) -> range:
        span = int((self.z_start - self.z_end) / self.speed * fps)
        return range(self.start, self.start + span + 1)


class _VehicleArt:
    """A vehicle's textures, made once: the front face and the plate, with smaller copies."""

    def __init__(self, v: Vehicle, rng: np.random.Generator):
        plate = render_plate(
            v.text, v.country, px_per_mm=2.0, dirt=float(rng.uniform(0, 0.6)), rng=rng
        )
        front = _front_face(v.colour, rng, night=v.night)
        colour: np.ndarray = np.array(v.colour, np.uint8).reshape(1, 1, 3)
        if v.night:  # paint under the lamp: grey, and dimmer than the plate's sheet
            plate = cv2.cvtColor(infrared(plate, retro=True), cv2.COLOR_GRAY2BGR)
            front[..., :3] = (infrared(front[..., :3]) // 2 + 8)[..., None]
            colour = cv2.cvtColor(infrared(colour) // 2 + 8, cv2.COLOR_GRAY2BGR)
        self.plate = _pyramid(plate)
        self.front = _pyramid(front)
        self.colour = colour.reshape(3).astype(np.float32)


def _pyramid(image: np.ndarray) -> list[np.ndarray]:
    levels = [image]
    while min(levels[-1].shape[:2]) > 24:
        levels.append(cv2.pyrDown(levels[-1]))
    return levels


def _front_face(
    colour: tuple[int, int, int], rng: np.random.Generator, *, night: bool
) -> np.ndarray:
    """The front of a car below the bonnet, BGRA: lamps, grille, bumper, plate holder."""
    k = _FRONT_PX_PER_M
    w, h = round(_FRONT_M[0] * k), round(_FRONT_M[1] * k)
    body = np.array(colour, np.float32)
    # a curved bumper: lit from above, darker towards its corners and its lower edge
    ys = np.linspace(1.0, 0.8, h, dtype=np.float32)[:, None]
    xs = 1.0 - 0.35 * np.linspace(-1, 1, w, dtype=np.float32)[None, :] ** 4
    light = (ys * xs)[..., None]
    img = body * light + rng.normal(0, 2, (h, w, 1)).astype(np.float32)
    img[: int(h * 0.04)] *= 1.15  # the sheen of the bonnet's leading edge
    img = np.clip(img, 0, 255).astype(np.uint8)
    plastic = (34, 34, 36) if rng.random() < 0.6 else tuple(int(c * 0.6) for c in colour)
    lower = int(h * 0.74)
    img[lower:] = (np.asarray(plastic, np.float32) * ys[lower:, :, None]).astype(np.uint8)
    # grille: a mesh in a chrome surround, with a badge
    gx1, gx2, gy1, gy2 = int(w * 0.31), int(w * 0.69), int(h * 0.05), int(h * 0.33)
    cv2.rectangle(img, (gx1 - 3, gy1 - 3), (gx2 + 3, gy2 + 3), (170, 172, 175), -1, cv2.LINE_AA)
    cv2.rectangle(img, (gx1, gy1), (gx2, gy2), (26, 26, 28), -1, cv2.LINE_AA)
    step = max(4, h // 30)
    for y in range(gy1 + step // 2, gy2, step):
        for x in range(gx1 + ((y // step) % 2) * step // 2, gx2, step):
            cv2.circle(img, (x, y), max(1, step // 4), (48, 48, 50), -1, cv2.LINE_AA)
    cv2.ellipse(
        img,
        (w // 2, (gy1 + gy2) // 2),
        (h // 14, h // 22),
        0,
        0,
        360,
        (200, 200, 200),
        2,
        cv2.LINE_AA,
    )
    # lower intake across the plastic, fog lamps in its corners
    cv2.rectangle(
        img,
        (int(w * 0.25), int(h * 0.82)),
        (int(w * 0.75), int(h * 0.94)),
        (18, 18, 20),
        -1,
        cv2.LINE_AA,
    )
    # headlamps: a swept outline with two reflectors
    lamp_glass = (250, 250, 250) if night else (200, 205, 208)
    for side in (-1, 1):
        cx = w / 2 + side * w * 0.37
        outline = np.array(
            [
                [cx - side * w * 0.13, h * 0.06],
                [cx + side * w * 0.08, h * 0.02],
                [cx + side * w * 0.125, h * 0.07],
                [cx + side * w * 0.11, h * 0.2],
                [cx - side * w * 0.02, h * 0.27],
                [cx - side * w * 0.12, h * 0.2],
            ]
        )
        cv2.fillPoly(
            img, [np.round(outline * 16).astype(np.int32)], (70, 70, 72), cv2.LINE_AA, shift=4
        )
        for dx, r in ((-0.05, 0.075), (0.05, 0.06)):
            centre = (round(cx + side * dx * w), round(h * 0.14))
            cv2.circle(img, centre, round(r * h * 1.3), (120, 122, 125), -1, cv2.LINE_AA)
            cv2.circle(img, centre, round(r * h * 0.8), lamp_glass, -1, cv2.LINE_AA)
            cv2.circle(img, centre, round(r * h * 0.3), (255, 255, 255), -1, cv2.LINE_AA)
        cv2.ellipse(
            img,
            (round(cx), round(h * 0.88)),
            (round(0.04 * w), round(0.035 * h)),
            0,
            0,
            360,
            (150, 150, 148),
            -1,
            cv2.LINE_AA,
        )  # fog lamp
    # the crease over the plate, and the plate holder
    crease = tuple(int(c * 0.7) for c in colour)
    cv2.line(
        img, (int(w * 0.05), int(h * 0.37)), (int(w * 0.95), int(h * 0.37)), crease, 2, cv2.LINE_AA
    )
    pw, ph = 0.52 * k, 0.11 * k
    py = (_FRONT_TOP - _PLATE_Y) * k
    cv2.rectangle(
        img,
        (round(w / 2 - pw / 2 - 6), round(py - ph / 2 - 5)),
        (round(w / 2 + pw / 2 + 6), round(py + ph / 2 + 9)),
        (24, 24, 24),
        -1,
        cv2.LINE_AA,
    )
    alpha = np.full((h, w, 1), 255, np.uint8)
    return np.concatenate([img, alpha], axis=2)


def _quad(
    half_width: tuple[float, float], y: tuple[float, float], z: tuple[float, float]
) -> np.ndarray:
    """A quad across the car, in the car's own coordinates (X from its centre line, Z from
    its front): from its near edge (half-width, height, depth [0]) to its far edge ([1])."""
    (a, b), (y0, y1), (z0, z1) = half_width, y, z
    return np.array([[-a, y0, z0], [a, y0, z0], [b, y1, z1], [-b, y1, z1]], np.float64)


class _Layer:
    """A vehicle drawn on its own, premultiplied, so that it can be motion-blurred."""

    def __init__(self, x0: int, y0: int, w: int, h: int):
        self.x0, self.y0 = x0, y0
        self.colour = np.zeros((h, w, 3), np.float32)  # straight (not premultiplied) colour
        self.alpha = np.zeros((h, w), np.float32)

    def over(self, patch: np.ndarray, mask: np.ndarray, px: int, py: int) -> None:
        """Paint `patch` (h, w, 3) with coverage `mask` (h, w, 0..1) at frame pixel px, py."""
        h, w = self.alpha.shape
        x1, y1 = px - self.x0, py - self.y0
        ax1, ay1 = max(0, x1), max(0, y1)
        ax2, ay2 = min(w, x1 + patch.shape[1]), min(h, y1 + patch.shape[0])
        if ax2 <= ax1 or ay2 <= ay1:
            return
        m = mask[ay1 - y1 : ay2 - y1, ax1 - x1 : ax2 - x1]
        p = patch[ay1 - y1 : ay2 - y1, ax1 - x1 : ax2 - x1]
        c = self.colour[ay1:ay2, ax1:ax2]
        c *= 1 - m[..., None]
        c += p * m[..., None]
        a = self.alpha[ay1:ay2, ax1:ax2]
        a += m * (1 - a)

    def polygon(self, pts: np.ndarray, colour: np.ndarray) -> None:
        x1, y1 = np.floor(pts.min(axis=0)).astype(int) - 1
        x2, y2 = np.ceil(pts.max(axis=0)).astype(int) + 1
        mask = np.zeros((y2 - y1, x2 - x1), np.uint8)
        cv2.fillPoly(
            mask, [np.round((pts - [x1, y1]) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4
        )
        patch = np.broadcast_to(np.asarray(colour, np.float32), (*mask.shape, 3))
        self.over(patch, mask.astype(np.float32) / 255.0, x1, y1)

    def sprite(self, levels: list[np.ndarray], quad: np.ndarray) -> None:
        """Warp a texture (from its pyramid, the level nearest the size it will have) onto
        the projected quad (TL, TR, BR, BL)."""
        width = max(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[2] - quad[3]))
        level = levels[0]
        for candidate in levels:
            if candidate.shape[1] < width:
                break
            level = candidate
        h, w = level.shape[:2]
        x1, y1 = np.floor(quad.min(axis=0)).astype(int) - 1
        x2, y2 = np.ceil(quad.max(axis=0)).astype(int) + 1
        src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
        matrix = cv2.getPerspectiveTransform(src, (quad - [x1, y1]).astype(np.float32))
        if level.shape[2] == 3:
            level = np.concatenate([level, np.full((h, w, 1), 255, np.uint8)], axis=2)
        warped = cv2.warpPerspective(
            level,
            matrix,
            (int(x2 - x1), int(y2 - y1)),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
        )
        self.over(
            warped[..., :3].astype(np.float32), warped[..., 3].astype(np.float32) / 255.0, x1, y1
        )

    def blur(self, dx: float, dy: float) -> None:
        """Motion blur along the image motion (dx, dy) during the exposure."""
        length = math.hypot(dx, dy)
        if length < 1.0:
            return
        # blur premultiplied, so that the edges blend with what lies behind
        colour = _motion_blur(self.colour * self.alpha[..., None], dx, dy, cv2.BORDER_CONSTANT)
        self.alpha = _motion_blur(self.alpha, dx, dy, cv2.BORDER_CONSTANT)
        self.colour = (colour / np.maximum(self.alpha, 1e-4)[..., None]).astype(np.float32)

    def onto(self, frame: np.ndarray) -> None:
        h, w = self.alpha.shape
        region = frame[self.y0 : self.y0 + h, self.x0 : self.x0 + w]
        region *= 1 - self.alpha[..., None]
        region += self.colour * self.alpha[..., None]


def _vehicle_parts(
    v: Vehicle, body: np.ndarray, t: float, camera: Camera
) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """The vehicle's parts far to near, projected: (kind, polygon in pixels, colour); kinds
    are "shadow", "poly", and the textured "front" and "plate"."""
    x, z = v.x_at(t), v.z_at(t)
    hw = _FRONT_M[0] / 2
    glass = np.full(3, 14.0) if v.night else np.array([52, 48, 46], np.float32)
    tyre = np.full(3, 22.0)
    a = np.linspace(0, 2 * math.pi, 20, endpoint=False)
    wheel = np.stack([np.full_like(a, hw + 0.01), 0.31 + 0.31 * np.sin(a), 0.31 * np.cos(a)], 1)
    cabin = np.array([[0.74, 0.92, 1.2], [0.65, 1.42, 1.95], [0.65, 1.40, 3.4], [0.74, 0.92, 3.9]])
    # the flank the camera sees, drawn for the right-hand one and mirrored for the left
    flank = [
        (
            np.array([[hw, 0.2, 0.05], [hw, 0.2, 4.3], [hw, 0.9, 4.3], [hw, 0.92, 0.05]]),
            body * 0.72,
        ),
        (
            np.array([[hw, 0.92, 0.05], [hw, 0.9, 4.3], [0.74, 0.93, 4.3], [0.74, 0.95, 0.05]]),
            body * 0.95,
        ),  # shoulder
        (cabin, body * 0.8),  # pillars
        (
            cabin + [[0, 0.04, 0.25], [0, -0.04, 0.12], [0, -0.04, -0.3], [0, 0.04, -0.75]],
            glass * 1.1,
        ),  # side windows
        (wheel + [0, 0, 0.85], tyre),
        (wheel + [0, 0, 3.5], tyre),
    ]
    side = -1.0 if x > camera.x else 1.0
    local: list[tuple[str, np.ndarray, np.ndarray | None]] = [
        ("shadow", _quad((1.0, 0.95), (0, 0), (-0.15, 4.4)), None),
        ("poly", _quad((hw - 0.04, hw - 0.06), (0.92, 0.9), (3.5, 4.3)), body * 1.05),  # boot
    ]
    local += [("poly", pts * [side, 1, 1], colour) for pts, colour in flank]
    local += [
        ("poly", _quad((0.64, 0.76), (1.40, 0.93), (3.4, 3.9)), glass),  # rear window
        ("poly", _quad((0.66, 0.64), (1.42, 1.40), (1.95, 3.4)), body * 1.08),  # roof
        ("poly", _quad((0.78, 0.66), (0.95, 1.42), (1.2, 1.95)), glass),  # windscreen
        ("poly", _quad((0.5, 0.3), (1.10, 1.30), (1.43, 1.75)), glass + (12 if v.night else 45)),
        ("poly", _quad((hw - 0.02, 0.8), (_FRONT_TOP, 0.95), (0.02, 1.2)), body * 1.12),  # bonnet
    ]
    for tx in (-1, 1):  # tyres under the bumper
        tyre_front = np.array(
            [[0.58, 0.0, 0.7], [0.84, 0.0, 0.7], [0.84, 0.3, 0.6], [0.58, 0.3, 0.6]]
        )
        local.append(("poly", tyre_front * [tx, 1, 1], tyre))
    bottom = _FRONT_TOP - _FRONT_M[1]
    local.append(("front", _quad((hw, hw), (_FRONT_TOP, bottom), (0, 0)), None))
    parts = [(kind, camera.project(pts + [x, 0, z]), colour) for kind, pts, colour in local]
    parts.append(("plate", camera.project(plate_corners(v, t)), None))
    return parts


def plate_corners(v: Vehicle, t: float) -> np.ndarray:
    """The plate's corners in the world at time `t`: TL, TR, BR, BL."""
    x, z = v.x_at(t), v.z_at(t) - 0.03
    a = math.radians(v.roll_deg)
    pw, ph = PLATE_MM[0] / 2000, PLATE_MM[1] / 2000
    corners = []
    for cx, cy in ((-pw, ph), (pw, ph), (pw, -ph), (-pw, -ph)):
        corners.append(
            [
                x + cx * math.cos(a) - cy * math.sin(a),
                _PLATE_Y + cx * math.sin(a) + cy * math.cos(a),
                z,
            ]
        )
    return np.array(corners)


def lamp_points(v: Vehicle, t: float) -> np.ndarray:
    x, z = v.x_at(t), v.z_at(t)
    return np.array([[x - 0.63, _FRONT_TOP - 0.09, z], [x + 0.63, _FRONT_TOP - 0.09, z]])


# --------------------------------------------------------------------------- the clip


@dataclass
class TruthPass:
    """One vehicle of a synthetic clip: its plate and the frames its plate is wholly in view."""

    text: str  # as written on the plate, e.g. "ABC 123"
    country: str
    first_frame: int
    last_frame: int
    night: bool

    @property
    def plate(self) -> str:
        """The text as the pipeline reports it: A-Z0-9 only."""
        return compact(self.text)


# Shutter times: ANPR cameras expose briefly to freeze plates; at night the infrared
# flash allows a little less. A plate close by moves about 1000 px/s across the frame.
DAY_EXPOSURE_S = 1 / 1500
NIGHT_EXPOSURE_S = 1 / 800


class SyntheticDriveBy(SourceBase):
    """A made-up drive-by clip with ground truth: a `Source` of frames, rendered on demand.

    `passes`: (text, country, night) per vehicle, in the order they arrive. Vehicles of a
    run of day (or night) passes come a second or so apart in alternate lanes, so that
    they overlap in time; between day and night the scene cuts to the infrared camera and
    waits a second of empty road. Every frame is a pure function of the seed and its index.
    """

    live = False

    def __init__(
        self,
        passes: Sequence[tuple[str, str, bool]],
        *,
        seed: int = 0,
        fps: float = 15.0,
        camera: Camera | None = None,
        source_id: str | None = None,
        jpeg_quality: int | None = 80,
    ):
        if not passes:
            raise ValueError("a synthetic clip needs at least one pass")
        super().__init__(source_id or f"synthetic-{seed}", float(fps), CameraState.CONNECTING)
        self.seed = seed
        self.fps = float(fps)
        self.camera = camera or Camera()
        self.jpeg_quality = jpeg_quality
        rng = np.random.default_rng(seed)
        self.vehicles = _schedule(passes, rng, self.fps)
        self.frame_count = max(v.frames(self.fps).stop for v in self.vehicles) + round(self.fps / 2)
        self._segments = _segments(self.vehicles, self.fps)
        self._art = [
            _VehicleArt(v, np.random.default_rng([seed, i])) for i, v in enumerate(self.vehicles)
        ]
        self._roads: dict[bool, np.ndarray] = {}
        self._noise = (
            np.random.default_rng([seed, 2000])
            .normal(0, 1, (self.camera.height + 64, self.camera.width + 64))
            .astype(np.float32)
        )
        self.truth = [self._truth(v) for v in self.vehicles]
        self._closed = False

    @classmethod
    def default(
        cls, seed: int = 0, *, vehicles: int = 8, night: int = 3, **options: object
    ) -> SyntheticDriveBy:
        """`vehicles` cars of different countries and plate styles, the last `night` of
        them after dark."""
        rng = np.random.default_rng([seed, 7])
        countries = list(STYLES)
        picked = [countries[i] for i in rng.permutation(len(countries))]
        picked = (picked * (vehicles // len(picked) + 1))[:vehicles]
        passes = [(plate_text(c, rng), c, i >= vehicles - night) for i, c in enumerate(picked)]
        return cls(passes, seed=seed, **options)  # type: ignore[arg-type]

    # ---- the Source protocol

    def __iter__(self) -> Iterator[Frame]:
        self._closed = False
        self._health.set_state(CameraState.LIVE)
        try:
            for index in range(self.frame_count):
                if self._closed:
                    return
                image = self.render(index)
                self._health.count_frame()
                yield Frame(image, index, index / self.fps, time.time(), self.source_id)
        finally:
            self._health.set_state(CameraState.ENDED)

    def __len__(self) -> int:
        return self.frame_count

    def close(self) -> None:
        self._closed = True
        self._health.set_state(CameraState.ENDED)

    # ---- rendering

    def night_at(self, index: int) -> bool:
        night = self._segments[0][1]
        for start, seg_night in self._segments:
            if index >= start:
                night = seg_night
        return night

    def render(self, index: int) -> np.ndarray:
        """Frame `index` of the clip, BGR uint8."""
        cam = self.camera
        night = self.night_at(index)
        if night not in self._roads:
            self._roads[night] = render_road(
                self.camera, np.random.default_rng([self.seed, 1000 + night]), night=night
            )
        frame = self._roads[night].astype(np.float32)
        t_frame = index / self.fps
        live = [
            (i, v)
            for i, v in enumerate(self.vehicles)
            if v.night == night and index in v.frames(self.fps)
        ]
        live.sort(key=lambda iv: -iv[1].z_at(t_frame - iv[1].start / self.fps))
        for i, v in live:
            self._draw(frame, v, self._art[i], t_frame - v.start / self.fps)
        if night:
            self._glare(frame, [v for _, v in live], t_frame)
        rng = np.random.default_rng([self.seed, index, 3])
        oy, ox = rng.integers(0, 64, 2)
        noise = self._noise[oy : oy + cam.height, ox : ox + cam.width]
        if night:
            grey = cv2.GaussianBlur(frame[..., 0], (0, 0), 0.8) + noise * 9.0
            frame = np.repeat(grey[..., None], 3, axis=2)
        else:
            frame = cv2.GaussianBlur(frame, (0, 0), 0.6) + noise[..., None] * 3.0
        image: np.ndarray = np.clip(frame, 0, 255).astype(np.uint8)
        if self.jpeg_quality:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
            if decoded is not None:
                image = decoded
        return image

    def _draw(self, frame: np.ndarray, v: Vehicle, art: _VehicleArt, t: float) -> None:
        cam = self.camera
        parts = _vehicle_parts(v, art.colour, t, cam)
        pts = np.concatenate([p for _, p, _ in parts])
        dt = NIGHT_EXPOSURE_S if v.night else DAY_EXPOSURE_S
        motion = (cam.project(plate_corners(v, t + dt)) - cam.project(plate_corners(v, t))).mean(0)
        pad = int(abs(motion).max()) + 4
        x1, y1 = np.floor(pts.min(axis=0)).astype(int) - pad
        x2, y2 = np.ceil(pts.max(axis=0)).astype(int) + pad
        x1, y1 = max(0, x1), max(0, y1)
        x2, y2 = min(cam.width, x2), min(cam.height, y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return
        shadow = parts[0][1]
        _darken(frame, shadow, 0.45 if not v.night else 0.7)
        layer = _Layer(x1, y1, x2 - x1, y2 - y1)
        for kind, quad, colour in parts[1:]:
            if kind == "poly":
                assert colour is not None  # a polygon part always has its colour
                layer.polygon(quad, colour)
            elif kind == "front":
                layer.sprite(art.front, quad)
            elif kind == "plate":
                if v.night:  # the lamp lights the car less the further it is; not the plate
                    layer.colour *= lamp_falloff(v.z_at(t))
                layer.sprite(art.plate, quad)
        layer.blur(float(motion[0]), float(motion[1]))
        layer.onto(frame)

    def _glare(self, frame: np.ndarray, vehicles: list[Vehicle], t_frame: float) -> None:
        """Headlights at night: burnt-out cores and a halo that spills over the bumper."""
        if not vehicles:
            return
        cam = self.camera
        small = np.zeros((cam.height // 4, cam.width // 4), np.float32)
        metre = 1.0
        for v in vehicles:
            t = t_frame - v.start / self.fps
            lamps = cam.project(lamp_points(v, t))
            metre = abs(lamps[1, 0] - lamps[0, 0]) / 1.26  # pixels a metre, at the lamps
            for lx, ly in lamps:
                cv2.circle(
                    frame,
                    (round(lx), round(ly)),
                    max(2, round(0.06 * metre)),
                    (255, 255, 255),
                    -1,
                    cv2.LINE_AA,
                )
                cv2.circle(
                    small,
                    (round(lx / 4), round(ly / 4)),
                    max(1, round(0.02 * metre)),
                    1.0,
                    -1,
                    cv2.LINE_AA,
                )
        sigma = max(1.0, 0.03 * metre)
        halo = cv2.GaussianBlur(small, (0, 0), sigma)
        halo = cv2.resize(
            (halo / max(float(halo.max()), 1e-6)).astype(np.float32),
            (cam.width, cam.height),
            interpolation=cv2.INTER_LINEAR,
        )
        frame += halo[..., None] * 110

    def _truth(self, v: Vehicle) -> TruthPass:
        cam = self.camera
        inside = []
        for index in v.frames(self.fps):
            quad = cam.project(plate_corners(v, index / self.fps - v.start / self.fps))
            if quad.min() >= 0 and quad[:, 0].max() < cam.width and quad[:, 1].max() < cam.height:
                inside.append(index)
        first = inside[0] if inside else v.start
        last = inside[-1] if inside else v.start
        return TruthPass(v.text, v.country, first, last, v.night)

    def plate_box(self, pass_index: int, index: int) -> tuple[float, float, float, float] | None:
        """Where plate `pass_index` is in frame `index` (x1, y1, x2, y2), or None if unseen."""
        v = self.vehicles[pass_index]
        if index not in v.frames(self.fps):
            return None
        quad = self.camera.project(plate_corners(v, index / self.fps - v.start / self.fps))
        x1, y1 = quad.min(axis=0)
        x2, y2 = quad.max(axis=0)
        return float(x1), float(y1), float(x2), float(y2)

    def write_video(self, path: str | os.PathLike[str]) -> Path:
        """The clip as an mp4 (mp4v) file, for `anpr-edge replay`."""
        out = Path(path)
        cam = self.camera
        writer = cv2.VideoWriter(
            str(out), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (cam.width, cam.height)
        )
        if not writer.isOpened():
            raise OSError(f"{out}: cannot open an mp4v video writer")
        try:
            for index in range(self.frame_count):
                writer.write(self.render(index))
        finally:
            writer.release()
        return out


def _darken(frame: np.ndarray, quad: np.ndarray, strength: float) -> None:
    x1, y1 = np.floor(quad.min(axis=0)).astype(int) - 8
    x2, y2 = np.ceil(quad.max(axis=0)).astype(int) + 8
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return
    mask = np.zeros((y2 - y1, x2 - x1), np.float32)
    cv2.fillPoly(
        mask, [np.round((quad - [x1, y1]) * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4
    )
    mask = cv2.GaussianBlur(mask, (0, 0), 3)
    frame[y1:y2, x1:x2] *= 1 - strength * mask[..., None]


def _schedule(
    passes: Sequence[tuple[str, str, bool]], rng: np.random.Generator, fps: float
) -> list[Vehicle]:
    vehicles: list[Vehicle] = []
    lane = int(rng.integers(0, 2))
    start = round(0.3 * fps)
    last_in_lane = {0: -(10**9), 1: -(10**9)}
    for i, (text, country, night) in enumerate(passes):
        if country not in STYLES:
            raise ValueError(f"no plate style for country {country!r}; known: {', '.join(STYLES)}")
        if i and bool(night) != vehicles[-1].night:  # the scene cuts: wait for an empty road
            start = max(v.frames(fps).stop for v in vehicles) + round(0.8 * fps)
            last_in_lane = {0: -(10**9), 1: -(10**9)}
        elif i:
            start += round(rng.uniform(0.7, 1.3) * fps)
            lane = 1 - lane
            start = max(start, last_in_lane[lane] + round(1.6 * fps))
        v = Vehicle(
            text=text,
            country=country,
            night=bool(night),
            lane=LANES[lane],
            start=start,
            speed=float(rng.uniform(10.0, 14.0)),
            colour=BODY_COLOURS[int(rng.integers(len(BODY_COLOURS)))],
            sway=float(rng.uniform(0, 0.15)),
            roll_deg=float(rng.uniform(-2, 2)),
        )
        vehicles.append(v)
        last_in_lane[lane] = start
    return vehicles


def _segments(vehicles: list[Vehicle], fps: float) -> list[tuple[int, bool]]:
    """(first frame, night) of each stretch of the clip, the cut a little before its first car."""
    segments = [(0, vehicles[0].night)]
    for prev, v in zip(vehicles, vehicles[1:], strict=False):
        if v.night != prev.night:
            segments.append((v.start - round(0.6 * fps), v.night))
    return segments


# --------------------------------------------------------------------------- from a photo


@dataclass(frozen=True)
class PhotoFrame:
    """One frame of an approach made from a still, and where its plate is in it."""

    image: np.ndarray
    plate_box: tuple[float, float, float, float]  # x1, y1, x2, y2


def photo_approach(
    image: np.ndarray,
    plate_box: Sequence[float],
    *,
    frames: int = 20,
    night: bool = False,
    seed: int = 0,
    start_scale: float = 0.45,
    size: tuple[int, int] | None = None,
    glare: bool = False,
) -> list[PhotoFrame]:
    """A car photo turned into a short approach: the picture grows from `start_scale` to
    full size (as 1 / distance, at constant speed) while it drifts down into place, with
    motion blur, sensor noise and JPEG artefacts; `night` makes it a low-light infrared
    picture in which the plate (known from `plate_box`, x1 y1 x2 y2) is retro-reflective.

    Frames keep the photo's size; the last one is the photo itself, degraded alike. The
    surroundings of the shrunken photo are a blurred copy of it, with no plate in them.
    `size` (width, height) renders the frames at that size instead: the photo is first
    fitted into it (`fit_photo`). `glare` adds a pair of headlights beside the plate, burnt
    out at their cores, with a halo that spills over the plate (as at night, facing the car).
    Without these two options the frames are exactly those of earlier versions.
    """
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if not 0 < start_scale <= 1:
        raise ValueError(f"start_scale must be in (0, 1], got {start_scale}")
    src = np.ascontiguousarray(image)
    if src.ndim == 2:
        src = cv2.cvtColor(src, cv2.COLOR_GRAY2BGR)
    h, w = src.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in plate_box)
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise ValueError(f"plate box {tuple(plate_box)} is not inside the {w}x{h} image")
    if size is not None:
        src, (x1, y1, x2, y2) = fit_photo(src, (x1, y1, x2, y2), size)
        h, w = src.shape[:2]
    rng = np.random.default_rng(seed)
    if night:
        src = _night_photo(src, (x1, y1, x2, y2))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    # Where the plate starts: higher in the picture, a little to one side, still in view.
    drift_x = float(rng.uniform(-0.08, 0.08)) * w
    drift_y = -float(rng.uniform(0.1, 0.25)) * h
    half_w, half_h = (x2 - x1) * start_scale / 2, (y2 - y1) * start_scale / 2
    sx = float(np.clip(cx + drift_x, half_w + 1, w - half_w - 1))
    sy = float(np.clip(cy + drift_y, half_h + 1, h - half_h - 1))
    background = cv2.GaussianBlur(src, (0, 0), max(4.0, w / 60))
    exposure = 0.2 if night else 0.1  # of the frame interval
    noise_sigma = 8.0 if night else 2.5
    out: list[PhotoFrame] = []

    def place(k: float) -> tuple[float, float, float]:
        p = k / max(frames - 1, 1)
        scale = 1.0 / (1.0 / start_scale + (1.0 - 1.0 / start_scale) * p)
        return scale, sx + (cx - sx) * p, sy + (cy - sy) * p

    for k in range(frames):
        scale, ax, ay = place(k)
        matrix = np.array([[scale, 0, ax - scale * cx], [0, scale, ay - scale * cy]], np.float32)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        fg = cv2.warpAffine(src, matrix, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT)
        mask = cv2.warpAffine(
            np.full((h, w), 255, np.uint8),
            matrix,
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
        )
        mask = cv2.GaussianBlur(mask, (0, 0), 2.0).astype(np.float32)[..., None] / 255.0
        frame = fg.astype(np.float32) * mask + background.astype(np.float32) * (1 - mask)
        box = (
            ax - scale * (cx - x1),
            ay - scale * (cy - y1),
            ax + scale * (x2 - cx),
            ay + scale * (y2 - cy),
        )
        if glare:
            headlight_glare(frame, box)
        # blur along the motion of the plate during the exposure
        _, bx, by = place(k + exposure)
        dx, dy = bx - ax, by - ay
        if math.hypot(dx, dy) >= 1.0:
            frame = _motion_blur(frame, dx, dy)
        frame += rng.normal(0, noise_sigma, (h, w, 1) if night else (h, w, 3)).astype(np.float32)
        img = np.clip(frame, 0, 255).astype(np.uint8)
        ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 75 if night else 85])
        if ok:
            img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        out.append(PhotoFrame(img, box))
    return out


def drive_by_from_photo(
    image: np.ndarray,
    plate_box: Sequence[float],
    *,
    frames: int = 20,
    night: bool = False,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    glare: bool = False,
) -> list[np.ndarray]:
    """A short approach sequence (BGR frames) from a labelled still; see `photo_approach`,
    which also says where the plate is in each frame."""
    return [
        f.image
        for f in photo_approach(
            image, plate_box, frames=frames, night=night, seed=seed, size=size, glare=glare
        )
    ]


FRAME_SIZES: dict[str, tuple[int, int]] = {"720p": (1280, 720), "1080p": (1920, 1080)}


def fit_photo(
    image: np.ndarray, plate_box: Sequence[float], size: tuple[int, int]
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """`image` scaled to fit inside `size` (width, height), centred, the rest of the frame
    a stretched and blurred copy of it (no readable plate there); and where the plate
    (`plate_box`, x1 y1 x2 y2) is then."""
    width, height = size
    if width < 2 or height < 2:
        raise ValueError(f"frame size must be at least 2x2, got {width}x{height}")
    h, w = image.shape[:2]
    s = min(width / w, height / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    fill = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    out = cv2.GaussianBlur(fill, (0, 0), max(4.0, width / 60))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    ox, oy = (width - nw) // 2, (height - nh) // 2
    out[oy : oy + nh, ox : ox + nw] = cv2.resize(image, (nw, nh), interpolation=interp)
    x1, y1, x2, y2 = (float(v) for v in plate_box)
    box = (ox + x1 * s, oy + y1 * s, min(width, ox + x2 * s), min(height, oy + y2 * s))
    return out, box


def headlight_glare(frame: np.ndarray, plate_box: Sequence[float], strength: float = 160.0) -> None:
    """Adds (in place, float32 BGR) two headlights to `frame` beside the plate at
    `plate_box`: a car's lamps sit about 1.3 plate widths either side of the plate's centre
    and a little above it; each is a saturated core with a halo whose light spills over the
    plate's near end and lowers its contrast."""
    x1, y1, x2, y2 = (float(v) for v in plate_box)
    pw = max(1.0, x2 - x1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    sigma, core = 0.7 * pw, max(1.5, 0.1 * pw)
    h, w = frame.shape[:2]
    for lx in (cx - 1.3 * pw, cx + 1.3 * pw):
        ly = cy - 0.4 * pw
        r = 3 * sigma
        xa, xb = max(0, int(lx - r)), min(w, int(lx + r) + 1)
        ya, yb = max(0, int(ly - r)), min(h, int(ly + r) + 1)
        if xb <= xa or yb <= ya:
            continue
        yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float32)
        d = np.sqrt((xx - lx) ** 2 + (yy - ly) ** 2)
        light = strength * np.exp(-(d * d) / (2 * sigma * sigma))
        light += 255 * np.clip(core + 1 - d, 0, 1)
        frame[ya:yb, xa:xb] += light[..., None]


def _night_photo(src: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Low light under an infrared lamp: grey, dark, and the plate bright."""
    grey = infrared(src).astype(np.float32)
    dark = 8 + 0.35 * grey * (grey / 255.0) ** 0.3
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    plate = grey[y1:y2, x1:x2]
    if plate.size:
        lo, hi = np.percentile(plate, (5, 95))
        bright = 35 + 215 * np.clip((plate - lo) / max(hi - lo, 1.0), 0, 1)
        mask: np.ndarray = np.zeros(grey.shape, np.float32)
        mask[y1:y2, x1:x2] = 1
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, (y2 - y1) / 12))
        full = dark.copy()
        full[y1:y2, x1:x2] = bright
        dark = dark * (1 - mask) + full * mask
    return cv2.cvtColor(np.clip(dark, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def _motion_blur(
    image: np.ndarray, dx: float, dy: float, border: int = cv2.BORDER_REFLECT
) -> np.ndarray:
    """`image` smeared along (dx, dy) pixels, as by a moving subject during the exposure."""
    r = math.ceil(math.hypot(dx, dy) / 2)
    kernel = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    cv2.line(
        kernel,
        (round(r - dx / 2), round(r - dy / 2)),
        (round(r + dx / 2), round(r + dy / 2)),
        1.0,
        1,
        cv2.LINE_AA,
    )
    kernel /= kernel.sum()
    return cv2.filter2D(image, -1, kernel, borderType=border)
