"""Stored hits, read: the `hits` table's columns, one record per hit, and the reader for any thread.

The collector's writer (`edge.collector.store.HitStore`) is the only one to write
`hits.db`; everyone else (the console, `anpr-collector hits` and `tail`) reads it with
a `HitReader`, over a few read-only connections (`edge.collector.readonly`), and gets
`StoredHit` records back, whose fields are the table's columns by name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.collector.images import ImageLog
from edge.collector.readonly import ReadPool
from edge.core.link_protocol import format_time

# The columns of `hits`, in the table's order, with their SQLite types (sqlite-utils).
HIT_COLUMNS: dict[str, type] = {
    "hit_id": str,
    "node": str,
    "camera": str,
    "seen_at": str,  # ISO 8601 UTC, sorts as text
    "received_at": str,
    "lat": float,
    "lon": float,
    "road": str,
    "direction": str,
    "plate_text": str,
    "plate_raw": str,
    "plate_formatted": str,
    "country": str,
    "confidence": float,
    "watchlist": str,
    "entry_id": str,
    "entry_plate": str,
    "match_kind": str,
    "match_distance": float,
    "priority": int,
    "reason": str,
    "version": int,
    "crop_bytes": int,
    "scene_bytes": int,
    # added with early hits (wire version 3); older databases get them, empty, at open
    "reading": str,  # the other reading of the plate the list matched ("": its text)
    "vehicle_type": str,
    "vehicle_colour": str,
    "revision": int,  # 0 as raised; 1 once the pass's final read completed it
    "completed_by": str,  # the id of the message that completed it
}
# The defaults of the columns added since the first release, for rows stored before.
HIT_DEFAULTS: dict[str, object] = {"reading": "", "vehicle_type": "", "vehicle_colour": "",
                                   "revision": 0, "completed_by": ""}


@dataclass(frozen=True)
class StoredHit:
    """One row of `hits` as stored, with its `rowid` (the order hits were stored in).

    Times are kept as the text stored (ISO 8601 UTC with a Z), so what is shown and
    exported is what was written.  Fields are the table's columns, in its order.
    """

    rowid: int
    hit_id: str
    node: str
    camera: str
    seen_at: str  # when the edge saw the plate
    received_at: str  # when the collector stored it
    lat: float | None
    lon: float | None
    road: str
    direction: str
    plate_text: str  # normalised, what the watchlist matched
    plate_raw: str
    plate_formatted: str
    country: str | None
    confidence: float
    watchlist: str
    entry_id: str
    entry_plate: str
    match_kind: str  # exact, fuzzy, wildcard
    match_distance: float
    priority: int
    reason: str
    version: int  # of the wire message it came in
    crop_bytes: int  # the pictures' sizes as sent (0: none); `HitReader.picture` reads them
    scene_bytes: int
    reading: str = ""  # the other reading of the plate the list matched; "": the text itself
    vehicle_type: str = ""
    vehicle_colour: str = ""
    revision: int = 0  # 0: as raised; 1: completed by the pass's final read (same alert)
    completed_by: str = ""

    def to_json(self, *, rowid: bool = True) -> dict[str, Any]:
        """The record as a JSON object, in the table's column order (`rowid` first)."""
        out = {f: getattr(self, f) for f in _COLUMNS}
        return {"rowid": self.rowid, **out} if rowid else out


_COLUMNS = tuple(f.name for f in dataclasses.fields(StoredHit))[1:]
_SELECT = f"SELECT rowid, {', '.join(_COLUMNS)} FROM hits"


@dataclass(frozen=True)
class HitQuery:
    """Which stored hits to read; every field optional (None: any)."""

    plate: str | None = None  # this normalised plate exactly
    plate_pattern: str | None = None  # a normalised plate with ? (one character), * (any run)
    since: dt.datetime | None = None  # seen at or after
    until: dt.datetime | None = None  # seen before
    node: str | None = None
    camera: str | None = None
    watchlist: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The query as an SQL WHERE clause ("" for every hit) and its arguments."""
        clauses: list[str] = []
        args: list[Any] = []
        if self.plate is not None:
            clauses.append("plate_text = ?")
            args.append(self.plate)
        if self.plate_pattern is not None:
            clauses.append("plate_text GLOB ?")  # A-Z0-9 ? * only (the caller's part)
            args.append(self.plate_pattern)
        for t, op in ((self.since, ">="), (self.until, "<")):
            if t is not None:
                clauses.append(f"seen_at {op} ?")
                args.append(format_time(t))
        for column, value in (("node", self.node), ("camera", self.camera),
                              ("watchlist", self.watchlist)):  # fmt: skip
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def picture_place(db: sqlite3.Connection, hit_id: str, kind: str) -> tuple[int, int, int] | None:
    """Where a hit's picture is in the image log: (segment, offset, length), or None."""
    row = db.execute(
        "SELECT segment, offset, length FROM hit_images WHERE hit_id = ? AND kind = ?",
        (hit_id, kind),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


class HitReader:
    """Read the hits of `path` (pictures in `images_dir`, default `images/` beside it).

    From any thread, over up to `connections` read-only connections; the database
    need not be there yet (a read then raises FileNotFoundError).  `pool` is open to
    other reads of the same database (nodes and cameras).
    """

    def __init__(self, path: Path, *, images_dir: Path | None = None, connections: int = 4):
        self.path = Path(path)
        self.pool = ReadPool(self.path, connections)
        self.images = ImageLog(images_dir or self.path.parent / "images", readonly=True)

    def close(self) -> None:
        self.pool.close()
        self.images.close()

    def check(self) -> None:
        """Raise FileNotFoundError unless the collector's database is there and set up."""
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no collector database here")
        with self.pool.connection() as db:
            made = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hits'"
            ).fetchone()
        if made is None:
            raise FileNotFoundError(f"{self.path}: not a collector database (yet)")

    def last_rowid(self) -> int:
        """The rowid of the last hit stored (0: none yet)."""
        with self.pool.connection() as db:
            return int(db.execute("SELECT coalesce(max(rowid), 0) FROM hits").fetchone()[0])

    def after(self, rowid: int, limit: int = 500) -> list[StoredHit]:
        """Hits stored after `rowid`, oldest first (for following new hits)."""
        return self._read(f"{_SELECT} WHERE rowid > ? ORDER BY rowid LIMIT ?", [rowid, limit])

    def last_change(self) -> int:
        """The sequence number of the last update of a stored hit (0: none yet)."""
        with self.pool.connection() as db:
            return int(db.execute("SELECT coalesce(max(seq), 0) FROM hit_changes").fetchone()[0])

    def changed_after(self, seq: int, limit: int = 500) -> list[tuple[int, StoredHit]]:
        """Hits updated after change `seq` (an early hit completed), oldest change first,
        each with its change's number."""
        with self.pool.connection() as db:
            rows = db.execute(
                f"SELECT c.seq, h.rowid, {', '.join('h.' + c for c in _COLUMNS)} FROM "
                "hit_changes c JOIN hits h ON h.hit_id = c.hit_id WHERE c.seq > ? "
                "ORDER BY c.seq LIMIT ?", [seq, limit]).fetchall()
        return [(row[0], StoredHit(*row[1:])) for row in rows]

    def recent(self, received_since: dt.datetime, limit: int = 500) -> list[StoredHit]:
        """Up to `limit` hits received from `received_since`, the last stored first."""
        return self._read(
            f"{_SELECT} WHERE received_at >= ? ORDER BY rowid DESC LIMIT ?",
            [format_time(received_since), limit],
        )

    def search(
        self, query: HitQuery, limit: int = 1000, *, newest_first: bool = True
    ) -> list[StoredHit]:
        """Up to `limit` hits that match `query`, by when they were seen."""
        where, args = query.where()
        order = "DESC" if newest_first else "ASC"
        return self._read(f"{_SELECT}{where} ORDER BY seen_at {order} LIMIT ?", [*args, limit])

    def get(self, hit_id: str) -> StoredHit | None:
        hits = self._read(f"{_SELECT} WHERE hit_id = ?", [hit_id])
        return hits[0] if hits else None

    def picture(self, hit_id: str, kind: str) -> bytes | None:
        """A hit's picture ("crop" or "scene") as JPEG bytes, or None."""
        with self.pool.connection() as db:
            place = picture_place(db, hit_id, kind)
        return None if place is None else self.images.read(*place)

    def _read(self, sql: str, args: list[Any]) -> list[StoredHit]:
        with self.pool.connection() as db:
            rows = db.execute(sql, args).fetchall()
        return [StoredHit(*row) for row in rows]
