"""The records that travel between the edge's stages: frames, detections, reads, events."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One decoded picture from a source.

    `pts` is seconds since the source started (for a file, its position in the
    video); `wall` is the UNIX time it was taken from the source.
    """

    image: np.ndarray  # H x W x 3, uint8, BGR
    index: int
    pts: float
    wall: float
    source_id: str = ""

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise ValueError("frame image must be a uint8 numpy array")
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 8 or img.shape[1] < 8:
            raise ValueError(f"frame image must be H x W x 3 (BGR), got shape {img.shape}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class Detections:
    """A frame's boxes, column by column: `xyxy` (N, 4) in pixels, `confidence` (N,),
    `class_id` (N,), and `tracker_id` (N,) once a tracker has seen them.

    Index with a boolean mask or an index array to get a new `Detections`.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    tracker_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        if len(self.confidence) != n or len(self.class_id) != n:
            raise ValueError(
                f"detections columns differ in length: xyxy {n}, confidence "
                f"{len(self.confidence)}, class_id {len(self.class_id)}"
            )
        if self.tracker_id is not None:
            self.tracker_id = np.asarray(self.tracker_id, dtype=np.int64).reshape(-1)
            if len(self.tracker_id) != n:
                raise ValueError("tracker_id length differs from xyxy")

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Detections:
        if isinstance(index, int):
            index = [index]
        return Detections(
            self.xyxy[index],
            self.confidence[index],
            self.class_id[index],
            None if self.tracker_id is None else self.tracker_id[index],
        )

    @classmethod
    def merge(cls, parts: list[Detections]) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        tids = [p.tracker_id for p in parts]
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.confidence for p in parts]),
            np.concatenate([p.class_id for p in parts]),
            None if any(t is None for t in tids) else np.concatenate(tids),  # type: ignore[arg-type]
        )

    @property
    def area(self) -> np.ndarray:
        w = np.clip(self.xyxy[:, 2] - self.xyxy[:, 0], 0, None)
        h = np.clip(self.xyxy[:, 3] - self.xyxy[:, 1], 0, None)
        return w * h


@dataclass(frozen=True)
class OcrResult:
    """What a recogniser read in one plate crop, before any plate rules."""

    text: str
    confidence: float  # mean of the kept characters' confidences, 0..1
    char_confidence: tuple[float, ...]  # one per character of `text`


@dataclass(frozen=True)
class PlateText:
    """A read after the plate rules: raw as read, normalised, formatted for people."""

    raw: str
    text: str  # normalised: A-Z0-9 only, Latin, corrected where a format says so
    formatted: str  # as written on the plate in its country, e.g. "ABC 123"
    country: str | None  # ISO 3166 alpha-2 guess, or None
    confidence: float
    char_confidence: tuple[float, ...] = ()


@dataclass
class PlateRead:
    """One plate seen in one frame."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    detection_confidence: float
    plate: PlateText
    pts: float = 0.0
    frame_index: int = 0
    crop: np.ndarray | None = field(default=None, repr=False)
    vehicle_box: tuple[float, float, float, float] | None = None
    night: bool = False
    # the frame, downscaled and JPEG-encoded, for evidence when the read becomes a hit;
    # shared by the reads of one frame
    scene_jpeg: bytes | None = field(default=None, repr=False)

    @property
    def confidence(self) -> float:
        """The read's overall confidence: the OCR's, tempered by the detector's."""
        return float(self.plate.confidence * (0.5 + 0.5 * self.detection_confidence))


@dataclass
class PlateEvent:
    """One vehicle pass: the agreed read over the frames where its plate was seen."""

    text: str
    formatted: str
    country: str | None
    confidence: float
    first_seen: float
    last_seen: float
    frames: int  # reads voted
    direction: str  # "approaching", "receding", "left", "right", "stationary" or "unknown"
    track_id: int = 0
    raw: str = ""
    camera: str = ""
    best_crop: np.ndarray | None = field(default=None, repr=False)
    best_box: tuple[float, float, float, float] | None = None
    alternatives: list[tuple[str, int]] = field(default_factory=list)  # (text, votes)
    night: bool = False
    scene_jpeg: bytes | None = field(default=None, repr=False)
    # Other readings of the agreed characters where formats disagree (no country list:
    # KE123OZ as read, KE12302 as a Polish format would have it); the watchlist tries
    # them after `text`, and a hit on one says so.
    readings: list[str] = field(default_factory=list)
    # What carries the plate, where a vehicle was seen around it: "car", "truck" (van or
    # truck), "bus" or "motorcycle"; its main colour by name; its box in frame pixels.
    vehicle_type: str | None = None
    vehicle_colour: str | None = None
    vehicle_box: tuple[float, float, float, float] | None = None
    # True for a pass still in view: its text fused so far, for an early watchlist
    # match; the pass's final event (provisional False, same camera and track_id) follows.
    provisional: bool = False
    # The track ids of passes found to be this one after they were given as sightings
    # (the tracker merged them into it): this event completes their early hits too.
    absorbed: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "text": self.text,
            "formatted": self.formatted,
            "country": self.country,
            "confidence": round(float(self.confidence), 4),
            "first_seen": round(float(self.first_seen), 3),
            "last_seen": round(float(self.last_seen), 3),
            "frames": self.frames,
            "direction": self.direction,
            "track_id": self.track_id,
            "raw": self.raw,
            "camera": self.camera,
            "night": self.night,
            "box": None if self.best_box is None else [round(float(v), 1) for v in self.best_box],
            "alternatives": [[t, n] for t, n in self.alternatives],
            "readings": list(self.readings),
            "vehicle_type": self.vehicle_type,
            "vehicle_colour": self.vehicle_colour,
            "vehicle_box": (None if self.vehicle_box is None
                            else [round(float(v), 1) for v in self.vehicle_box]),
            "provisional": self.provisional,
        }
