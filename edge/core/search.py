"""The search's wire format: a signed query from the collector, the node's answer in chunks.

A query goes to the data: the collector sends it to each node over the link's CURVE
connection (the node's DEALER, the collector's ROUTER), the node searches its own reads
and answers with those that match, in chunks of at most `MAX_CHUNK_READS`.

    SRCH1  [tag, header, signature]                collector -> node
    SANS1  [tag, header, crop_jpeg, crop_jpeg...]  node -> collector, one crop per read

A query is signed with Ed25519 by the collector's search signing key (`collector.sign`,
edge.core.keys), over the tag followed by the exact header bytes; a node verifies it
with `collector.verify` before it reads a field, and refuses a query that is forged,
not for it, issued more than `MAX_AGE_S` ago or `MAX_AHEAD_S` ahead of its clock,
already seen (it remembers ids for `REPLAY_WINDOW_S`), or malformed: it answers with
`refused` set, and never with reads beyond its own retention.

Whatever is wrong raises `ProtocolError` (edge.core.errors): "forged" for a bad
signature, "expired" for a query out of its time window, else as the hit link's.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.exceptions
import nacl.signing

from edge.core.errors import ProtocolError
from edge.core.link_protocol import (
    _as_bytes,
    _check_int,
    _check_jpeg,
    _check_name,
    _check_number,
    _check_text,
    _dumps,
    _frame_len,
    _loads,
    parse_time,
)
from edge.core.times import UTC, format_time, utc_now
from edge.core.watchlist.distance import MAX_FUZZY_DISTANCE
from edge.core.watchlist.entry import FieldError, is_wildcard, parse_pattern

TAG_SEARCH = b"SRCH1"
TAG_SEARCH_ANSWER = b"SANS1"

MODES = ("exact", "wildcard", "fuzzy")
MAX_CHUNK_READS = 200  # reads in one answer chunk
MAX_ROWS = 100_000  # a query's max_rows at most
MAX_NODES = 10_000
MAX_CAMERAS = 256
MAX_AGE_S = 300.0  # a node refuses a query issued longer ago
MAX_AHEAD_S = 60.0  # ... or this far ahead of its clock
REPLAY_WINDOW_S = 600.0  # how long a node remembers the ids of the queries it took
SIGNATURE_BYTES = 64

MAX_QUERY_HEADER_BYTES = 16 * 1024
MAX_ANSWER_HEADER_BYTES = 512 * 1024  # 200 reads of ~400 B, with room
MAX_CROP_BYTES = 128 * 1024  # as the link's Limits.max_crop_bytes

_QUERY_ID = re.compile(r"^[0-9A-Za-z_-]{16,64}$")
_MAX_REFUSED = 200


def new_query_id() -> str:
    return uuid.uuid4().hex


def _aware(value: object, what: str) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise ProtocolError("invalid", f"{what} must be a datetime with a time zone")
    return value.astimezone(UTC)


def _names(value: object, what: str, limit: int) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ProtocolError("invalid", f"{what} must be a list of names")
    if len(value) > limit:
        raise ProtocolError("invalid", f"{what}: more than {limit}")
    return tuple(_check_name(v, what) for v in value)


def _check_pattern(pattern: object, mode: str) -> str:
    if not isinstance(pattern, str) or len(pattern) > 64:
        raise ProtocolError("invalid", "pattern must be a plate of at most 64 characters")
    if mode == "wildcard" and not is_wildcard(pattern):
        raise ProtocolError("invalid", "a wildcard pattern needs '?' or '*'")
    if mode != "wildcard" and is_wildcard(pattern):
        raise ProtocolError("invalid", f"an {mode} pattern has no '?' or '*'")
    try:
        normal = parse_pattern(pattern)
    except FieldError as e:
        raise ProtocolError("invalid", f"pattern: {e}") from None
    if normal != pattern:
        raise ProtocolError("invalid", f"pattern {pattern!r} is not normalised ({normal!r})")
    return pattern


@dataclass(frozen=True)
class SearchQuery:
    """What an investigator asks the nodes: a plate (or pattern) over a time range."""

    query_id: str  # 16-64 of [0-9A-Za-z_-], unique (uuid4 hex: new_query_id())
    pattern: str  # a plate as normalised (edge.core.plates.normalise), or with ? and *
    mode: str  # "exact" | "wildcard" | "fuzzy"
    max_distance: float  # fuzzy only: the watchlist distance (edge.core.watchlist.distance)
    since: dt.datetime  # UTC, aware
    until: dt.datetime
    nodes: tuple[str, ...]  # the nodes this query is for (a node refuses one not naming it)
    cameras: tuple[str, ...] = ()  # empty: all of the node's cameras
    area: tuple[float, float, float, float] | None = None  # min_lat, min_lon, max_lat, max_lon
    case_ref: str = ""  # mandatory at the collector; carried for the node's own log
    legal_basis: str = ""
    requested_by: str = ""  # user name
    agency: str = ""  # the investigator's agency
    issued_at: dt.datetime = field(default_factory=utc_now)
    max_rows: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.query_id, str) or not _QUERY_ID.match(self.query_id):
            raise ProtocolError("invalid", "query id must be 16-64 of [0-9A-Za-z_-]")
        if self.mode not in MODES:
            raise ProtocolError("invalid", f"mode must be one of {', '.join(MODES)}")
        _check_pattern(self.pattern, self.mode)
        hi = MAX_FUZZY_DISTANCE
        d = _check_number(self.max_distance, "max_distance", 0, hi)
        if self.mode == "fuzzy" and d <= 0:
            raise ProtocolError("invalid", f"a fuzzy query needs max_distance in (0, {hi}]")
        object.__setattr__(self, "max_distance", d)
        for name in ("since", "until", "issued_at"):
            object.__setattr__(self, name, _aware(getattr(self, name), name))
        if self.since > self.until:
            raise ProtocolError("invalid", "since is after until")
        nodes = _names(self.nodes, "nodes", MAX_NODES)
        if not nodes:
            raise ProtocolError("invalid", "a query names at least one node")
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "cameras", _names(self.cameras, "cameras", MAX_CAMERAS))
        if self.area is not None:
            if (
                isinstance(self.area, str)
                or not isinstance(self.area, Sequence)
                or len(self.area) != 4
            ):
                raise ProtocolError("invalid", "area must be [min_lat, min_lon, max_lat, max_lon]")
            a, b, c, e = self.area
            area = (
                _check_number(a, "area min_lat", -90, 90),
                _check_number(b, "area min_lon", -180, 180),
                _check_number(c, "area max_lat", -90, 90),
                _check_number(e, "area max_lon", -180, 180),
            )
            if area[0] > area[2] or area[1] > area[3]:
                raise ProtocolError("invalid", "area's minimum is above its maximum")
            object.__setattr__(self, "area", area)
        _check_text(self.case_ref, "case_ref", max_len=128)
        _check_text(self.legal_basis, "legal_basis", max_len=500)
        _check_text(self.requested_by, "requested_by", max_len=64)
        _check_text(self.agency, "agency", max_len=64)
        _check_int(self.max_rows, "max_rows", 1, MAX_ROWS)

    def header(self) -> dict[str, Any]:
        return {
            "id": self.query_id,
            "pattern": self.pattern,
            "mode": self.mode,
            "max_distance": self.max_distance,
            "since": format_time(self.since),
            "until": format_time(self.until),
            "nodes": list(self.nodes),
            "cameras": list(self.cameras),
            "area": None if self.area is None else list(self.area),
            "case_ref": self.case_ref,
            "legal_basis": self.legal_basis,
            "requested_by": self.requested_by,
            "agency": self.agency,
            "issued_at": format_time(self.issued_at),
            "max_rows": self.max_rows,
        }

    def check_fresh(self, now: dt.datetime | None = None) -> None:
        """ProtocolError "expired" unless issued within [now - MAX_AGE_S, now + MAX_AHEAD_S]."""
        now = utc_now() if now is None else now
        age = (now - self.issued_at).total_seconds()
        if age > MAX_AGE_S:
            raise ProtocolError("expired", f"issued {age:.0f} s ago (> {MAX_AGE_S:.0f} s)")
        if -age > MAX_AHEAD_S:
            raise ProtocolError("expired", f"issued {-age:.0f} s in the future")


def _query_from_header(h: Mapping[str, Any]) -> SearchQuery:
    area = h.get("area")
    try:
        return SearchQuery(
            query_id=h.get("id"),  # type: ignore[arg-type]  # checked in __post_init__
            pattern=h.get("pattern"),  # type: ignore[arg-type]
            mode=h.get("mode"),  # type: ignore[arg-type]
            max_distance=h.get("max_distance", 0.0),
            since=parse_time(h.get("since"), "since"),
            until=parse_time(h.get("until"), "until"),
            nodes=_names(h.get("nodes"), "nodes", MAX_NODES),
            cameras=_names(h.get("cameras", []), "cameras", MAX_CAMERAS),
            area=None if area is None else tuple(area) if isinstance(area, list) else area,
            case_ref=h.get("case_ref", ""),
            legal_basis=h.get("legal_basis", ""),
            requested_by=h.get("requested_by", ""),
            agency=h.get("agency", ""),
            issued_at=parse_time(h.get("issued_at"), "issued_at"),
            max_rows=h.get("max_rows", 1000),
        )
    except (TypeError, ValueError) as e:  # ProtocolError is a ValueError: keep its reason
        if isinstance(e, ProtocolError):
            raise
        raise ProtocolError("invalid", str(e)) from None


def _signed_bytes(header: bytes) -> bytes:
    return TAG_SEARCH + header


def sign_query(q: SearchQuery, signing_key: nacl.signing.SigningKey) -> list[bytes]:
    """The query's frames [TAG_SEARCH, header, signature], signed with the collector's key."""
    header = _dumps(q.header())
    if len(header) > MAX_QUERY_HEADER_BYTES:
        raise ProtocolError("oversized", f"query header {len(header)} B")
    signature = signing_key.sign(_signed_bytes(header)).signature
    return [TAG_SEARCH, header, signature]


def _query_frames(frames: Sequence[object]) -> tuple[bytes, bytes]:
    if not frames:
        raise ProtocolError("truncated", "empty message")
    if _frame_len(frames[0]) > 32 or _as_bytes(frames[0]) != TAG_SEARCH:
        raise ProtocolError("garbage", "not a search query")
    if len(frames) != 3:
        raise ProtocolError("truncated" if len(frames) < 3 else "garbage",
                            f"a query has 3 frames, not {len(frames)}")  # fmt: skip
    if _frame_len(frames[1]) > MAX_QUERY_HEADER_BYTES:
        raise ProtocolError("oversized", f"query header {_frame_len(frames[1])} B")
    if _frame_len(frames[2]) != SIGNATURE_BYTES:
        raise ProtocolError("forged", "the signature is not 64 bytes")
    return _as_bytes(frames[1]), _as_bytes(frames[2])


def verify_query(frames: Sequence[object], verify_key: nacl.signing.VerifyKey) -> SearchQuery:
    """The query in `frames` once its signature is the collector's; else `ProtocolError`
    ("forged" for a bad signature: nothing of the header is read before it is checked).

    It does not judge freshness or whom it is for: see `SearchQuery.check_fresh`."""
    header, signature = _query_frames(frames)
    try:
        verify_key.verify(_signed_bytes(header), signature)
    except nacl.exceptions.BadSignatureError:
        raise ProtocolError("forged", "the signature is not the collector's") from None
    return _query_from_header(_loads(header, MAX_QUERY_HEADER_BYTES, "query header"))


def query_id_of(frames: Sequence[object]) -> str:
    """The id a (perhaps forged or malformed) query says it has, to name it in a refusal;
    "" when none can be read.  Never trust anything else of an unverified query."""
    try:
        header, _ = _query_frames(frames)
    except ProtocolError as e:
        if e.reason != "forged" or len(frames) < 2:
            return ""
        header = _as_bytes(frames[1])
    try:
        qid = _loads(header, MAX_QUERY_HEADER_BYTES, "query header").get("id")
    except ProtocolError:
        return ""
    return qid if isinstance(qid, str) and _QUERY_ID.match(qid) else ""


# ---------------------------------------------------------------- the answer


@dataclass(frozen=True)
class SearchRead:
    """One read a node found: the plate, when and where it passed, and its crop."""

    text: str
    formatted: str
    country: str
    confidence: float
    seen_at: dt.datetime
    camera: str
    direction: str
    vehicle_type: str
    vehicle_colour: str
    lat: float | None  # the camera's place, where the node knows it
    lon: float | None
    crop_jpeg: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _check_text(self.text, "plate text", max_len=32, empty=False)
        _check_text(self.formatted, "formatted plate", max_len=64)
        _check_text(self.country, "country", max_len=8)
        object.__setattr__(self, "confidence", _check_number(self.confidence, "confidence", 0, 1))
        object.__setattr__(self, "seen_at", _aware(self.seen_at, "seen_at"))
        _check_name(self.camera, "camera")
        _check_text(self.direction, "direction", max_len=64)
        _check_text(self.vehicle_type, "vehicle type", max_len=32)
        _check_text(self.vehicle_colour, "vehicle colour", max_len=32)
        if (self.lat is None) != (self.lon is None):
            raise ProtocolError("invalid", "a read's place needs both lat and lon, or neither")
        if self.lat is not None:
            object.__setattr__(self, "lat", _check_number(self.lat, "lat", -90, 90))
            object.__setattr__(self, "lon", _check_number(self.lon, "lon", -180, 180))
        _check_jpeg(self.crop_jpeg, "crop")
        if len(self.crop_jpeg) > MAX_CROP_BYTES:
            raise ProtocolError("oversized", f"crop {len(self.crop_jpeg)} B > {MAX_CROP_BYTES} B")

    def header(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "formatted": self.formatted,
            "country": self.country,
            "confidence": self.confidence,
            "seen_at": format_time(self.seen_at),
            "camera": self.camera,
            "direction": self.direction,
            "vehicle_type": self.vehicle_type,
            "vehicle_colour": self.vehicle_colour,
            "lat": self.lat,
            "lon": self.lon,
        }


@dataclass(frozen=True)
class SearchAnswer:
    """A chunk of a node's answer to a query; the last has `done` and the `total` found.

    A refusal is one chunk: `done`, no reads, `refused` saying why.  Its `query_id` is ""
    when the refused message had no readable id."""

    query_id: str
    node: str
    seq: int  # 0, 1, 2... chunks of <= MAX_CHUNK_READS reads
    reads: tuple[SearchRead, ...]
    done: bool  # the last chunk
    total: int  # reads found (on the last chunk; may exceed the rows sent)
    refused: str = ""  # non-empty: the node refused the query, and why
    retention_h: float = 0.0  # what the node keeps

    def __post_init__(self) -> None:
        if not isinstance(self.query_id, str) or not (
            _QUERY_ID.match(self.query_id) or (self.refused and not self.query_id)
        ):
            raise ProtocolError("invalid", "answer's query id must be 16-64 of [0-9A-Za-z_-]")
        _check_name(self.node, "node")
        _check_int(self.seq, "seq", 0, 1_000_000)
        if not isinstance(self.reads, tuple) or not all(
            isinstance(r, SearchRead) for r in self.reads
        ):
            raise ProtocolError("invalid", "reads must be a tuple of SearchRead")
        if len(self.reads) > MAX_CHUNK_READS:
            raise ProtocolError("oversized", f"{len(self.reads)} reads > {MAX_CHUNK_READS}")
        if not isinstance(self.done, bool):
            raise ProtocolError("invalid", "done must be true or false")
        _check_int(self.total, "total", 0, 2**40)
        _check_text(self.refused, "refused", max_len=_MAX_REFUSED)
        if self.refused and (self.reads or not self.done):
            raise ProtocolError("invalid", "a refusal is one last chunk without reads")
        r = _check_number(self.retention_h, "retention_h", 0, 1e6)
        object.__setattr__(self, "retention_h", r)

    def encode(self) -> list[bytes]:
        header = _dumps(
            {
                "id": self.query_id,
                "node": self.node,
                "seq": self.seq,
                "done": self.done,
                "total": self.total,
                "refused": self.refused,
                "retention_h": self.retention_h,
                "reads": [r.header() for r in self.reads],
            }
        )
        if len(header) > MAX_ANSWER_HEADER_BYTES:
            raise ProtocolError("oversized", f"answer header {len(header)} B")
        return [TAG_SEARCH_ANSWER, header, *(r.crop_jpeg for r in self.reads)]


def refusal(query_id: str, node: str, reason: str, retention_h: float = 0.0) -> SearchAnswer:
    """The one-chunk answer of a node refusing a query."""
    reason = "".join(" " if ord(c) < 32 else c for c in reason)[:_MAX_REFUSED] or "refused"
    return SearchAnswer(query_id=query_id, node=node, seq=0, reads=(), done=True, total=0,
                        refused=reason, retention_h=retention_h)  # fmt: skip


def decode_answer(frames: Sequence[object]) -> SearchAnswer:
    """The answer chunk in `frames`, or `ProtocolError`."""
    if not frames:
        raise ProtocolError("truncated", "empty message")
    if _frame_len(frames[0]) > 32 or _as_bytes(frames[0]) != TAG_SEARCH_ANSWER:
        raise ProtocolError("garbage", "not a search answer")
    if len(frames) < 2:
        raise ProtocolError("truncated", "an answer has a header")
    h = _loads(frames[1], MAX_ANSWER_HEADER_BYTES, "answer header")
    reads = h.get("reads")
    if not isinstance(reads, list) or len(reads) > MAX_CHUNK_READS:
        raise ProtocolError("invalid", f"reads must be a list of at most {MAX_CHUNK_READS}")
    if len(frames) != 2 + len(reads):
        raise ProtocolError("truncated" if len(frames) < 2 + len(reads) else "garbage",
                            f"{len(reads)} reads but {len(frames) - 2} crops")  # fmt: skip
    try:
        out = []
        for r, crop in zip(reads, frames[2:], strict=True):
            if not isinstance(r, dict):
                raise ProtocolError("invalid", "a read must be an object")
            if _frame_len(crop) > MAX_CROP_BYTES:
                raise ProtocolError("oversized", f"crop {_frame_len(crop)} B")
            out.append(_read_from_header(r, _as_bytes(crop)))
        return SearchAnswer(
            query_id=h.get("id"),  # type: ignore[arg-type]  # checked in __post_init__
            node=h.get("node"),  # type: ignore[arg-type]
            seq=h.get("seq"),  # type: ignore[arg-type]
            reads=tuple(out),
            done=h.get("done"),  # type: ignore[arg-type]
            total=h.get("total"),  # type: ignore[arg-type]
            refused=h.get("refused", ""),
            retention_h=h.get("retention_h", 0.0),
        )
    except TypeError as e:
        raise ProtocolError("invalid", str(e)) from None


def _read_from_header(r: Mapping[str, Any], crop: bytes) -> SearchRead:
    lat, lon = r.get("lat"), r.get("lon")
    for v, what in ((lat, "lat"), (lon, "lon")):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or not math.isfinite(v)):  # fmt: skip
            raise ProtocolError("invalid", f"{what} must be a number")
    return SearchRead(
        text=r.get("text"),  # type: ignore[arg-type]  # checked in __post_init__
        formatted=r.get("formatted", ""),
        country=r.get("country") or "",
        confidence=r.get("confidence", 0.0),
        seen_at=parse_time(r.get("seen_at"), "seen_at"),
        camera=r.get("camera"),  # type: ignore[arg-type]
        direction=r.get("direction", ""),
        vehicle_type=r.get("vehicle_type", ""),
        vehicle_colour=r.get("vehicle_colour", ""),
        lat=lat,
        lon=lon,
        crop_jpeg=crop,
    )


def chunks(
    query_id: str, node: str, reads: Sequence[SearchRead], total: int, retention_h: float
) -> list[SearchAnswer]:
    """`reads` as the answer's chunks of at most MAX_CHUNK_READS (one empty chunk for none)."""
    parts = [tuple(reads[i : i + MAX_CHUNK_READS]) for i in range(0, len(reads), MAX_CHUNK_READS)]
    parts = parts or [()]
    return [
        SearchAnswer(
            query_id=query_id,
            node=node,
            seq=i,
            reads=part,
            done=i == len(parts) - 1,
            total=total,
            retention_h=retention_h,
        )
        for i, part in enumerate(parts)
    ]
