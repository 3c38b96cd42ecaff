"""The wire format of watchlist distribution, shared by the collector and the edges.

Every message is three frames: a topic, a body (a flag byte, then JSON, zlib-compressed
when the flag says so) and a CRC-32 of topic and body.  A message that fails any check
raises `ProtocolError` with the reason, and nothing of it is used.

Updates go out on a PUB socket under the topic `L:<list>\\0` (so an edge subscribes to
just its lists) and heartbeats under `HUGZ`; snapshot and catch-up requests go to a
ROUTER socket (the ZeroMQ guide's Clone pattern).  Each list numbers its updates 1, 2,
3...; `epoch` names the master store, so numbers from another store never mix.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge.core.errors import ProtocolError
from edge.core.watchlist.distance import MAX_PLATE_LEN
from edge.core.watchlist.entry import FieldError, ListPolicy, check_list_name
from edge.core.watchlist.index import Row

VERSION = 1
HUGZ = b"HUGZ"
LIST_PREFIX = b"L:"
# requests to the snapshot socket, and its replies
CATALOGUE = b"CATALOGUE"
FETCH = b"FETCH"
LISTS = b"LISTS"
CHUNK = b"CHUNK"
ERROR = b"ERROR"

OPS = ("policy", "upsert", "delete", "drop")
MAX_BODY = 64 << 20  # refuse to inflate a message past this
_COMPRESS_ABOVE = 2048
_RAW, _ZLIB = 0, 1
_PATTERN = re.compile(rf"^[A-Z0-9?*]{{2,{2 * MAX_PLATE_LEN + 1}}}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CRC = struct.Struct(">I")


def updates_endpoint(snapshot: str) -> str:
    """Where updates are published when not said: the port after the snapshot socket's
    (the convention of the guide's Clone examples)."""
    base, _, port = snapshot.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"cannot derive the updates endpoint from {snapshot!r}; give it")
    return f"{base}:{int(port) + 1}"


def list_topic(name: str) -> bytes:
    return LIST_PREFIX + name.encode("ascii") + b"\0"


def seal(topic: bytes, body: Mapping[str, object]) -> list[bytes]:
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    payload = bytes([_RAW]) + raw
    if len(raw) > _COMPRESS_ABOVE:
        payload = bytes([_ZLIB]) + zlib.compress(raw, 1)
    return [topic, payload, _CRC.pack(zlib.crc32(payload, zlib.crc32(topic)))]


def open_message(frames: Sequence[bytes]) -> tuple[bytes, dict]:
    """(topic, body) of a sealed message; raises `ProtocolError` saying what is wrong."""
    if len(frames) != 3:
        raise ProtocolError("truncated" if len(frames) < 3 else "garbage",
                            f"expected 3 frames, got {len(frames)}")
    topic, payload, check = (bytes(f) for f in frames)
    if len(check) != 4:
        raise ProtocolError("garbage", "checksum frame is not 4 bytes")
    if _CRC.unpack(check)[0] != zlib.crc32(payload, zlib.crc32(topic)):
        raise ProtocolError("garbage", "checksum mismatch (corrupt or truncated message)")
    if not payload:
        raise ProtocolError("truncated", "empty body")
    if payload[0] == _ZLIB:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(payload[1:], MAX_BODY)
        except zlib.error as e:
            raise ProtocolError("garbage", f"body does not inflate: {e}") from None
        if inflater.unconsumed_tail or not inflater.eof:
            raise ProtocolError("oversized" if inflater.unconsumed_tail else "truncated",
                                "body is truncated or inflates past the size limit")
    elif payload[0] == _RAW:
        raw = payload[1:]
    else:
        raise ProtocolError("garbage", f"unknown body encoding {payload[0]}")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError("garbage", f"body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ProtocolError("garbage", "body is not a JSON object")
    if body.get("v") != VERSION:
        raise ProtocolError("version", f"protocol version {body.get('v')!r}, expected {VERSION}")
    return topic, body


# --------------------------------------------------------------------------- updates


@dataclass(frozen=True)
class Update:
    """One numbered change to one list."""

    epoch: str
    list: str
    seq: int
    op: str  # policy | upsert | delete | drop
    policy: ListPolicy | None = None
    rows: tuple[Row, ...] = ()
    ids: tuple[int, ...] = ()


def _int(value: object, what: str, lo: int = 0, hi: int = 2**62) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError("invalid", f"{what}: expected an integer {lo}..{hi}, got {value!r}")
    return value


def _str(value: object, what: str, limit: int = 500) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError("invalid", f"{what}: expected text of at most {limit} characters")
    return value


def _time(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError("invalid", f"{what}: expected UNIX seconds or null, got {value!r}")
    return float(value)


def row_to_wire(row: Row) -> list[object]:
    """An entry row as sent: its fields in `Entry` order, without the list."""
    return [row[0], row[1], *row[3:]]


def row_from_wire(list_name: str, item: object) -> Row:
    """A row from the wire, checked field by field."""
    if not isinstance(item, list) or len(item) != 10:
        raise ProtocolError("invalid", "entry: expected a list of 10 fields")
    eid, pattern, agency, category, priority, reason, country, vf, vu, added_by = item
    if not isinstance(pattern, str) or not _PATTERN.match(pattern):
        raise ProtocolError("invalid", f"entry {eid!r}: bad plate pattern {pattern!r}")
    if country is not None and (not isinstance(country, str) or not _COUNTRY.match(country)):
        raise ProtocolError("invalid", f"entry {eid!r}: bad country {country!r}")
    return (
        _int(eid, "entry id", 1),
        pattern,
        list_name,
        _str(agency, "entry agency", 64),
        _str(category, "entry category", 32),
        _int(priority, "entry priority", 1, 9),
        _str(reason, "entry reason"),
        country,
        _time(vf, "entry valid_from"),
        _time(vu, "entry valid_until"),
        _str(added_by, "entry added_by", 64),
    )


def parse_update(topic: bytes, body: Mapping[str, object]) -> Update:
    """An `Update` from an opened message; raises `ProtocolError` if anything is off."""
    try:
        name = check_list_name(body.get("list"))
    except FieldError as e:
        raise ProtocolError("invalid", str(e)) from None
    if topic and topic != list_topic(name):
        raise ProtocolError("invalid", f"topic {topic!r} does not match list {name!r}")
    epoch = _str(body.get("epoch"), "epoch", 64)
    seq = _int(body.get("seq"), "seq", 1)
    op = body.get("op")
    if op not in OPS:
        raise ProtocolError("invalid", f"unknown op {op!r}")
    policy = None
    rows: tuple[Row, ...] = ()
    ids: tuple[int, ...] = ()
    if op == "policy":
        policy = policy_from_wire(name, body.get("policy"))
    elif op == "upsert":
        rows = rows_from_wire(name, body.get("entries"))
    elif op == "delete":
        items = body.get("ids")
        if not isinstance(items, list):
            raise ProtocolError("invalid", "ids: expected a list")
        ids = tuple(_int(i, "id", 1) for i in items)
    return Update(epoch, name, seq, op, policy, rows, ids)


def policy_from_wire(name: str, raw: object) -> ListPolicy:
    """List `name`'s policy as a message carries it; ProtocolError if it is not one."""
    if not isinstance(raw, dict):
        raise ProtocolError("invalid", "policy: expected an object")
    try:
        policy = ListPolicy.from_json(raw)
    except FieldError as e:
        raise ProtocolError("invalid", f"policy: {e}") from None
    if policy.name != name:
        raise ProtocolError("invalid", "policy names another list")
    return policy


def rows_from_wire(name: str, items: object) -> tuple[Row, ...]:
    """List `name`'s entries as a message carries them; ProtocolError if any is off."""
    if not isinstance(items, list):
        raise ProtocolError("invalid", "entries: expected a list")
    return tuple(row_from_wire(name, item) for item in items)


def hugz_body(epoch: str, seqs: Mapping[str, int]) -> dict[str, object]:
    return {"v": VERSION, "epoch": epoch, "lists": dict(seqs)}


def parse_hugz(body: Mapping[str, object]) -> tuple[str, dict[str, int]]:
    epoch = _str(body.get("epoch"), "epoch", 64)
    lists = body.get("lists")
    if not isinstance(lists, dict):
        raise ProtocolError("invalid", "lists: expected an object")
    return epoch, {_str(k, "list", 64): _int(v, "seq") for k, v in lists.items()}
