"""The collector's database (sqlite-utils): hits, where their pictures are, when nodes were heard.

A hit is stored once, by its id: a hit that arrives again is recognised and not
stored twice.  `commit` first makes a batch's pictures durable in the image log
(`images.py`), then writes the batch's rows in one transaction with
`synchronous=FULL`; once it returns, the batch survives a power cut and may be
acknowledged.  Heartbeats and hits update `nodes` and `cameras` in memory first
and are written by `record_seen` about once a second; a node keeps at most
`max_cameras_per_node` camera rows.

Opened for writing, the store first checks its pictures against the segment files
(`_mend_images`): bytes past the last stored picture are cut off, and a picture
whose bytes are not there any more is forgotten, so that no picture ever reads
another's bytes.  A segment file the database has no record of writing is left
alone.  The retention methods (`delete_hits`, `move_pictures`, `drop_segment`,
`forget_nodes`, `vacuum`) are called by the collector's maintenance
(`edge.collector.retention`).  Hits are read, by anyone but the writer, with
`edge.collector.hits.HitReader`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from edge.collector.agencies import DEFAULT_AGENCY, list_owner
from edge.collector.hits import HIT_COLUMNS, HIT_DEFAULTS, picture_place
from edge.collector.images import SEGMENT_BYTES, ImageLog
from edge.core.link_protocol import HitMessage
from edge.core.times import format_time, utc_now

log = logging.getLogger(__name__)

MAX_CAMERAS_PER_NODE = 128
# No picture is longer than this (the link caps them at 16 MiB): pictures that may end
# past a point start less than this before it.
_MAX_PICTURE = 64 * 1024**2
# The distinct values of an indexed column, one index look-up each (a "skip scan").
_DISTINCT = (
    "WITH RECURSIVE v(x) AS (SELECT min({col}) FROM {table} UNION ALL "
    "SELECT (SELECT min({col}) FROM {table} WHERE {col} > v.x) FROM v WHERE v.x IS NOT NULL) "
    "SELECT x FROM v WHERE x IS NOT NULL"
)


@dataclass
class Mended:
    """What the start-up check of the pictures found and repaired."""

    tail_bytes: int = 0  # bytes past the last stored picture, cut off
    lost_pictures: int = 0  # pictures whose bytes were not there, forgotten
    segment: int = 0  # where new pictures go

    def __bool__(self) -> bool:
        return bool(self.tail_bytes or self.lost_pictures)


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

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = False,
        images_dir: Path | None = None,
        max_cameras_per_node: int = MAX_CAMERAS_PER_NODE,
        segment_bytes: int = SEGMENT_BYTES,
        agency_of_node: Callable[[str], str | None] = lambda node: DEFAULT_AGENCY,
        agencies: Sequence[str] | None = None,
    ):
        self.path = Path(path)
        # Whose each node is (the config's `agencies:`), and the agencies a list named
        # `<agency>.<list>` may be a copy of (None: any of an agency's shape).
        self.agency_of_node = agency_of_node
        self.agencies = None if agencies is None else list(agencies)
        self.max_cameras_per_node = max_cameras_per_node
        self._status_written: dict[str, dict[str, Any]] = {}
        self._cameras: dict[str, set[str]] = {}  # camera rows kept, by node
        self.images = ImageLog(
            images_dir or self.path.parent / "images",
            readonly=readonly,
            segment_bytes=segment_bytes,
            on_new_segment=None if readonly else self._new_segment,
        )
        self.mended = Mended()
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
        if not self.db.table_names():
            # Freed pages can then be given back to the system (`vacuum`); this can only
            # be chosen before the first table is made.
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=FULL")
        # Small checkpoints (1 MiB of WAL): each runs inside a commit, so its length is
        # added to some hits' time to ack.
        self.db.execute("PRAGMA wal_autocheckpoint=256")
        self.db.execute(f"PRAGMA journal_size_limit={8 * 1024**2}")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._create()
        for node, camera in self.db.execute("SELECT node, camera FROM cameras"):
            self._cameras.setdefault(node, set()).add(camera)
        self.mended = self._mend_images()

    def _create(self) -> None:
        db = self.db
        if "hits" not in db.table_names():
            with db.atomic():
                db.table("hits").create(HIT_COLUMNS, pk="hit_id", not_null={"node", "camera"},
                                        defaults=HIT_DEFAULTS)
                db.table("hits").create_index(["seen_at"])
                db.table("hits").create_index(["received_at"])
                db.table("hits").create_index(["plate_text"])
        have = {c.name for c in db.table("hits").columns}
        for name, default in HIT_DEFAULTS.items():  # a database from before early hits, agencies
            if name not in have:
                kind = "INTEGER" if isinstance(default, int) else "TEXT"
                db.execute(f"ALTER TABLE hits ADD COLUMN {name} {kind} NOT NULL "
                           f"DEFAULT {default!r}")
        # The console's scoped reads: an agency's hits, and those on its lists, by time.
        for name, columns in (("hits_by_agency", "agency, seen_at"),
                              ("hits_by_list_agency", "list_agency, seen_at"),
                              ("hits_by_agency_received", "agency, received_at")):  # fmt: skip
            db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON hits({columns})")
        if "hit_changes" not in db.table_names():
            # each update of a stored hit (an early hit completed), for the console to follow
            db.execute("CREATE TABLE hit_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                       "hit_id TEXT NOT NULL)")
        if "hit_images" not in db.table_names():
            db.table("hit_images").create(
                {"hit_id": str, "kind": str, "segment": int, "offset": int, "length": int},
                pk=("hit_id", "kind"),
            )
        if "nodes" not in db.table_names():
            db.table("nodes").create(
                {"node": str, "last_seen": str, "address": str, "status": str, "last_hit_at": str},
                pk="node",
            )
        if "cameras" not in db.table_names():
            db.table("cameras").create(
                {"node": str, "camera": str, "last_seen": str, "last_hit_at": str},
                pk=("node", "camera"),
            )
        for table in ("nodes", "cameras"):  # whose node it is ("": from before agencies)
            if "agency" not in {c.name for c in db.table(table).columns}:
                db.execute(f"ALTER TABLE {table} ADD COLUMN agency TEXT NOT NULL DEFAULT ''")
        # For the retention: hits of a list by age, pictures by segment and place.
        db.execute("CREATE INDEX IF NOT EXISTS hits_by_list ON hits(watchlist, received_at)")
        db.execute(
            "CREATE INDEX IF NOT EXISTS hit_images_by_place ON hit_images(segment, offset, length)"
        )
        if "segments" not in db.table_names():
            # The segment files this database wrote; others it never cuts or deletes.
            with db.atomic():
                db.execute("CREATE TABLE segments (segment INTEGER PRIMARY KEY, created_at TEXT)")
                db.execute(
                    "INSERT INTO segments SELECT x, ? FROM ("
                    + _DISTINCT.format(col="segment", table="hit_images")
                    + ")",
                    (format_time(utc_now()),),
                )
        if "collector_status" not in db.table_names():
            db.execute("CREATE TABLE collector_status (key TEXT PRIMARY KEY, value TEXT, at TEXT)")

    # ------------------------------------------------------------ the pictures' check

    def _new_segment(self, segment: int) -> None:
        """Note that this database writes `segment` (before its first byte is written)."""
        with self.db.atomic():
            self.db.execute(
                "INSERT OR IGNORE INTO segments VALUES (?, ?)",
                (segment, format_time(utc_now())),
            )

    def known_segments(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT segment FROM segments ORDER BY segment")]

    def _segment_end(self, segment: int) -> int:
        """Where the last stored picture of `segment` ends (0 if it holds none)."""
        row = self.db.execute(
            "SELECT offset + length FROM hit_images WHERE segment = ? ORDER BY offset DESC LIMIT 1",
            (segment,),
        ).fetchone()
        return row[0] if row else 0

    def _mend_images(self) -> Mended:
        """Cut torn tails off the segments, forget pictures whose bytes are gone, and
        choose the segment new pictures go to."""
        mended = Mended()
        files = self.images.sizes()
        known = set(self.known_segments())
        referenced = [r[0] for r in self.db.execute(
            _DISTINCT.format(col="segment", table="hit_images"))]  # fmt: skip
        for segment in referenced:
            size = files.get(segment, 0)
            with self.db.atomic():
                lost = self.db.execute(
                    "DELETE FROM hit_images WHERE segment = ? AND offset > ? "
                    "AND offset + length > ?",
                    (segment, size - _MAX_PICTURE, size),
                ).rowcount
            if lost:
                mended.lost_pictures += lost
                log.error(
                    "%s: %d pictures pointed past its end (%d bytes): forgotten, their "
                    "bytes are gone", self.images.path(segment), lost, size,
                )  # fmt: skip
        for segment in sorted(known & files.keys()):
            end = self._segment_end(segment)
            if files[segment] > end:
                log.warning(
                    "%s: %d bytes past the last stored picture (a failed or torn write) "
                    "cut off", self.images.path(segment), files[segment] - end,
                )  # fmt: skip
                self.images.cut(segment, end)
                mended.tail_bytes += files[segment] - end
        own = known & files.keys()
        top = max(files, default=-1)
        if own and max(own) == top:
            mended.segment = top
        else:  # after every file, ours or not, and every number used before
            mended.segment = max(top, max(known, default=-1)) + 1
            if files and not own:
                log.warning("%s: segment files this database did not write; new pictures "
                            "go to segment %d", self.images.directory, mended.segment)  # fmt: skip
        self.images.open_for_append(mended.segment)
        return mended

    # ------------------------------------------------------------ writing

    def commit(
        self, hits: Sequence[HitMessage], received_at: dt.datetime | None = None, *,
        agency: str | None = None, list_agency: str | None = None,
    ) -> tuple[list[str], list[str]]:
        """Store `hits` durably; returns (ids newly stored, ids already here).

        Each is stored with the agency of its node (`agency_of_node`), or `agency` where
        given (hits a partner forwarded), and the owner of the list it matched
        (`edge.collector.agencies.list_owner`), or `list_agency` where given (a partner's
        hits on our lists, which it names without our prefix).

        Duplicates (already stored, or twice in `hits`) are not stored again. A hit that
        `completes` an early one updates it (text, match, pictures, vehicle), keeping when
        it was seen and received: one alert, completed. Where the early hit has not come
        (yet), the completion is stored under the early hit's id, and the early hit, when
        it comes, is a duplicate. Only one thread may commit (the collector's writer).
        """
        received = format_time(received_at or utc_now())
        targets = [h.completes for h in hits if h.completes]
        have = self._existing([h.hit_id for h in hits] + targets)
        done = self._completed_by(targets)
        new: list[HitMessage] = []  # rows to insert
        updates: list[HitMessage] = []  # completions of stored hits
        stored: list[str] = []
        dups: list[str] = []
        for h in hits:
            if h.completes and h.hit_id in done.get(h.completes, ()):
                dups.append(h.hit_id)  # this completion was applied before
            elif h.completes and h.completes in have:
                if not self._same_node(h.completes, h.node, new):
                    log.warning("hit %s from %s completes %s of another node: stored as a "
                                "hit of its own", h.hit_id, h.node, h.completes)
                    have.add(h.hit_id)
                    new.append(dataclasses.replace(h, completes=""))
                else:
                    updates.append(h)
                done.setdefault(h.completes, set()).add(h.hit_id)
                stored.append(h.hit_id)
            elif h.completes:
                # the completion came first: it stands for the early hit, and is complete
                have.add(h.completes)
                done.setdefault(h.completes, set()).add(h.hit_id)
                new.append(h)
                stored.append(h.hit_id)
            elif h.hit_id in have:
                dups.append(h.hit_id)
            else:
                have.add(h.hit_id)
                new.append(h)
                stored.append(h.hit_id)
        if not new and not updates:
            return [], dups
        rows = [(_stored_id(h), h) for h in (*new, *updates)]
        refs = [
            (hid, kind, data)
            for hid, h in rows
            for kind, data in (("crop", h.crop_jpeg), ("scene", h.scene_jpeg))
            if data
        ]
        # durable before the rows; a partner's pictures (`agency` given) out of the page
        # cache once they are (no one reads them soon, and their pages are reused)
        where = self.images.append([data for _, _, data in refs], drop_cache=agency is not None)
        try:
            with self.db.atomic():
                # Not insert_all: on this path sqlite-utils would spend more time building
                # SQL than SQLite spends storing the rows.
                self._insert("hits", list(HIT_COLUMNS),
                             [_row(h, received, *self._agencies_of(h, agency, list_agency))
                              for h in new])
                for h in updates:
                    self._complete(h)
                self.db.conn.executemany(
                    "INSERT OR REPLACE INTO hit_images (hit_id, kind, segment, offset, length)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(hid, kind, *w) for (hid, kind, _), w in zip(refs, where, strict=True)],
                )
        except sqlite3.Error as e:
            first = _stored_id(rows[0][1])
            self._take_back(where, e, lambda: not self._existing([first]))
            raise
        return stored, dups

    def _agencies_of(self, h: HitMessage, agency: str | None, list_agency: str | None
                     ) -> tuple[str, str]:
        """(the agency of the camera that read `h`, the agency owning its list)."""
        own = agency or self.agency_of_node(h.node) or ""
        return own, list_agency or list_owner(h.match.watchlist, own, self.agencies)

    def _completed_by(self, targets: list[str]) -> dict[str, set[str]]:
        """The completion already applied to each of `targets`, by target."""
        out: dict[str, set[str]] = {}
        for i in range(0, len(targets), 500):
            chunk = targets[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for hit_id, by in self.db.execute(
                f"SELECT hit_id, completed_by FROM hits WHERE hit_id IN ({marks})", chunk
            ):
                if by:
                    out.setdefault(hit_id, set()).add(by)
        return out

    def _same_node(self, hit_id: str, node: str, batch: Sequence[HitMessage]) -> bool:
        """Whether stored hit `hit_id` (or one of `batch`, not yet inserted) is `node`'s: a
        node completes its own hits only."""
        for h in batch:
            if _stored_id(h) == hit_id:
                return h.node == node
        row = self.db.execute("SELECT node FROM hits WHERE hit_id = ?", [hit_id]).fetchone()
        return row is not None and bool(row[0] == node)

    def _complete(self, h: HitMessage) -> None:
        """Update the stored early hit `h.completes` with the pass's final read."""
        p, m = h.plate, h.match
        sets = {
            "plate_text": p.text, "plate_raw": p.raw, "plate_formatted": p.formatted,
            "country": p.country, "confidence": p.confidence,
            "direction": h.location.direction, "entry_id": m.entry_id,
            "entry_plate": m.entry_plate, "match_kind": m.kind, "match_distance": m.distance,
            "reason": m.reason, "reading": m.reading, "vehicle_type": h.vehicle_type,
            "vehicle_colour": h.vehicle_colour, "version": h.wire_version,
            "completed_by": h.hit_id,
        }  # fmt: skip
        if h.crop_jpeg:
            sets["crop_bytes"] = len(h.crop_jpeg)
        if h.scene_jpeg:
            sets["scene_bytes"] = len(h.scene_jpeg)
        assign = ", ".join(f"{k} = ?" for k in sets)
        self.db.conn.execute(
            f"UPDATE hits SET {assign}, revision = revision + 1 WHERE hit_id = ?",
            [*sets.values(), h.completes],
        )
        self.db.conn.execute("INSERT INTO hit_changes (hit_id) VALUES (?)", [h.completes])

    def _take_back(
        self, where: Sequence[tuple[int, int, int]], e: sqlite3.Error, not_stored: Any
    ) -> None:
        """After rows failed to commit, cut their pictures off again, so a full disk
        does not fill up further with every retry.  Only when SQLite said the disk is
        full (it then wrote no commit) and the rows are indeed not there: after an I/O
        error a commit may still come back from the log, and its pictures must stay."""
        code = getattr(e, "sqlite_errorcode", 0) & 0xFF
        if where and code == sqlite3.SQLITE_FULL and not_stored():
            self.images.undo(where)

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

    def record_seen(self, seen: Iterable[Seen]) -> dict[str, int]:
        """Write when each node and camera was last heard (and last sent a hit), and status.

        A node keeps at most `max_cameras_per_node` cameras: rows for more are not
        written.  Returns how many cameras of each node were refused so.
        """
        seen = list(seen)
        refused: dict[str, int] = {}
        if not seen:
            return refused
        t = format_time
        camera_rows: list[tuple[Any, ...]] = []
        added: dict[str, set[str]] = {}
        for s in seen:
            have = self._cameras.get(s.node, set())
            new = added.setdefault(s.node, set())
            for c in sorted(s.cameras):
                if c not in have and c not in new:
                    if len(have) + len(new) >= self.max_cameras_per_node:
                        refused[s.node] = refused.get(s.node, 0) + 1
                        continue
                    new.add(c)
                camera_rows.append((s.node, c, t(s.last_seen),
                                    t(s.last_hit_at) if s.last_hit_at and c in s.hit_cameras
                                    else None, self.agency_of_node(s.node) or ""))  # fmt: skip
        statuses: list[str | None] = []
        for s in seen:  # a status as last written is not written again
            if s.status is None or self._status_written.get(s.node) == s.status:
                statuses.append(None)
            else:
                statuses.append(json.dumps(s.status))
        with self.db.atomic():
            self.db.conn.executemany(
                "INSERT INTO nodes (node, last_seen, address, status, last_hit_at, agency)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(node) DO UPDATE SET"
                " agency = excluded.agency,"
                " last_seen = max(coalesce(last_seen, ''), excluded.last_seen),"
                " address = coalesce(excluded.address, address),"
                " status = coalesce(excluded.status, status),"
                " last_hit_at = coalesce(excluded.last_hit_at, last_hit_at)",
                [
                    (s.node, t(s.last_seen), s.address, status,
                     None if s.last_hit_at is None else t(s.last_hit_at),
                     self.agency_of_node(s.node) or "")
                    for s, status in zip(seen, statuses, strict=True)
                ],
            )  # fmt: skip
            self.db.conn.executemany(
                "INSERT INTO cameras (node, camera, last_seen, last_hit_at, agency)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(node, camera) DO UPDATE SET"
                " agency = excluded.agency,"
                " last_seen = max(coalesce(last_seen, ''), excluded.last_seen),"
                " last_hit_at = coalesce(excluded.last_hit_at, last_hit_at)",
                camera_rows,
            )
        for s, status in zip(seen, statuses, strict=True):
            if status is not None and s.status is not None:
                self._status_written[s.node] = s.status
        for node, cams in added.items():
            if cams:
                self._cameras.setdefault(node, set()).update(cams)
        return refused

    # ------------------------------------------------------------ retention

    def hit_lists(self) -> list[str | None]:
        """The watchlists the stored hits are of (None: hits that name none)."""
        names: list[str | None] = [
            r[0] for r in self.db.execute(_DISTINCT.format(col="watchlist", table="hits"))
        ]
        if self.db.execute("SELECT 1 FROM hits WHERE watchlist IS NULL LIMIT 1").fetchone():
            names.append(None)
        return names

    def delete_hits(
        self, watchlist: str | None, before: dt.datetime, limit: int = 500
    ) -> tuple[int, dict[int, int]]:
        """Delete up to `limit` hits of `watchlist` received before `before`, and their
        pictures' rows; returns (hits deleted, picture bytes given up in each segment)."""
        op = "IS" if watchlist is None else "="
        with self.db.atomic():
            ids = [r[0] for r in self.db.execute(
                f"SELECT hit_id FROM hits WHERE watchlist {op} ? AND received_at < ? "
                "ORDER BY received_at LIMIT ?",
                (watchlist, format_time(before), limit),
            )]  # fmt: skip
            if not ids:
                return 0, {}
            marks = ",".join("?" * len(ids))
            freed: dict[int, int] = {}
            for segment, length in self.db.execute(
                f"SELECT segment, sum(length) FROM hit_images WHERE hit_id IN ({marks}) "
                "GROUP BY segment",
                ids,
            ):
                freed[segment] = length
            self.db.execute(f"DELETE FROM hit_images WHERE hit_id IN ({marks})", ids)
            self.db.execute(f"DELETE FROM hit_changes WHERE hit_id IN ({marks})", ids)
            self.db.execute(f"DELETE FROM hits WHERE hit_id IN ({marks})", ids)
        return len(ids), freed

    def live_bytes(self, segment: int) -> int:
        """Bytes of `segment` that stored pictures are in."""
        row = self.db.execute(
            "SELECT coalesce(sum(length), 0) FROM hit_images WHERE segment = ?", (segment,)
        ).fetchone()
        return row[0]

    def move_pictures(self, segment: int, max_bytes: int) -> int:
        """Copy up to `max_bytes` of the pictures of `segment` to the end of the current
        one (durably, then the rows in one transaction); returns the bytes moved, 0 when
        none are left there.  The segment is then deleted by `drop_segment`."""
        if segment == self.images.segment:
            raise ValueError(f"segment {segment} is being written")
        rows: list[tuple[str, str, int, int]] = []
        total = 0
        for hid, kind, offset, length in self.db.execute(
            "SELECT hit_id, kind, offset, length FROM hit_images WHERE segment = ? "
            "ORDER BY offset LIMIT 1000",
            (segment,),
        ):
            if rows and total + length > max_bytes:
                break
            rows.append((hid, kind, offset, length))
            total += length
        if not rows:
            return 0
        blobs = [self.images.read(segment, offset, length) for _, _, offset, length in rows]
        where = self.images.append(blobs)
        try:
            with self.db.atomic():
                self.db.conn.executemany(
                    "UPDATE hit_images SET segment = ?, offset = ? "
                    "WHERE hit_id = ? AND kind = ? AND segment = ? AND offset = ?",
                    [(w[0], w[1], hid, kind, segment, offset)
                     for (hid, kind, offset, _), w in zip(rows, where, strict=True)],
                )  # fmt: skip
        except sqlite3.Error as e:
            first = rows[0]
            self._take_back(where, e, lambda: self.db.execute(
                "SELECT 1 FROM hit_images WHERE hit_id = ? AND kind = ? AND segment = ?",
                (first[0], first[1], segment)).fetchone() is not None)  # fmt: skip
            raise
        return total

    def roll_segment(self) -> int:
        """Send new pictures to a new segment (so the current one can be compacted)."""
        segment = max([*self.images.sizes(), *self.known_segments(), self.images.segment]) + 1
        self.images.open_for_append(segment)
        return segment

    def drop_segment(self, segment: int) -> int:
        """Delete a segment of ours no stored picture is in; returns the bytes freed."""
        if self.db.execute(
            "SELECT 1 FROM hit_images WHERE segment = ? LIMIT 1", (segment,)
        ).fetchone():
            raise ValueError(f"segment {segment} still holds pictures")
        freed = self.images.delete(segment)
        with self.db.atomic():
            self.db.execute("DELETE FROM segments WHERE segment = ?", (segment,))
        return freed

    def forget_nodes(self, before: dt.datetime) -> tuple[int, int]:
        """Delete nodes and cameras last heard before `before`; returns (nodes, cameras)."""
        when = format_time(before)
        stale = "coalesce(last_seen, '') < ?"
        cams_where = f"{stale} OR node IN (SELECT node FROM nodes WHERE {stale})"
        with self.db.atomic():
            nodes = [r[0] for r in self.db.execute(f"SELECT node FROM nodes WHERE {stale}",
                                                   (when,))]  # fmt: skip
            cams = self.db.execute(
                f"SELECT node, camera FROM cameras WHERE {cams_where}", (when, when)
            ).fetchall()
            self.db.execute(f"DELETE FROM cameras WHERE {cams_where}", (when, when))
            self.db.execute(f"DELETE FROM nodes WHERE {stale}", (when,))
        for node, camera in cams:
            self._cameras.get(node, set()).discard(camera)
        for node in nodes:
            self._cameras.pop(node, None)
            self._status_written.pop(node, None)
        return len(nodes), len(cams)

    def vacuum(self, pages: int = 2048) -> int:
        """Give up to `pages` free pages back to the system; returns how many are left."""
        if self.db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # made before it was set
            return 0
        self.db.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
        return self.db.execute("PRAGMA freelist_count").fetchone()[0]

    def write_status(self, key: str, value: dict[str, Any]) -> None:
        """Keep the collector's own state (its disk) where the operators' tools read it."""
        with self.db.atomic():
            self.db.execute(
                "INSERT OR REPLACE INTO collector_status VALUES (?, ?, ?)",
                (key, json.dumps(value), format_time(utc_now())),
            )

    # ------------------------------------------------------------ reading

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM hits").fetchone()[0]

    def hit_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT hit_id FROM hits ORDER BY rowid")]

    def image(self, hit_id: str, kind: str = "crop") -> bytes | None:
        """A hit's picture ("crop" or "scene") as JPEG bytes, or None."""
        place = picture_place(self.db.conn, hit_id, kind)
        return None if place is None else self.images.read(*place)

    def status(self, key: str) -> dict[str, Any] | None:
        """What the collector last wrote about itself under `key` (see `write_status`)."""
        try:
            row = self.db.execute(
                "SELECT value, at FROM collector_status WHERE key = ?", (key,)
            ).fetchone()
        except sqlite3.OperationalError:  # a database of an older collector
            return None
        return None if row is None else {**json.loads(row[0]), "at": row[1]}

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


def _row(h: HitMessage, received: str, agency: str, list_agency: str) -> tuple[Any, ...]:
    """A hit as a row of `hits`, in the order of `HIT_COLUMNS`."""
    loc, p, m = h.location, h.plate, h.match
    return (
        _stored_id(h), h.node, h.camera, format_time(h.seen_at), received,
        loc.lat, loc.lon, loc.road, loc.direction,
        p.text, p.raw, p.formatted, p.country, p.confidence,
        m.watchlist, m.entry_id, m.entry_plate, m.kind, m.distance, m.priority, m.reason,
        h.wire_version, len(h.crop_jpeg), len(h.scene_jpeg),
        m.reading, h.vehicle_type, h.vehicle_colour, 1 if h.completes else 0, h.hit_id
        if h.completes else "", agency, list_agency,
    )  # fmt: skip


def _stored_id(h: HitMessage) -> str:
    """The id `h` is stored under: a completion stands for the early hit it completes."""
    return h.completes or h.hit_id
