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
    # added with agencies; older rows have "" (the collector's default agency)
    "agency": str,  # the agency of the node (camera) that read it
    "list_agency": str,  # the agency that owns the list it matched
}
# The defaults of the columns added since the first release, for rows stored before.
HIT_DEFAULTS: dict[str, object] = {"reading": "", "vehicle_type": "", "vehicle_colour": "",
                                   "revision": 0, "completed_by": "", "agency": "",
                                   "list_agency": ""}


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
    agency: str = ""  # of the camera that read it ("": from before agencies, the default's)
    list_agency: str = ""  # the owner of the list it matched ("": as agency)

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


@dataclass(frozen=True)
class HitScope:
    """The hits a viewer of `agency` may see: those its cameras read (`agency`), those on
    its lists (`list_agency`), and those at the cameras an agreement grants it (`cameras`:
    (owner agency, node, camera)).  Rows from before agencies (agency "") are the
    collector's default agency's (`default`).  Each part is one indexed query."""

    agency: str
    default: bool = False
    cameras: tuple[tuple[str, str, str], ...] = ()

    @property
    def mine(self) -> list[str]:
        """The values of `agency` that are this viewer's."""
        return [self.agency, ""] if self.default else [self.agency]

    def allows(self, agency: str, list_agency: str, node: str, camera: str) -> bool:
        """Whether a hit of these agencies (its camera's, its list's), read at node/camera,
        is the viewer's to see (as `parts` say)."""
        return (agency in self.mine or list_agency == self.agency
                or any(n == node and c == camera for _, n, c in self.cameras))  # fmt: skip

    def parts(self, agency_index: bool = True, list_index: bool = True
              ) -> list[tuple[str, list[Any]]]:  # fmt: skip
        """Disjoint SQL conditions (and their arguments) whose union is what the viewer
        sees, each an equality on `agency` or `list_agency`, so that each walks its index
        in order.  An index off (False) keeps SQLite from walking it, where a range of
        another indexed column is narrower."""
        a = "" if agency_index else "+"
        la = "" if list_index else "+"
        mine = self.mine
        marks = ", ".join("?" * len(mine))
        out: list[tuple[str, list[Any]]] = [(f"{a}agency = ?", [m]) for m in mine]
        out.append((f"{la}list_agency = ? AND agency NOT IN ({marks})", [self.agency, *mine]))
        by_owner: dict[str, list[tuple[str, str]]] = {}
        for owner, node, camera in self.cameras:
            if owner not in mine:
                by_owner.setdefault(owner, []).append((node, camera))
        for owner, cams in sorted(by_owner.items()):
            for k in range(0, len(cams), 200):  # SQLite's limit on parameters
                chunk = cams[k : k + 200]
                values = ", ".join(["(?, ?)"] * len(chunk))
                out.append((f"{a}agency = ? AND list_agency != ? AND (node, camera) IN "
                            f"(VALUES {values})",
                            [owner, self.agency, *(v for c in chunk for v in c)]))  # fmt: skip
        return out

    def where(self) -> tuple[str, list[Any]]:
        """The whole scope as one condition (for a look-up by id)."""
        parts = self.parts()
        return ("(" + " OR ".join(f"({c})" for c, _ in parts) + ")",
                [v for _, values in parts for v in values])


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

    def after(self, rowid: int, limit: int = 500, scope: HitScope | None = None) -> list[StoredHit]:
        """Hits stored after `rowid`, oldest first (for following new hits)."""
        return self._scoped("rowid > ?", [rowid], "rowid", limit, scope, (False, False))

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

    def recent(
        self, received_since: dt.datetime, limit: int = 500, scope: HitScope | None = None
    ) -> list[StoredHit]:
        """Up to `limit` hits received from `received_since`, the last stored first."""
        # by (agency, received_at); hits on the viewer's lists by received_at alone
        return self._scoped("received_at >= ?", [format_time(received_since)], "rowid DESC",
                            limit, scope, (True, False))  # fmt: skip

    def search(
        self, query: HitQuery, limit: int = 1000, *, newest_first: bool = True,
        scope: HitScope | None = None,
    ) -> list[StoredHit]:
        """Up to `limit` hits that match `query` (and `scope`), by when they were seen."""
        where, args = query.where()
        order = "DESC" if newest_first else "ASC"
        # A plate is narrower than an agency: its index, not the agencies', is walked.
        walk = query.plate is None
        return self._scoped(where.removeprefix(" WHERE "), args, f"seen_at {order}", limit,
                            scope, (walk, walk))  # fmt: skip

    def get(self, hit_id: str, scope: HitScope | None = None) -> StoredHit | None:
        """The hit `hit_id`; None when there is none (or `scope` does not see it)."""
        where, args = ("1", []) if scope is None else scope.where()
        hits = self._read(f"{_SELECT} WHERE hit_id = ? AND {where}", [hit_id, *args])
        return hits[0] if hits else None

    def _scoped(self, where: str, args: list[Any], order: str, limit: int,
                scope: HitScope | None, index: tuple[bool, bool] = (True, True),
                ) -> list[StoredHit]:  # fmt: skip
        """`_SELECT` with `where` (may be ""), in `order` (columns of hits), up to `limit`;
        with a scope, the union of one query per part of it, each on its own index
        (`index`: whether the agency's and list agency's indexes may be walked)."""
        base = f"({where}) AND " if where else ""
        if scope is None:
            cond = f" WHERE {where}" if where else ""
            return self._read(f"{_SELECT}{cond} ORDER BY {order} LIMIT ?", [*args, limit])
        cols = f"rowid AS rowid_, {', '.join(_COLUMNS)}"
        parts, values = [], []
        for cond, part_args in scope.parts(*index):
            parts.append(f"SELECT * FROM (SELECT {cols} FROM hits WHERE {base}{cond} "
                         f"ORDER BY {order} LIMIT ?)")  # fmt: skip
            values += [*args, *part_args, limit]
        outer = order.replace("rowid", "rowid_")
        return self._read(" UNION ALL ".join(parts) + f" ORDER BY {outer} LIMIT ?",
                          [*values, limit])  # fmt: skip

    def picture(self, hit_id: str, kind: str) -> bytes | None:
        """A hit's picture ("crop" or "scene") as JPEG bytes, or None."""
        with self.pool.connection() as db:
            place = picture_place(db, hit_id, kind)
        return None if place is None else self.images.read(*place)

    def _read(self, sql: str, args: list[Any]) -> list[StoredHit]:
        with self.pool.connection() as db:
            rows = db.execute(sql, args).fetchall()
        return [StoredHit(*row) for row in rows]
