"""What flows between agencies' collectors: hits, and numbered changes to shared lists.

A hit travels as the edge link's own frames (`edge.core.link_protocol`, version 3: a
JSON header and the JPEGs raw), each length-prefixed after the magic `ANPX`, so a
partner's hit is checked by exactly the rules an edge's is.  Consecutive hits to one
partner travel packed (kind "hits", `HitPack`): the magic `ANPH`, their count, and each
hit's own body, length-prefixed; a pack is decoded whole or refused whole.  A list change is a JSON
object:

    {"v": 1, "kind": "list", "owner": "pl-sg", "list": "stolen-pl", "epoch": "...",
     "seq": 7, "op": "upsert", "entries": [[id, pattern, agency, ...], ...]}

`op` is one of snapshot-begin (with `policy`: a fresh copy starts), upsert (`entries`
in the watchlist wire protocol's rows), expire (`ids`, `at`), remove (`ids`), policy,
snapshot-end (the copy now holds exactly what the snapshot sent and later changes), and
withdrawn (the grant ended or the list was dropped: the copy goes).  `seq` numbers one
sender's messages about one list, 1, 2, 3..., under its `epoch`.

Cameras whose place and health a grant shows travel as `CameraReports` (kind "cameras",
pydantic, strict, extra keys refused): the owner, its (epoch, seq) to this partner, how
often it sends each camera (`refresh_s`), the cameras' reports and those withdrawn.

Decoding is strict: anything off raises `ProtocolError`, and the consumer dead-letters
the message rather than stopping on it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from edge.collector.exchange.grants import check_agency
from edge.core.errors import ProtocolError
from edge.core.link_protocol import DEFAULT_LIMITS, HitMessage, Limits, decode
from edge.core.status import MAX_TEXT, CameraState, Name, Place, Time
from edge.core.watchlist.entry import FieldError, ListPolicy, check_list_name
from edge.core.watchlist.index import Row
from edge.core.watchlist.protocol import policy_from_wire, row_to_wire, rows_from_wire

M = TypeVar("M", bound=BaseModel)  # a message decode_model reads

VERSION = 1
HIT_MAGIC = b"ANPX"
OPS = ("snapshot-begin", "upsert", "expire", "remove", "policy", "snapshot-end", "withdrawn")
MAX_LIST_BODY = 8 << 20
PACK_MAGIC = b"ANPH"
MAX_PACK_HITS = 1024
MAX_PACK_BODY = 64 << 20
_LEN = struct.Struct(">I")


# ------------------------------------------------------------------------------ hits


def encode_hit(hit: HitMessage, limits: Limits = DEFAULT_LIMITS) -> bytes:
    return b"".join(encode_hit_parts(hit, limits))


def encode_hit_parts(hit: HitMessage, limits: Limits = DEFAULT_LIMITS) -> tuple[bytes, ...]:
    """`encode_hit`'s body in the pieces it is made of (the pictures' own bytes among them,
    not copied): written as they are (`BodyLog.append`) and joined once, into a pack."""
    frames = hit.encode(3, limits)
    out = [HIT_MAGIC, bytes([len(frames)])]
    for frame in frames:
        out += [_LEN.pack(len(frame)), frame]
    return tuple(out)


def decode_hit(body: bytes | memoryview, limits: Limits = DEFAULT_LIMITS) -> HitMessage:
    """The hit in `body`; a memoryview's frames are sliced without copying (the decoder
    copies each picture once, into the hit's bytes)."""
    if len(body) < 5 or bytes(body[:4]) != HIT_MAGIC:
        raise ProtocolError("garbage", "not a hit (no ANPX magic)")
    count, at, frames = body[4], 5, []
    if not 3 <= count <= 4:
        raise ProtocolError("garbage", f"a hit has 3 or 4 frames, not {count}")
    for _ in range(count):
        if at + 4 > len(body):
            raise ProtocolError("truncated", "hit frame length missing")
        (n,) = _LEN.unpack_from(body, at)
        at += 4
        if n > limits.max_frame_bytes or at + n > len(body):
            raise ProtocolError("truncated" if at + n > len(body) else "oversized",
                                "hit frame longer than the message or the limits")
        frames.append(body[at : at + n])
        at += n
    if at != len(body):
        raise ProtocolError("garbage", f"{len(body) - at} bytes after the hit's frames")
    return decode(frames, limits)


def hit_msg_id(hit: HitMessage) -> str:
    return f"hit:{hit.hit_id}"


@dataclass(frozen=True)
class HitPack:
    """Hits sent in one message (kind "hits"), in the order they were queued."""

    hits: tuple[HitMessage, ...]


def pack_bodies(bodies: Sequence[bytes]) -> bytes:
    """One message of kind "hits" holding the hit bodies `bodies` (each `encode_hit`'s)."""
    return pack_parts([(b,) for b in bodies])


def pack_parts(bodies: Sequence[Sequence[bytes]]) -> bytes:
    """`pack_bodies`, each body given as the pieces it is made of (`encode_hit_parts`'s):
    the pictures are copied once, here, into the pack."""
    if not 1 <= len(bodies) <= MAX_PACK_HITS:
        raise ValueError(f"a pack holds 1..{MAX_PACK_HITS} hits, not {len(bodies)}")
    out = [PACK_MAGIC, _LEN.pack(len(bodies))]
    for parts in bodies:
        out.append(_LEN.pack(sum(len(p) for p in parts)))
        out += parts
    return b"".join(out)


def packed_size(sizes: Sequence[int]) -> int:
    """The length of the pack of bodies of these lengths."""
    return len(PACK_MAGIC) + 4 + sum(4 + n for n in sizes)


def pack_msg_id(msg_ids: Sequence[str]) -> str:
    """The Nats-Msg-Id of the pack of these messages: the same rows, the same id (a pack
    published again is dropped by the stream's duplicate window)."""
    digest = hashlib.sha256("\n".join(msg_ids).encode()).hexdigest()[:32]
    return f"hits:{len(msg_ids)}:{digest}"


def decode_pack(body: bytes, limits: Limits = DEFAULT_LIMITS) -> HitPack:
    """Every hit of the pack, or `ProtocolError` (the pack refused whole)."""
    if not body.startswith(PACK_MAGIC) or len(body) < 8:
        raise ProtocolError("garbage", "not a pack of hits (no ANPH magic and count)")
    view = memoryview(body)  # each hit's slice without a copy of its pictures
    if len(body) > MAX_PACK_BODY:
        raise ProtocolError("oversized", f"pack of {len(body)} B")
    (count,) = _LEN.unpack_from(body, 4)
    if not 1 <= count <= MAX_PACK_HITS:
        raise ProtocolError("invalid", f"a pack holds 1..{MAX_PACK_HITS} hits, not {count}")
    at, hits = 8, []
    for i in range(count):
        if at + 4 > len(body):
            raise ProtocolError("truncated", f"pack: hit {i + 1} of {count} missing")
        (n,) = _LEN.unpack_from(body, at)
        at += 4
        if at + n > len(body):
            raise ProtocolError("truncated", f"pack: hit {i + 1} of {count} cut short")
        try:
            hits.append(decode_hit(view[at : at + n], limits))
        except ProtocolError as e:
            raise ProtocolError(e.reason, f"pack: hit {i + 1} of {count}: {e.detail}") from None
        at += n
    if at != len(body):
        raise ProtocolError("garbage", f"{len(body) - at} bytes after the pack's hits")
    return HitPack(tuple(hits))


# ------------------------------------------------------------------------------ lists


@dataclass(frozen=True)
class ListChange:
    """One numbered message about `owner`'s list `list`."""

    owner: str
    list: str
    epoch: str
    seq: int
    op: str
    policy: ListPolicy | None = None
    rows: tuple[Row, ...] = ()  # upsert: entry rows, `list` field = the owner's list name
    ids: tuple[int, ...] = ()  # expire, remove: the owner's entry ids
    at: float | None = None  # expire: when their validity ended

    @property
    def msg_id(self) -> str:
        return f"list:{self.owner}.{self.list}:{self.epoch}.{self.seq}"

    @property
    def qualified(self) -> str:
        """The name our copy of the list goes by (`pl-sg.stolen-pl`)."""
        return f"{self.owner}.{self.list}"


def encode_list_change(c: ListChange) -> bytes:
    body: dict[str, object] = {"v": VERSION, "kind": "list", "owner": c.owner, "list": c.list,
                               "epoch": c.epoch, "seq": c.seq, "op": c.op}
    if c.policy is not None:
        body["policy"] = c.policy.to_json()
    if c.op == "upsert":
        body["entries"] = [row_to_wire(r) for r in c.rows]
    if c.op in ("expire", "remove"):
        body["ids"] = list(c.ids)
    if c.op == "expire":
        body["at"] = c.at
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _int(value: object, what: str, lo: int = 0, hi: int = 2**62) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError("invalid", f"{what}: expected an integer {lo}..{hi}, got {value!r}")
    return value


def _json_object(body: bytes) -> object:
    if len(body) > MAX_LIST_BODY:
        raise ProtocolError("oversized", f"message of {len(body)} B")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError("garbage", f"not JSON: {e}") from None


def decode_list_change(body: bytes) -> ListChange:
    return _list_change(_json_object(body))


def _list_change(d: object) -> ListChange:
    if not isinstance(d, dict) or d.get("kind") != "list":
        raise ProtocolError("garbage", "not a list change")
    if d.get("v") != VERSION:
        raise ProtocolError("version", f"list change version {d.get('v')!r}, expected {VERSION}")
    try:
        owner = check_agency(d.get("owner"))
        name = check_list_name(d.get("list"))
    except (ValueError, FieldError) as e:
        raise ProtocolError("invalid", str(e)) from None
    epoch = d.get("epoch")
    if not isinstance(epoch, str) or not 1 <= len(epoch) <= 64:
        raise ProtocolError("invalid", "epoch: expected 1-64 characters")
    seq = _int(d.get("seq"), "seq", 1)
    op = d.get("op")
    if op not in OPS:
        raise ProtocolError("invalid", f"unknown op {op!r}")
    policy = rows = ids = at = None
    if "policy" in d or op in ("snapshot-begin", "policy"):
        policy = policy_from_wire(name, d.get("policy"))
    if op == "upsert":
        rows = rows_from_wire(name, d.get("entries"))
    if op in ("expire", "remove"):
        items = d.get("ids")
        if not isinstance(items, list):
            raise ProtocolError("invalid", "ids: expected a list")
        ids = tuple(_int(i, "id", 1) for i in items)
    if op == "expire":
        t = d.get("at")
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise ProtocolError("invalid", "at: expected UNIX seconds")
        at = float(t)
    return ListChange(owner, name, epoch, seq, op, policy, rows or (), ids or (), at)


# ------------------------------------------------------------------------------ cameras

MAX_CAMERA_BODY = 1 << 20
MAX_CAMERAS_PER_MESSAGE = 256
MAX_PROBLEM_LINES = 16
_Line = Annotated[str, StringConstraints(max_length=MAX_TEXT)]


class CameraReport(BaseModel):
    """One camera's place and health, as its owner's collector judges it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    node: Name
    camera: Name
    place: Place | None = None  # as the node's heartbeat says (None: it says nothing)
    health: Literal["live", "late", "unhealthy"]  # the owner's verdict, as its console's
    state: CameraState | None = None  # None: the node's status does not name the camera
    problems: tuple[_Line, ...] = Field((), max_length=MAX_PROBLEM_LINES)
    fps: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)] | None = None
    since: Time | None = None  # in `state` since
    last_seen: Time | None = None  # last heard by the owner's collector
    last_hit_at: Time | None = None


class CameraReports(BaseModel):
    """A numbered message about some of `owner`'s cameras: their reports, and those the
    receiver must forget (`withdrawn`: the grant ended, or the camera is gone)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: Annotated[int, Field(ge=VERSION, le=VERSION)] = VERSION  # strict: `true` is no 1
    kind: Literal["cameras"] = "cameras"
    owner: str
    epoch: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    seq: Annotated[int, Field(ge=1, le=2**62)]
    # The owner sends each camera at least this often: the receiver judges it stale after.
    refresh_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)]
    cameras: tuple[CameraReport, ...] = Field((), max_length=MAX_CAMERAS_PER_MESSAGE)
    withdrawn: tuple[tuple[Name, Name], ...] = Field((), max_length=MAX_CAMERAS_PER_MESSAGE)

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str) -> str:
        return check_agency(v)

    @property
    def msg_id(self) -> str:
        return f"cam:{self.owner}:{self.epoch}.{self.seq}"


def encode_camera_reports(m: CameraReports) -> bytes:
    return m.model_dump_json().encode()


def decode_camera_reports(body: bytes) -> CameraReports:
    return decode_model(CameraReports, body, MAX_CAMERA_BODY, "camera message")


def decode_model(model: type[M], body: bytes, limit: int, what: str) -> M:
    """A JSON message of `model`, at most `limit` bytes; `ProtocolError` naming `what` else."""
    if len(body) > limit:
        raise ProtocolError("oversized", f"{what} of {len(body)} B")
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise ProtocolError("invalid", f"{what}: {validation_errors(e)}") from None


def validation_errors(e: ValidationError) -> str:
    """The first few of pydantic's errors, each as 'where: what' (not the input's text)."""
    return "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'message'}: {err['msg']}"
                     for err in e.errors()[:3])[:500]


def decode_message(
    body: bytes, limits: Limits = DEFAULT_LIMITS
) -> HitMessage | HitPack | ListChange | CameraReports:
    """A hit, a pack of hits, a list change or a camera message; `ProtocolError` else."""
    if body.startswith(HIT_MAGIC):
        return decode_hit(body, limits)
    if body.startswith(PACK_MAGIC):
        return decode_pack(body, limits)
    if body.startswith(b"{"):
        d = _json_object(body)
        if isinstance(d, dict) and d.get("kind") == "cameras":
            return decode_camera_reports(body)
        return _list_change(d)
    raise ProtocolError("garbage", "neither a hit, a list change nor a camera message")


def subject_parts(subject: str) -> tuple[str, str, str]:
    """(receiver, sender, kind) of `in.<receiver>.from.<sender>.<kind>`; ProtocolError else."""
    parts: Sequence[str] = subject.split(".")
    if len(parts) != 5 or parts[0] != "in" or parts[2] != "from":
        raise ProtocolError("invalid", f"subject {subject!r} is not in.<me>.from.<agency>.<kind>")
    return parts[1], parts[3], parts[4]
