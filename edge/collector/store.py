"""The collector's database (sqlite-utils): hits, where their pictures are, when nodes were heard.

A hit is stored once, by its id: a hit that arrives again is recognised and not
stored twice.  `commit` first makes a batch's pictures durable in the image log
(`images.py`), then writes the batch's rows in one transaction with
`synchronous=FULL`; once it returns, the batch survives a power cut and may be
acknowledged.  Heartbeats and hits update `nodes` and `cameras` in memory first
and are written by `record_seen` about once a second.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from edge.collector.images import ImageLog
from edge.link.protocol import HitMessage, format_time

_HIT_COLUMNS = {
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
}


@dataclass
class Seen:
    """What the collector last heard from one node (kept in memory, flushed now and then)."""

    node: str
    last_seen: dt.datetime
    address: str | None = None
    status: dict[str, Any] | None = None
    cameras: set[str] = field(default_factory=set)  # named in a heartbeat or a hit
    last_hit_at: dt.datetime | None = None
    hit_cameras: set[str] = field(default_factory=set)


class HitStore:
    """Open (and create) the collector's database at `path`; `readonly` for the operator's CLI.

    Pictures go to `images_dir` (default: `images/` beside the database).
    """

    def __init__(self, path: Path, *, readonly: bool = False, images_dir: Path | None = None):
        self.path = Path(path)
        self._status_written: dict[str, dict[str, Any]] = {}
        self.images = ImageLog(images_dir or self.path.parent / "images", readonly=readonly)
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"{self.path}: no collector database here")
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            conn.execute("PRAGMA busy_timeout=5000")
            self.db = sqlite_utils.Database(conn)
            if "hits" not in self.db.table_names():  # made, but not yet set up
                self.close()
                raise FileNotFoundError(f"{self.path}: not a collector database (yet)")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Opened by whoever starts the collector, used by its writer thread alone.
        conn = sqlite3.connect(self.path, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=FULL")
        # Small checkpoints (1 MiB of WAL): each runs inside a commit, so its length is
        # added to some hits' time to ack.
        self.db.execute("PRAGMA wal_autocheckpoint=256")
        self.db.execute(f"PRAGMA journal_size_limit={8 * 1024**2}")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._create()

    def _create(self) -> None:
        db = self.db
        if "hits" not in db.table_names():
            with db.atomic():
                db["hits"].create(_HIT_COLUMNS, pk="hit_id", not_null={"node", "camera"})
                db["hits"].create_index(["seen_at"])
                db["hits"].create_index(["received_at"])
                db["hits"].create_index(["plate_text"])
        if "hit_images" not in db.table_names():
            db["hit_images"].create(
                {"hit_id": str, "kind": str, "segment": int, "offset": int, "length": int},
                pk=("hit_id", "kind"),
            )
        if "nodes" not in db.table_names():
            db["nodes"].create(
                {"node": str, "last_seen": str, "address": str, "status": str, "last_hit_at": str},
                pk="node",
            )
        if "cameras" not in db.table_names():
            db["cameras"].create(
                {"node": str, "camera": str, "last_seen": str, "last_hit_at": str},
                pk=("node", "camera"),
            )

    # ------------------------------------------------------------ writing

    def commit(
        self, hits: Sequence[HitMessage], received_at: dt.datetime | None = None
    ) -> tuple[list[str], list[str]]:
        """Store `hits` durably; returns (ids newly stored, ids already here).

        Duplicates (already stored, or twice in `hits`) are not stored again.
        Only one thread may commit (the collector's writer).
        """
        received = format_time(received_at or dt.datetime.now(dt.UTC))
        have = self._existing([h.hit_id for h in hits])
        new: list[HitMessage] = []
        dups: list[str] = []
        for h in hits:
            if h.hit_id in have:
                dups.append(h.hit_id)
            else:
                have.add(h.hit_id)
                new.append(h)
        if not new:
            return [], dups
        refs = [
            (h.hit_id, kind, data)
            for h in new
            for kind, data in (("crop", h.crop_jpeg), ("scene", h.scene_jpeg))
            if data
        ]
        where = self.images.append([data for _, _, data in refs])  # durable before the rows
        with self.db.atomic():
            # Not insert_all: on this path sqlite-utils would spend more time building
            # SQL than SQLite spends storing the rows.
            self._insert("hits", list(_HIT_COLUMNS), [_row(h, received) for h in new])
            self._insert(
                "hit_images",
                ["hit_id", "kind", "segment", "offset", "length"],
                [(hid, kind, *w) for (hid, kind, _), w in zip(refs, where, strict=True)],
            )
        return [h.hit_id for h in new], dups

    def _insert(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        """INSERT OR IGNORE many rows, in statements of up to 100 rows each.

        One statement for many rows, rather than `executemany`, which gives up and
        takes back the GIL for every row: with the receiver thread busy, each of those
        hand-overs can cost milliseconds.
        """
        for i in range(0, len(rows), 100):
            chunk = rows[i : i + 100]
            one = "(" + ", ".join("?" * len(columns)) + ")"
            sql = f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES " + ", ".join(
                [one] * len(chunk)
            )
            self.db.conn.execute(sql, [v for row in chunk for v in row])

    def _existing(self, ids: list[str]) -> set[str]:
        have: set[str] = set()
        for i in range(0, len(ids), 500):  # SQLite's limit on parameters
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT hit_id FROM hits WHERE hit_id IN ({marks})"
            have.update(r[0] for r in self.db.execute(sql, chunk))
        return have

    def record_seen(self, seen: Iterable[Seen]) -> None:
        """Write when each node and camera was last heard (and last sent a hit), and status."""
        seen = list(seen)
        if not seen:
            return
        t = format_time
        statuses = []
        for s in seen:  # a status as last written is not written again
            if s.status is None or self._status_written.get(s.node) == s.status:
                statuses.append(None)
            else:
                statuses.append(json.dumps(s.status))
                self._status_written[s.node] = s.status
        with self.db.atomic():
            self.db.conn.executemany(
                "INSERT INTO nodes (node, last_seen, address, status, last_hit_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(node) DO UPDATE SET"
                " last_seen = max(coalesce(last_seen, ''), excluded.last_seen),"
                " address = coalesce(excluded.address, address),"
                " status = coalesce(excluded.status, status),"
                " last_hit_at = coalesce(excluded.last_hit_at, last_hit_at)",
                [
                    (s.node, t(s.last_seen), s.address, status,
                     None if s.last_hit_at is None else t(s.last_hit_at))
                    for s, status in zip(seen, statuses, strict=True)
                ],
            )  # fmt: skip
            self.db.conn.executemany(
                "INSERT INTO cameras (node, camera, last_seen, last_hit_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(node, camera) DO UPDATE SET"
                " last_seen = max(coalesce(last_seen, ''), excluded.last_seen),"
                " last_hit_at = coalesce(excluded.last_hit_at, last_hit_at)",
                [
                    (s.node, c, t(s.last_seen),
                     t(s.last_hit_at) if s.last_hit_at and c in s.hit_cameras else None)
                    for s in seen
                    for c in sorted(s.cameras)
                ],
            )  # fmt: skip

    # ------------------------------------------------------------ reading

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM hits").fetchone()[0]

    def hit_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT hit_id FROM hits ORDER BY rowid")]

    def hits_after(self, rowid: int, limit: int = 500) -> list[dict[str, Any]]:
        """Hits stored after `rowid`, oldest first, each with its `rowid` (for `tail`)."""
        return list(
            self.db.query(
                "SELECT rowid, * FROM hits WHERE rowid > ? ORDER BY rowid LIMIT ?", (rowid, limit)
            )
        )

    def last_rowid(self) -> int:
        return self.db.execute("SELECT coalesce(max(rowid), 0) FROM hits").fetchone()[0]

    def hits_since(
        self,
        since: dt.datetime,
        until: dt.datetime | None = None,
        *,
        plate: str | None = None,
        node: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Hits seen from `since` (to `until`), oldest first."""
        where, args = ["seen_at >= ?"], [format_time(since)]
        if until is not None:
            where.append("seen_at < ?")
            args.append(format_time(until))
        if plate:
            where.append("plate_text = ?")
            args.append(plate)
        if node:
            where.append("node = ?")
            args.append(node)
        sql = f"SELECT * FROM hits WHERE {' AND '.join(where)} ORDER BY seen_at LIMIT ?"
        return list(self.db.query(sql, (*args, limit)))

    def image(self, hit_id: str, kind: str = "crop") -> bytes | None:
        """A hit's picture ("crop" or "scene") as JPEG bytes, or None."""
        row = self.db.execute(
            "SELECT segment, offset, length FROM hit_images WHERE hit_id = ? AND kind = ?",
            (hit_id, kind),
        ).fetchone()
        return None if row is None else self.images.read(*row)

    def nodes(self) -> list[dict[str, Any]]:
        nodes = list(self.db.query("SELECT * FROM nodes ORDER BY node"))
        cams: dict[str, list[dict[str, Any]]] = {}
        for c in self.db.query("SELECT * FROM cameras ORDER BY node, camera"):
            cams.setdefault(c["node"], []).append(c)
        for n in nodes:
            n["status"] = json.loads(n["status"]) if n["status"] else None
            n["cameras"] = cams.get(n["node"], [])
        return nodes

    def close(self) -> None:
        self.db.close()
        self.images.close()


def _row(h: HitMessage, received: str) -> tuple[Any, ...]:
    """A hit as a row of `hits`, in the order of `_HIT_COLUMNS`."""
    loc, p, m = h.location, h.plate, h.match
    return (
        h.hit_id, h.node, h.camera, format_time(h.seen_at), received,
        loc.lat, loc.lon, loc.road, loc.direction,
        p.text, p.raw, p.formatted, p.country, p.confidence,
        m.watchlist, m.entry_id, m.entry_plate, m.kind, m.distance, m.priority, m.reason,
        h.wire_version, len(h.crop_jpeg), len(h.scene_jpeg),
    )  # fmt: skip
