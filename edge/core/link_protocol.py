"""The link's wire format: hits, heartbeats, acknowledgements and refusals, versioned and capped.

Every message is a ZeroMQ multipart message whose first frame is a tag naming its
kind and version (`ANPR/HIT/3`).  The rest is a small JSON header and, for a hit,
the JPEG images as raw frames, so images are never parsed or base64-inflated.

    HIT/3  [tag, header, crop_jpeg, scene_jpeg]   edge -> collector (current)
    HIT/2  [tag, header, crop_jpeg, scene_jpeg]   edge -> collector (edges before early hits)
    HIT/1  [tag, header, crop_jpeg]               edge -> collector (edges before 0.2)

Version 3 adds to version 2's header: `completes` (the id of an early hit, raised while
the vehicle was still in view, that this message completes with the pass's final read:
the collector updates that hit rather than storing a second one), the vehicle's type
and colour, and `match.reading` (the other reading of the plate that matched, when the
list matched one rather than the plate's text).
    HB/1   [tag, {"node", "sent_at", "status"}]   edge -> collector
    ACK/1  [tag, {"ids": [...], "t": ...}]        collector -> edge, after the commit
    REJ/1  [tag, {"id", "reason"}]                collector -> edge, a hit it will never take

Sizes are checked before anything is parsed; whatever is wrong raises `ProtocolError`
with a short `reason` the collector counts by.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.core.errors import ProtocolError
from edge.core.times import UTC, format_time, parse_iso, utc_now

PROTOCOL_VERSION = 3
HIT_VERSIONS = (1, 2, 3)

TAG_HIT_V1 = b"ANPR/HIT/1"
TAG_HIT_V2 = b"ANPR/HIT/2"
TAG_HIT_V3 = b"ANPR/HIT/3"
TAG_HEARTBEAT = b"ANPR/HB/1"
TAG_ACK = b"ANPR/ACK/1"
TAG_REJECT = b"ANPR/REJ/1"
_HIT_TAGS = {TAG_HIT_V1: 1, TAG_HIT_V2: 2, TAG_HIT_V3: 3}
_MAX_TAG = 32

JPEG_MAGIC = b"\xff\xd8\xff"

_ID = re.compile(r"^[0-9A-Za-z_-]{8,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # node and camera ids
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_MAX_TEXT = 256
_MAX_REASON = 500  # as long as a watchlist entry's reason may be


@dataclass(frozen=True)
class Limits:
    """Size caps, checked before parsing.  Both ends must agree; defaults fit a roadside uplink."""

    max_header_bytes: int = 16 * 1024
    max_crop_bytes: int = 128 * 1024
    max_scene_bytes: int = 512 * 1024
    max_status_bytes: int = 64 * 1024

    @property
    def max_frame_bytes(self) -> int:
        return max(
            self.max_header_bytes, self.max_crop_bytes, self.max_scene_bytes, self.max_status_bytes
        )


DEFAULT_LIMITS = Limits()


def new_hit_id() -> str:
    """A UUID of version 7 (RFC 9562): 48 bits of UNIX milliseconds, then 74 random.

    Unique like a uuid4, but in the order hits were made, so the collector's index
    of ids grows at its end instead of being rewritten all over at every checkpoint.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | (rand & (2**62 - 1))
    return str(uuid.UUID(int=value))


def parse_time(value: object, what: str = "time") -> dt.datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise ProtocolError("invalid", f"{what} must be an ISO 8601 string")
    try:
        t = parse_iso(value, default_zone=None)
    except ValueError as e:  # TimeOutOfRange too: 9999-12-31T23:00-05:00 is past UTC's last year
        raise ProtocolError("invalid", f"{what} {value!r} is not ISO 8601") from e
    if t.tzinfo is None:
        raise ProtocolError("invalid", f"{what} {value!r} has no time zone")
    return t


# ---------------------------------------------------------------- records


def _check_text(value: object, what: str, *, max_len: int = _MAX_TEXT, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ProtocolError("invalid", f"{what} must be a string")
    if len(value) > max_len or (not empty and not value):
        raise ProtocolError(
            "invalid", f"{what} must be {'' if empty else '1-'}{max_len} characters"
        )
    if any(ord(c) < 32 for c in value):
        raise ProtocolError("invalid", f"{what} contains control characters")
    return value


def _clean_text(obj: object, name: str, what: str, max_len: int) -> None:
    """Free text (a road, a reason, the raw OCR): control characters become spaces and
    overlong text is cut, rather than a hit being refused for a cosmetic field."""
    value = getattr(obj, name)
    if not isinstance(value, str):
        raise ProtocolError("invalid", f"{what} must be a string")
    if len(value) > max_len or any(ord(c) < 32 and c != "\t" for c in value):
        value = "".join(" " if ord(c) < 32 and c != "\t" else c for c in value[:max_len])
        object.__setattr__(obj, name, value)


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ProtocolError("invalid", f"{what} must be 1-64 letters, digits, '.', '_', ':' or '-'")
    return value


def _check_number(value: object, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError("invalid", f"{what} must be a number")
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ProtocolError("invalid", f"{what} must be within [{lo}, {hi}]")
    return value


def _check_int(value: object, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError("invalid", f"{what} must be an integer within [{lo}, {hi}]")
    return value


def _check_jpeg(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise ProtocolError("invalid", f"{what} must be bytes")
    if value and not value.startswith(JPEG_MAGIC):
        raise ProtocolError("invalid", f"{what} is not a JPEG")
    return value


@dataclass(frozen=True)
class CameraLocation:
    """Where the camera stands: WGS 84 position, the road, and the direction it watches."""

    lat: float | None = None
    lon: float | None = None
    road: str = ""  # e.g. "A4 km 112"
    direction: str = ""  # e.g. "northbound", "to DE"

    def __post_init__(self) -> None:
        if (self.lat is None) != (self.lon is None):
            raise ProtocolError("invalid", "location needs both lat and lon, or neither")
        if self.lat is not None:
            object.__setattr__(self, "lat", _check_number(self.lat, "lat", -90, 90))
            object.__setattr__(self, "lon", _check_number(self.lon, "lon", -180, 180))
        _clean_text(self, "road", "road", _MAX_TEXT)
        _clean_text(self, "direction", "direction", 64)


@dataclass(frozen=True)
class HitPlate:
    """The plate as read: raw OCR text, normalised text, formatted for people, country guess."""

    text: str  # normalised, what the watchlist matched
    raw: str = ""
    formatted: str = ""
    country: str | None = None
    confidence: float = 0.0

    def __post_init__(self) -> None:
        _check_text(self.text, "plate text", max_len=32, empty=False)
        _clean_text(self, "raw", "raw plate", 128)
        _clean_text(self, "formatted", "formatted plate", 64)
        if self.country is not None:
            _check_text(self.country, "country", max_len=8)
        object.__setattr__(self, "confidence", _check_number(self.confidence, "confidence", 0, 1))


@dataclass(frozen=True)
class WatchlistMatch:
    """Which watchlist entry the plate matched, how, and how urgent it is.

    `priority` is the entry's: 1 is the most urgent (as on the watchlists), larger
    numbers less so; the outbox sends the most urgent first.
    """

    watchlist: str  # the list's name
    entry_id: str  # the entry's id within the list
    kind: str = "exact"  # "exact", "fuzzy", "wildcard", ...
    entry_plate: str = ""  # the plate (or pattern) as listed
    priority: int = 5
    reason: str = ""  # why the plate is listed, e.g. "stolen vehicle"
    distance: float = 0.0  # the watchlist's OCR-aware edit cost, for a fuzzy match
    # The other reading of the plate (under another country's format) that matched, when
    # the list matched it rather than the plate's text; "" when the text itself matched.
    reading: str = ""

    def __post_init__(self) -> None:
        _check_text(self.watchlist, "watchlist", max_len=64, empty=False)
        _check_text(self.reading, "match reading", max_len=32)
        _check_text(self.entry_id, "entry id", max_len=64, empty=False)
        if not isinstance(self.kind, str) or not _KIND.match(self.kind):
            raise ProtocolError("invalid", "match kind must be a lower-case word")
        _clean_text(self, "entry_plate", "entry plate", 64)
        _check_int(self.priority, "priority", 0, 1000)
        _clean_text(self, "reason", "reason", _MAX_REASON)
        object.__setattr__(self, "distance", _check_number(self.distance, "distance", 0, 32))


@dataclass(frozen=True)
class HitMessage:
    """A plate read that matched a watchlist, as it travels from the edge to the collector."""

    node: str
    camera: str
    seen_at: dt.datetime  # when the plate was seen, UTC
    plate: HitPlate
    match: WatchlistMatch
    location: CameraLocation = field(default_factory=CameraLocation)
    crop_jpeg: bytes = field(default=b"", repr=False)
    scene_jpeg: bytes = field(default=b"", repr=False)
    hit_id: str = field(default_factory=new_hit_id)
    wire_version: int = field(default=PROTOCOL_VERSION, compare=False)
    # The id of the early hit (raised while the vehicle was in view) this one completes
    # with the pass's final read, picture and vehicle; "" for a hit of its own.
    completes: str = ""
    vehicle_type: str = ""  # "car", "truck", "bus", "motorcycle"; "" when not seen
    vehicle_colour: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.hit_id, str) or not _ID.match(self.hit_id):
            raise ProtocolError("invalid", "hit id must be 8-64 of [0-9A-Za-z_-]")
        if not isinstance(self.completes, str) or (self.completes
                                                   and not _ID.match(self.completes)):
            raise ProtocolError("invalid", "completes must be a hit id", self.hit_id)
        if self.completes == self.hit_id:
            raise ProtocolError("invalid", "a hit cannot complete itself", self.hit_id)
        _clean_text(self, "vehicle_type", "vehicle type", 32)
        _clean_text(self, "vehicle_colour", "vehicle colour", 32)
        _check_name(self.node, "node")
        _check_name(self.camera, "camera")
        if not isinstance(self.seen_at, dt.datetime) or self.seen_at.tzinfo is None:
            raise ProtocolError(
                "invalid", "seen_at must be a datetime with a time zone", self.hit_id
            )
        object.__setattr__(self, "seen_at", self.seen_at.astimezone(UTC))
        for value, cls in (
            (self.plate, HitPlate),
            (self.match, WatchlistMatch),
            (self.location, CameraLocation),
        ):
            if not isinstance(value, cls):
                raise ProtocolError("invalid", f"{cls.__name__} expected", self.hit_id)
        _check_jpeg(self.crop_jpeg, "crop")
        _check_jpeg(self.scene_jpeg, "scene")
        if self.wire_version not in HIT_VERSIONS:
            raise ProtocolError("version", f"hit version {self.wire_version} not spoken")

    @property
    def priority(self) -> int:
        return self.match.priority

    def check_size(self, limits: Limits = DEFAULT_LIMITS) -> None:
        if len(self.crop_jpeg) > limits.max_crop_bytes:
            raise ProtocolError(
                "oversized",
                f"crop {len(self.crop_jpeg)} B > {limits.max_crop_bytes} B",
                self.hit_id,
            )
        if len(self.scene_jpeg) > limits.max_scene_bytes:
            raise ProtocolError(
                "oversized",
                f"scene {len(self.scene_jpeg)} B > {limits.max_scene_bytes} B",
                self.hit_id,
            )

    def encode(
        self, version: int = PROTOCOL_VERSION, limits: Limits = DEFAULT_LIMITS
    ) -> list[bytes]:
        """The message's frames.  Versions 2 and 1 (for a collector not yet upgraded) drop what
        they cannot say: a completion then reaches it as a hit of its own; version 1 also
        drops the scene."""
        self.check_size(limits)
        if version == 3:
            frames = [TAG_HIT_V3, _dumps(self._header_v3()), self.crop_jpeg, self.scene_jpeg]
        elif version == 2:
            frames = [TAG_HIT_V2, _dumps(self._header_v2()), self.crop_jpeg, self.scene_jpeg]
        elif version == 1:
            frames = [TAG_HIT_V1, _dumps(self._header_v1()), self.crop_jpeg]
        else:
            raise ProtocolError("version", f"cannot write hit version {version}")
        if len(frames[1]) > limits.max_header_bytes:
            raise ProtocolError("oversized", "header too large", self.hit_id)
        return frames

    def _header_v2(self) -> dict[str, Any]:
        loc, p, m = self.location, self.plate, self.match
        return {
            "id": self.hit_id,
            "node": self.node,
            "camera": self.camera,
            "location": {
                "lat": loc.lat,
                "lon": loc.lon,
                "road": loc.road,
                "direction": loc.direction,
            },
            "seen_at": format_time(self.seen_at),
            "plate": {
                "raw": p.raw,
                "text": p.text,
                "formatted": p.formatted,
                "country": p.country,
                "confidence": p.confidence,
            },
            "match": {
                "watchlist": m.watchlist,
                "entry_id": m.entry_id,
                "kind": m.kind,
                "entry_plate": m.entry_plate,
                "priority": m.priority,
                "reason": m.reason,
                "distance": m.distance,
            },
        }

    def _header_v3(self) -> dict[str, Any]:
        header = self._header_v2()
        header["match"]["reading"] = self.match.reading
        header["completes"] = self.completes or None
        header["vehicle"] = {"type": self.vehicle_type, "colour": self.vehicle_colour}
        return header

    def _header_v1(self) -> dict[str, Any]:
        # The first release's flat header: no road, direction, formatted plate or scene.
        return {
            "id": self.hit_id,
            "node": self.node,
            "camera": self.camera,
            "lat": self.location.lat,
            "lon": self.location.lon,
            "ts": round(self.seen_at.timestamp(), 3),
            "plate": self.plate.text,
            "raw": self.plate.raw,
            "country": self.plate.country,
            "conf": self.plate.confidence,
            "list": self.match.watchlist,
            "entry": self.match.entry_id,
            "kind": self.match.kind,
            "priority": self.match.priority,
        }


@dataclass(frozen=True)
class Heartbeat:
    """A node saying it is alive, with its status (cameras, fps, queue depth, disk, versions)."""

    node: str
    status: dict[str, Any]
    sent_at: dt.datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        _check_name(self.node, "node")
        if not isinstance(self.status, dict):
            raise ProtocolError("invalid", "heartbeat status must be a JSON object")

    @property
    def cameras(self) -> list[str]:
        """Camera ids the status reports on: the keys of `status["cameras"]`."""
        cams = self.status.get("cameras")
        if not isinstance(cams, dict):
            return []
        return [c for c in cams if isinstance(c, str) and _NAME.match(c)][:256]

    def encode(self, limits: Limits = DEFAULT_LIMITS) -> list[bytes]:
        body = _dumps(
            {"node": self.node, "sent_at": format_time(self.sent_at), "status": self.status}
        )
        if len(body) > limits.max_status_bytes:
            raise ProtocolError(
                "oversized", f"heartbeat {len(body)} B > {limits.max_status_bytes} B"
            )
        return [TAG_HEARTBEAT, body]


@dataclass(frozen=True)
class Ack:
    """The collector has committed these hits (or already had them)."""

    ids: tuple[str, ...]

    def encode(self) -> list[bytes]:
        return [TAG_ACK, _dumps({"ids": list(self.ids), "t": format_time(utc_now())})]


@dataclass(frozen=True)
class Reject:
    """The collector will never take this hit as sent (it failed validation)."""

    hit_id: str
    reason: str

    def encode(self) -> list[bytes]:
        return [TAG_REJECT, _dumps({"id": self.hit_id, "reason": self.reason[:200]})]


Message = HitMessage | Heartbeat | Ack | Reject


# ---------------------------------------------------------------- decoding


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _as_bytes(frame: object) -> bytes:
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, bytearray | memoryview):
        return bytes(frame)
    buf = getattr(frame, "bytes", None)  # zmq.Frame
    if isinstance(buf, bytes):
        return buf
    raise ProtocolError("garbage", f"frame of type {type(frame).__name__}")


def _frame_len(frame: object) -> int:
    if isinstance(frame, bytes | bytearray):
        return len(frame)
    if isinstance(frame, memoryview):
        return frame.nbytes
    buf = getattr(frame, "buffer", None)  # zmq.Frame, without copying
    if isinstance(buf, memoryview):
        return buf.nbytes
    return len(_as_bytes(frame))


def _loads(frame: object, limit: int, what: str) -> dict[str, Any]:
    if _frame_len(frame) > limit:
        raise ProtocolError("oversized", f"{what} {_frame_len(frame)} B > {limit} B")
    try:
        obj = json.loads(_as_bytes(frame))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are both
        raise ProtocolError("garbage", f"{what} is not JSON") from e
    if not isinstance(obj, dict):
        raise ProtocolError("garbage", f"{what} is not a JSON object")
    return obj


def _obj(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = d.get(key)
    if not isinstance(value, dict):
        raise ProtocolError("invalid", f"{key} must be an object")
    return value


def _tag(frames: Sequence[object]) -> bytes:
    if not frames:
        raise ProtocolError("truncated", "empty message")
    if _frame_len(frames[0]) > _MAX_TAG:
        raise ProtocolError("garbage", "first frame is not a message tag")
    tag = _as_bytes(frames[0])
    if not tag.startswith(b"ANPR/"):
        raise ProtocolError("garbage", "first frame is not a message tag")
    return tag


def _expect_frames(frames: Sequence[object], n: int, what: str) -> None:
    if len(frames) < n:
        raise ProtocolError("truncated", f"{what} has {len(frames)} frames, needs {n}")
    if len(frames) > n:
        raise ProtocolError("garbage", f"{what} has {len(frames)} frames, expects {n}")


def _image(frame: object, limit: int, what: str, hit_id: str) -> bytes:
    if _frame_len(frame) > limit:
        raise ProtocolError("oversized", f"{what} {_frame_len(frame)} B > {limit} B", hit_id)
    return _as_bytes(frame)


def decode(frames: Sequence[object], limits: Limits = DEFAULT_LIMITS) -> HitMessage:
    """The hit in `frames` (any version we speak), or `ProtocolError`."""
    msg = decode_message(frames, limits)
    if not isinstance(msg, HitMessage):
        raise ProtocolError("garbage", f"expected a hit, got {type(msg).__name__}")
    return msg


def decode_message(frames: Sequence[object], limits: Limits = DEFAULT_LIMITS) -> Message:
    """Any message of the link, or `ProtocolError`."""
    tag = _tag(frames)
    version = _HIT_TAGS.get(tag)
    if version is not None:
        return _decode_hit(frames, version, limits)
    if tag == TAG_HEARTBEAT:
        _expect_frames(frames, 2, "heartbeat")
        d = _loads(frames[1], limits.max_status_bytes, "heartbeat")
        status = d.get("status")
        if not isinstance(status, dict):
            raise ProtocolError("invalid", "heartbeat status must be an object")
        return Heartbeat(
            node=_check_name(d.get("node"), "node"),
            status=status,
            sent_at=parse_time(d.get("sent_at"), "sent_at"),
        )
    if tag == TAG_ACK:
        _expect_frames(frames, 2, "ack")
        d = _loads(frames[1], limits.max_status_bytes, "ack")
        ids = d.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) and _ID.match(i) for i in ids):
            raise ProtocolError("invalid", "ack ids must be a list of hit ids")
        return Ack(tuple(ids))
    if tag == TAG_REJECT:
        _expect_frames(frames, 2, "reject")
        d = _loads(frames[1], limits.max_header_bytes, "reject")
        hit_id = d.get("id")
        if not isinstance(hit_id, str) or not _ID.match(hit_id):
            raise ProtocolError("invalid", "reject id must be a hit id")
        return Reject(hit_id, _check_text(d.get("reason", ""), "reason", max_len=200))
    raise ProtocolError("version", f"unknown message kind or version {tag[:_MAX_TAG]!r}")


def _decode_hit(frames: Sequence[object], version: int, limits: Limits) -> HitMessage:
    _expect_frames(frames, 3 if version == 1 else 4, f"hit v{version}")
    header = _loads(frames[1], limits.max_header_bytes, "hit header")
    hit_id = header.get("id")
    hit_id = hit_id if isinstance(hit_id, str) and _ID.match(hit_id) else None
    if hit_id is None:
        raise ProtocolError("invalid", "hit id must be 8-64 of [0-9A-Za-z_-]")
    crop = _image(frames[2], limits.max_crop_bytes, "crop", hit_id)
    scene = _image(frames[3], limits.max_scene_bytes, "scene", hit_id) if version > 1 else b""
    try:
        if version == 3:
            return _hit_v3(header, hit_id, crop, scene)
        if version == 2:
            return _hit_v2(header, hit_id, crop, scene)
        return _hit_v1(header, hit_id, crop)
    except ProtocolError as e:
        raise ProtocolError(e.reason, e.detail, hit_id) from None
    except TypeError as e:  # a field of the wrong JSON type reaching a constructor
        raise ProtocolError("invalid", str(e), hit_id) from None


def _hit_v2(h: Mapping[str, Any], hit_id: str, crop: bytes, scene: bytes) -> HitMessage:
    loc, p, m = _obj(h, "location"), _obj(h, "plate"), _obj(h, "match")
    return HitMessage(
        hit_id=hit_id,
        node=h.get("node"),  # type: ignore[arg-type]  # checked in __post_init__
        camera=h.get("camera"),  # type: ignore[arg-type]
        seen_at=parse_time(h.get("seen_at"), "seen_at"),
        location=CameraLocation(
            lat=loc.get("lat"),
            lon=loc.get("lon"),
            road=loc.get("road", ""),
            direction=loc.get("direction", ""),
        ),
        plate=HitPlate(
            text=p.get("text"),  # type: ignore[arg-type]
            raw=p.get("raw", ""),
            formatted=p.get("formatted", ""),
            country=p.get("country"),
            confidence=p.get("confidence", 0.0),
        ),
        match=WatchlistMatch(
            watchlist=m.get("watchlist"),  # type: ignore[arg-type]
            entry_id=m.get("entry_id"),  # type: ignore[arg-type]
            kind=m.get("kind", "exact"),
            entry_plate=m.get("entry_plate", ""),
            priority=m.get("priority", 5),
            reason=m.get("reason", ""),
            distance=m.get("distance", 0),
        ),
        crop_jpeg=crop,
        scene_jpeg=scene,
        wire_version=2,
    )


def _hit_v3(h: Mapping[str, Any], hit_id: str, crop: bytes, scene: bytes) -> HitMessage:
    base = _hit_v2(h, hit_id, crop, scene)
    vehicle = h.get("vehicle")
    vehicle = {} if vehicle is None else vehicle
    if not isinstance(vehicle, dict):
        raise ProtocolError("invalid", "vehicle must be an object")
    completes = h.get("completes")
    completes = "" if completes is None else completes
    return dataclasses.replace(
        base,
        match=dataclasses.replace(base.match, reading=_obj(h, "match").get("reading", "")),
        completes=completes,
        vehicle_type=vehicle.get("type") or "",
        vehicle_colour=vehicle.get("colour") or "",
        wire_version=3,
    )


def _hit_v1(h: Mapping[str, Any], hit_id: str, crop: bytes) -> HitMessage:
    ts = _check_number(h.get("ts"), "ts", 0, 32503680000)  # up to year 3000
    text = h.get("plate")
    return HitMessage(
        hit_id=hit_id,
        node=h.get("node"),  # type: ignore[arg-type]
        camera=h.get("camera"),  # type: ignore[arg-type]
        seen_at=dt.datetime.fromtimestamp(ts, UTC),
        location=CameraLocation(lat=h.get("lat"), lon=h.get("lon")),
        plate=HitPlate(
            text=text,  # type: ignore[arg-type]
            raw=h.get("raw", ""),
            formatted=text,  # type: ignore[arg-type]
            country=h.get("country"),
            confidence=h.get("conf", 0.0),
        ),
        match=WatchlistMatch(
            watchlist=h.get("list"),  # type: ignore[arg-type]
            entry_id=h.get("entry"),  # type: ignore[arg-type]
            kind=h.get("kind", "exact"),
            priority=h.get("priority", 5),
        ),
        crop_jpeg=crop,
        wire_version=1,
    )
