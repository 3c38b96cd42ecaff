"""A search across agencies over the exchange: the query to a partner, its answers back.

An investigator's collector asks a partner's collector for the reads of the partner's
nodes; the partner checks its own agreements, signs the query with its own search key
for its own nodes, and streams their answers back.  Two message kinds, each on the
receiver's stream (`in.<receiver>.from.<sender>.<kind>`):

    search         asker -> partner   `RelayQuery`, JSON (kind "search")
    search-answer  partner -> asker   `RelayAnswer`: b"ANPS", a frame count (2 bytes),
                                      then length-prefixed frames: a JSON header and one
                                      JPEG per read (b"": none sent)

An answer's `event` is `plan` (the nodes the partner asks, with their states, or
`refused`: the partner refuses the whole query, and why), `node` (one node's state
changed), `reads` (the next reads of one node, `seq` 0, 1, 2... per node) or `settled`
(the partner's search has no node pending).  Decoding is strict: anything off raises
`ProtocolError`; the receiver drops such a message (never dead-letters it: it may hold
crops of reads).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from edge.collector.exchange.grants import check_agency
from edge.collector.exchange.messages import decode_model
from edge.core.errors import ProtocolError
from edge.core.search import MAX_CROP_BYTES, MAX_ROWS, SearchRead
from edge.core.status import Name
from edge.core.times import format_time, parse_iso
from edge.core.watchlist.distance import MAX_FUZZY_DISTANCE

QUERY_KIND = "search"
ANSWER_KIND = "search-answer"
SEARCH_KINDS = frozenset({QUERY_KIND, ANSWER_KIND})
VERSION = 1
ANSWER_MAGIC = b"ANPS"
MAX_QUERY_BODY = 64 * 1024
# An answer message at most: under nats-server's default max_payload (1 MiB).
MAX_ANSWER_BODY = 900 * 1024
MAX_NODES = 10_000
MAX_CAMERAS = 256
MAX_READS = 200  # reads in one answer message (and fewer where their crops are big)
NODE_STATES = ("asked", "answering", "done", "refused", "offline", "slow")
_LEN = struct.Struct(">I")
_COUNT = struct.Struct(">H")

QueryId = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z_-]{16,64}$")]
_Refusal = Annotated[str, StringConstraints(max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RelayQuery(_Strict):
    """An investigator's search, as their collector asks a partner's collector."""

    v: Annotated[int, Field(ge=VERSION, le=VERSION)] = VERSION
    kind: Literal["search"] = "search"
    id: QueryId  # the asker's id for this partner's part of the search
    agency: str  # the investigator's agency: the sender's, or the query is dropped
    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    case_ref: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    legal_basis: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    mode: Literal["exact", "wildcard", "fuzzy"]
    max_distance: Annotated[float, Field(ge=0, le=MAX_FUZZY_DISTANCE, allow_inf_nan=False)] = 0
    since: AwareDatetime
    until: AwareDatetime
    issued_at: AwareDatetime
    nodes: tuple[Name, ...] = Field((), max_length=MAX_NODES)  # empty: every node granted
    cameras: tuple[Name, ...] = Field((), max_length=MAX_CAMERAS)
    area: tuple[float, float, float, float] | None = None
    max_rows: Annotated[int, Field(ge=1, le=MAX_ROWS)] = 1000

    @field_validator("agency")
    @classmethod
    def _agency(cls, v: str) -> str:
        return check_agency(v)


class NodeReport(_Strict):
    """One of the partner's nodes in its search, as its collector sees it."""

    node: Name
    state: Literal["asked", "answering", "done", "refused", "offline", "slow"]
    reads: Annotated[int, Field(ge=0)] = 0  # reads sent
    total: Annotated[int, Field(ge=0)] = 0  # reads the node found
    refused: _Refusal = ""
    retention_h: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] = 0.0


class ReadHeader(_Strict):
    text: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    formatted: Annotated[str, StringConstraints(max_length=64)] = ""
    country: Annotated[str, StringConstraints(max_length=8)] = ""
    confidence: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    seen_at: str
    camera: Name
    direction: Annotated[str, StringConstraints(max_length=64)] = ""
    vehicle_type: Annotated[str, StringConstraints(max_length=32)] = ""
    vehicle_colour: Annotated[str, StringConstraints(max_length=32)] = ""
    lat: float | None = None
    lon: float | None = None


class AnswerHeader(_Strict):
    v: Annotated[int, Field(ge=VERSION, le=VERSION)] = VERSION
    kind: Literal["search-answer"] = "search-answer"
    id: QueryId
    event: Literal["plan", "node", "reads", "settled"]
    refused: _Refusal = ""  # plan: the partner refuses the whole query
    nodes: tuple[NodeReport, ...] = Field((), max_length=MAX_NODES)  # plan, node (one)
    node: Name | None = None  # reads
    seq: Annotated[int, Field(ge=0, le=1_000_000)] = 0  # reads
    reads: tuple[ReadHeader, ...] = Field((), max_length=MAX_READS)


class RelayAnswer:
    """A decoded answer: its header, and the reads of a `reads` event with their crops."""

    def __init__(self, header: AnswerHeader, reads: Sequence[SearchRead] = ()):
        self.header = header
        self.reads = tuple(reads)

    @property
    def id(self) -> str:
        return self.header.id

    @property
    def event(self) -> str:
        return self.header.event


def encode_query(q: RelayQuery) -> bytes:
    return q.model_dump_json().encode()


def decode_query(body: bytes) -> RelayQuery:
    q = decode_model(RelayQuery, body, MAX_QUERY_BODY, "search query")
    if q.since > q.until:
        raise ProtocolError("invalid", "search query: since is after until")
    return q


def read_header(r: SearchRead) -> ReadHeader:
    return ReadHeader(text=r.text, formatted=r.formatted, country=r.country,
                      confidence=r.confidence, seen_at=format_time(r.seen_at), camera=r.camera,
                      direction=r.direction, vehicle_type=r.vehicle_type,
                      vehicle_colour=r.vehicle_colour, lat=r.lat, lon=r.lon)  # fmt: skip


def encode_answer(header: AnswerHeader, crops: Sequence[bytes] = ()) -> bytes:
    """The message; `crops` one per read of `header` (b"" where none is sent)."""
    if len(crops) != len(header.reads):
        raise ValueError(f"{len(header.reads)} reads but {len(crops)} crops")
    frames = [header.model_dump_json().encode(), *crops]
    out = [ANSWER_MAGIC, _COUNT.pack(len(frames))]
    for f in frames:
        out += [_LEN.pack(len(f)), f]
    body = b"".join(out)
    if len(body) > MAX_ANSWER_BODY:
        raise ProtocolError("oversized", f"search answer of {len(body)} B")
    return body


def answer_size(header_bytes: int, crops: Sequence[bytes]) -> int:
    """The size of an answer message of these parts (to fill messages up to the limit)."""
    return len(ANSWER_MAGIC) + _COUNT.size + _LEN.size * (1 + len(crops)) + header_bytes + sum(
        len(c) for c in crops)  # fmt: skip


def decode_answer(body: bytes) -> RelayAnswer:
    if len(body) > MAX_ANSWER_BODY:
        raise ProtocolError("oversized", f"search answer of {len(body)} B")
    if not body.startswith(ANSWER_MAGIC) or len(body) < 6:
        raise ProtocolError("garbage", "not a search answer (no ANPS magic)")
    (count,) = _COUNT.unpack_from(body, 4)
    at, frames = 6, []
    for _ in range(count):
        if at + 4 > len(body):
            raise ProtocolError("truncated", "search answer frame length missing")
        (n,) = _LEN.unpack_from(body, at)
        at += 4
        if at + n > len(body):
            raise ProtocolError("truncated", "search answer frame longer than the message")
        frames.append(body[at : at + n])
        at += n
    if at != len(body) or not frames:
        raise ProtocolError("garbage", "search answer: bytes after its frames, or no header")
    header = decode_model(AnswerHeader, frames[0], MAX_ANSWER_BODY, "search answer")
    crops = frames[1:]
    if len(crops) != len(header.reads):
        raise ProtocolError("invalid", f"{len(header.reads)} reads but {len(crops)} crops")
    if header.event == "reads" and header.node is None:
        raise ProtocolError("invalid", "search answer: reads of no node")
    reads = []
    for r, crop in zip(header.reads, crops, strict=True):
        if len(crop) > MAX_CROP_BYTES:
            raise ProtocolError("oversized", f"crop {len(crop)} B")
        try:
            seen = parse_iso(r.seen_at)
        except ValueError as e:
            raise ProtocolError("invalid", f"seen_at: {e}") from None
        reads.append(SearchRead(text=r.text, formatted=r.formatted, country=r.country,
                                confidence=r.confidence, seen_at=seen, camera=r.camera,
                                direction=r.direction, vehicle_type=r.vehicle_type,
                                vehicle_colour=r.vehicle_colour, lat=r.lat, lon=r.lon,
                                crop_jpeg=crop))  # fmt: skip
    return RelayAnswer(header, reads)
