"""What the console reads: hits and their pictures, cameras and their health, watchlist entries.

The collector's writer is the only one to write `hits.db`; the console reads it over
a few read-only connections of its own (one per request at a time, from any thread).
The master watchlists are read the same way, and written only through
`WatchlistStore`, whose change log the watchlist server sends on to the edges.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.collector.console.config import CameraPlace
from edge.collector.images import ImageLog
from edge.collector.nodes import NodeHealth, judge_node
from edge.collector.watchlist.files import entry_record
from edge.collector.watchlist.master import _ENTRY_COLUMNS
from edge.core.link_protocol import format_time
from edge.core.plates import normalise
from edge.core.status import CameraStatus, Problem
from edge.core.watchlist.entry import Entry

# Columns of a hit as the console shows and exports it, in order.
HIT_FIELDS = (
    "hit_id", "priority", "seen_at", "received_at", "node", "camera", "road", "direction",
    "lat", "lon", "plate_text", "plate_formatted", "plate_raw", "country", "confidence",
    "watchlist", "entry_id", "entry_plate", "agency", "reason", "match_kind",
    "match_distance", "crop_bytes", "scene_bytes",
)  # fmt: skip
_HIT_SELECT = (
    "SELECT rowid, hit_id, priority, seen_at, received_at, node, camera, road, direction, lat,"
    " lon, plate_text, plate_formatted, plate_raw, country, confidence, watchlist, entry_id,"
    " entry_plate, reason, match_kind, match_distance, crop_bytes, scene_bytes FROM hits"
)
_AGENCY_TTL_S = 60.0


class QueryError(ValueError):
    """A search the console cannot run as asked (a bad pattern, time or camera)."""


class _Pool:
    """Read-only SQLite connections to one file, lent to one thread at a time."""

    def __init__(self, path: Path, size: int = 4):
        self.path = Path(path)
        self._free: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._made = 0
        self._size = size
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._free.get_nowait()
        except queue.Empty:
            with self._lock:
                make = self._made < self._size
                if make:
                    self._made += 1
            if make:
                try:
                    conn = self._open()
                except BaseException:
                    with self._lock:
                        self._made -= 1
                    raise
            else:
                conn = self._free.get(timeout=30)
        try:
            yield conn
        finally:
            self._free.put(conn)

    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: not there (yet)")
        conn = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=5
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
            self._made = 0
        while not self._free.empty():
            self._free.get_nowait()


@dataclass
class Search:
    """A search of the hits: every field optional; times are ISO 8601 (UTC unless given)."""

    plate: str = ""  # a plate, or a partial one with ? (one character) and * (any run)
    since: str = ""
    until: str = ""
    camera: str = ""  # "node/camera", or "node" for all of a node's cameras
    watchlist: str = ""
    limit: int = 500

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if self.plate.strip():
            pattern = search_pattern(self.plate)
            if "?" in pattern or "*" in pattern:
                clauses.append("plate_text GLOB ?")  # only A-Z0-9 ? * are left: no escaping
            else:
                clauses.append("plate_text = ?")
            args.append(pattern)
        for name, op in (("since", ">="), ("until", "<")):
            value = getattr(self, name).strip()
            if value:
                clauses.append(f"seen_at {op} ?")
                args.append(format_time(_parse_time(value, name)))
        if self.camera.strip():
            node, _, camera = self.camera.strip().partition("/")
            clauses.append("node = ?")
            args.append(node)
            if camera:
                clauses.append("camera = ?")
                args.append(camera)
        if self.watchlist.strip():
            clauses.append("watchlist = ?")
            args.append(self.watchlist.strip())
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def search_pattern(raw: str) -> str:
    """A plate to search for as people type it ("wx 123*"): literal parts normalised as
    reads are (edge.core.plates), `?` one character and `*` any run kept; at least one
    letter or digit.  (Looser than a watchlist entry: a search also has a time and place.)"""
    parts = re.split(r"([?*])", raw.strip())
    out = "".join(p if p in ("?", "*") else normalise(p) for p in parts)
    out = re.sub(r"\*+", "*", out)
    if not any(c.isalnum() for c in out):
        raise QueryError(f"{raw!r}: a plate to search for needs a letter or digit")
    if len(out) > 32:
        raise QueryError(f"{raw!r}: longer than a plate")
    return out


def _parse_time(value: str, what: str) -> dt.datetime:
    if len(value) > 64:
        raise QueryError(f"{what}: longer than an ISO 8601 time")
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{what}: {value!r} is not an ISO 8601 time") from None
    t = t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t
    try:
        return t.astimezone(dt.UTC)  # 9999-12-31T23:00-05:00 is past the last year there is
    except OverflowError:
        raise QueryError(f"{what}: {value!r} is out of range (years 1 to 9999)") from None


class ConsoleData:
    """Read hits (`hits_db`, pictures beside it) and watchlists (`watchlists_db`)."""

    def __init__(
        self,
        hits_db: Path,
        watchlists_db: Path,
        *,
        places: Sequence[CameraPlace] = (),
        images_dir: Path | None = None,
    ):
        self.hits_db = Path(hits_db)
        self.watchlists_db = Path(watchlists_db)
        self._hits = _Pool(self.hits_db)
        self._lists = _Pool(self.watchlists_db, size=2)
        self.images = ImageLog(images_dir or self.hits_db.parent / "images", readonly=True)
        self.places = {(p.node, p.camera): p for p in places}
        self._agencies: dict[tuple[str, str], str] = {}
        self._agencies_at = 0.0
        self._lock = threading.Lock()
        # Where each camera stood in its latest hit that said so: (node, camera) -> place.
        self._seen_at: dict[tuple[str, str], dict[str, Any]] = {}
        self._seen_rowid = 0

    def close(self) -> None:
        self._hits.close()
        self._lists.close()
        self.images.close()

    # ------------------------------------------------------------ hits

    def last_rowid(self) -> int:
        with self._hits.connection() as db:
            return db.execute("SELECT coalesce(max(rowid), 0) FROM hits").fetchone()[0]

    def hits_after(self, rowid: int, limit: int = 200) -> list[dict[str, Any]]:
        """Hits stored after `rowid`, oldest first, each with its `rowid`."""
        with self._hits.connection() as db:
            rows = db.execute(
                f"{_HIT_SELECT} WHERE rowid > ? ORDER BY rowid LIMIT ?", (rowid, limit)
            ).fetchall()
        hits = self._records(rows)
        self._note_places(hits)
        return hits

    def recent(self, hours: float, limit: int = 500) -> list[dict[str, Any]]:
        """Hits received in the last `hours`, newest first."""
        since = format_time(dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours))
        with self._hits.connection() as db:
            rows = db.execute(
                f"{_HIT_SELECT} WHERE received_at >= ? ORDER BY rowid DESC LIMIT ?",
                (since, limit),
            ).fetchall()
        return self._records(rows)

    def search(self, s: Search) -> list[dict[str, Any]]:
        """Hits that match `s`, the most recently seen first."""
        where, args = s.where()
        with self._hits.connection() as db:
            rows = db.execute(
                f"{_HIT_SELECT}{where} ORDER BY seen_at DESC LIMIT ?", (*args, s.limit)
            ).fetchall()
        return self._records(rows)

    def hit(self, hit_id: str) -> dict[str, Any] | None:
        with self._hits.connection() as db:
            row = db.execute(f"{_HIT_SELECT} WHERE hit_id = ?", (hit_id,)).fetchone()
        return None if row is None else self._records([row])[0]

    def image(self, hit_id: str, kind: str) -> bytes | None:
        """A hit's picture ("crop" or "scene") as JPEG bytes, or None."""
        with self._hits.connection() as db:
            row = db.execute(
                "SELECT segment, offset, length FROM hit_images WHERE hit_id = ? AND kind = ?",
                (hit_id, kind),
            ).fetchone()
        return None if row is None else self.images.read(*row)

    def _records(self, rows: Sequence[sqlite3.Row]) -> list[dict[str, Any]]:
        out = []
        keys = [(r["watchlist"], r["entry_id"]) for r in rows]
        agencies = self._agencies_of(keys)
        for r in rows:
            h = dict(r)
            h["agency"] = agencies.get((r["watchlist"], r["entry_id"]), "")
            out.append(h)
        return out

    def _agencies_of(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The agency owning each (list, entry id), from the master watchlists (cached)."""
        now = time.monotonic()
        with self._lock:
            if now - self._agencies_at > _AGENCY_TTL_S or len(self._agencies) > 50_000:
                self._agencies.clear()
                self._agencies_at = now
            missing = {k for k in keys if k not in self._agencies}
        if not missing:
            return self._agencies
        found: dict[tuple[str, str], str] = {k: "" for k in missing}
        ids = [int(e) for _, e in missing if e.isdigit() and len(e) < 19]
        try:
            with self._lists.connection() as db:
                for i in range(0, len(ids), 500):
                    chunk = ids[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    for entry_id, name, agency in db.execute(
                        f"SELECT id, list, agency FROM entries WHERE id IN ({marks})", chunk
                    ):
                        if (name, str(entry_id)) in found:
                            found[(name, str(entry_id))] = agency
        except (FileNotFoundError, sqlite3.OperationalError):
            pass  # no master lists here (yet): the hits say what they can
        with self._lock:
            self._agencies.update(found)
            return dict(self._agencies)

    # ------------------------------------------------------------ cameras

    def _note_places(self, hits: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            for h in hits:
                if h["lat"] is not None and h["rowid"] > self._seen_rowid:
                    self._seen_at[(h["node"], h["camera"])] = {
                        "lat": h["lat"], "lon": h["lon"], "road": h["road"] or "",
                        "direction": h["direction"] or "",
                    }  # fmt: skip
                self._seen_rowid = max(self._seen_rowid, h["rowid"])

    def load_places(self) -> None:
        """Where each camera stood in its latest hit (once, at start; then from new hits)."""
        with self._hits.connection() as db:
            top = db.execute("SELECT coalesce(max(rowid), 0) FROM hits").fetchone()[0]
            rows = db.execute(
                "SELECT node, camera, lat, lon, road, direction FROM hits WHERE rowid IN"
                " (SELECT max(rowid) FROM hits WHERE lat IS NOT NULL AND rowid <= ?"
                " GROUP BY node, camera)",
                (top,),
            ).fetchall()
        with self._lock:
            for r in rows:
                self._seen_at.setdefault((r["node"], r["camera"]), {
                    "lat": r["lat"], "lon": r["lon"], "road": r["road"] or "",
                    "direction": r["direction"] or ""})  # fmt: skip
            self._seen_rowid = max(self._seen_rowid, top)

    def cameras(self, late_after_s: float | None = None) -> list[dict[str, Any]]:
        """Every camera known from heartbeats, hits or the config, with where it is and
        its health: 'live', 'late' (its node unheard) or 'unhealthy' (what is wrong)."""

        now = dt.datetime.now(dt.UTC)
        with self._hits.connection() as db:
            nodes = {r["node"]: dict(r) for r in db.execute("SELECT * FROM nodes")}
            cams = [dict(r) for r in db.execute("SELECT * FROM cameras ORDER BY node, camera")]
            # places from hits the live stream has not polled yet
            fresh = db.execute(
                "SELECT rowid, node, camera, lat, lon, road, direction FROM hits"
                " WHERE rowid > ? ORDER BY rowid", (self._seen_rowid,)).fetchall()
        self._note_places([dict(r) for r in fresh])
        # a node's status is read once, and one that cannot be is said so, never a failure
        judged = {name: judge_node(n, now, late_after_s) for name, n in nodes.items()}
        with self._lock:
            seen_at = dict(self._seen_at)
        known = {(c["node"], c["camera"]) for c in cams}
        for key in sorted(set(self.places) - known):
            cams.append({"node": key[0], "camera": key[1], "last_seen": None,
                         "last_hit_at": None})  # fmt: skip
        out = []
        for c in cams:
            key = (c["node"], c["camera"])
            node = nodes.get(c["node"])
            judgement = judged.get(c["node"]) or NodeHealth("late", ("never heard",))
            status = judgement.status
            state = status.cameras.get(c["camera"]) if status is not None else None
            health = _camera_health(c["camera"], judgement, state)
            place = dict(seen_at.get(key) or {})
            conf = self.places.get(key)
            if conf is not None:
                place.update(lat=conf.lat, lon=conf.lon)
                if conf.label:
                    place["label"] = conf.label
            out.append({
                "node": c["node"], "camera": c["camera"], "id": f"{c['node']}/{c['camera']}",
                "health": health[0], "problems": health[1],
                "state": state.state.value if state else None,
                "fps": state.fps if state else None,
                "last_seen": c["last_seen"], "last_hit_at": c["last_hit_at"],
                "node_last_seen": node["last_seen"] if node else None,
                "lat": place.get("lat"), "lon": place.get("lon"),
                "road": place.get("road", ""), "direction": place.get("direction", ""),
                "label": place.get("label", ""),
            })  # fmt: skip
        return out

    # ------------------------------------------------------------ watchlists

    def lists(self) -> list[dict[str, Any]]:
        try:
            with self._lists.connection() as db:
                rows = db.execute(
                    "SELECT l.name, l.seq, l.match, l.max_distance, l.description,"
                    " (SELECT count(*) FROM entries e WHERE e.list = l.name) AS entries"
                    " FROM lists l WHERE l.active ORDER BY l.name"
                ).fetchall()
        except (FileNotFoundError, sqlite3.OperationalError):
            return []
        return [dict(r) for r in rows]

    def entries(
        self, name: str, plate: str = "", after_id: int = 0, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Entries of list `name` after entry `after_id`, by id; `plate` a pattern to match."""
        sql = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE list = ? AND id > ?"
        args: list[Any] = [name, after_id]
        if plate.strip():
            # A wildcard searches entry patterns as text: "*123" finds "AB123" and "?B123".
            text = plate.strip().upper()
            if not all(c.isalnum() or c in "?*" for c in text):
                raise QueryError("a plate to look for is letters, digits, ? and *")
            sql += " AND pattern GLOB ?"
            args.append(text if "?" in text or "*" in text else f"*{text}*")
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        try:
            with self._lists.connection() as db:
                rows = db.execute(sql, args).fetchall()
        except (FileNotFoundError, sqlite3.OperationalError):
            return []
        now = time.time()
        out = []
        for r in rows:
            e = Entry(*r)
            rec = entry_record(e)
            rec["active"] = e.active(now)
            out.append(rec)
        return out


def _camera_health(
    camera: str, judgement: NodeHealth, state: CameraStatus | None
) -> tuple[str, list[str]]:
    """A camera's colour on the map: its node late makes it late; its own trouble, or the
    node's trouble that is not another camera's, makes it unhealthy."""
    if judgement.verdict == "late":
        return "late", judgement.reasons
    own = [str(p) for p in judgement.problems if p.camera == camera]
    node_wide = [*judgement.notes, *(str(p) for p in judgement.problems if p.camera is None)]
    if state is not None and not state.ok and not own:
        own = [str(Problem.of_camera(camera, state.state, state.detail))]
    if own or node_wide:
        return "unhealthy", own + node_wide
    return "live", []
