"""What the console reads: hits and their pictures, cameras and their health, watchlist entries.

The collector's writer is the only one to write `hits.db`; the console reads it with the
store's reader (`edge.collector.hits.HitReader`: a few read-only connections, one per
request at a time, from any thread) and shows each `StoredHit` with the agency that owns
its entry.  The master watchlists are read the same way (`WatchlistReader`), and written
only through `WatchlistStore`, whose change log the watchlist server sends on to the edges.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.collector.agencies import DEFAULT_AGENCY
from edge.collector.console.config import CameraPlace
from edge.collector.exchange.cameras import read_partner_cameras
from edge.collector.hits import HitQuery, HitReader, HitScope, StoredHit
from edge.collector.nodes import NodeHealth, judge_node
from edge.collector.readonly import ReadPool
from edge.collector.watchlist.files import entry_record
from edge.collector.watchlist.master import WatchlistReader
from edge.core.plates import normalise
from edge.core.status import CameraStatus, Problem
from edge.core.times import TimeOutOfRange, parse_iso, utc_now

# Columns of a hit as the console shows and exports it, in order.
HIT_FIELDS = (
    "hit_id", "priority", "seen_at", "received_at", "node", "camera", "road", "direction",
    "lat", "lon", "plate_text", "plate_formatted", "plate_raw", "country", "confidence",
    "watchlist", "entry_id", "entry_plate", "agency", "reason", "match_kind",
    "match_distance", "reading", "vehicle_type", "vehicle_colour", "revision",
    "crop_bytes", "scene_bytes", "camera_agency", "list_agency",
)  # fmt: skip
# A hit as the console sends it: its rowid, these columns of the stored hit, its agency
# (the entry's, as the list says).  `camera_agency` is the stored hit's `agency`: whose
# camera read it; `list_agency` whose list it matched.
_SHOWN = tuple(f for f in HIT_FIELDS if f not in ("agency", "camera_agency", "list_agency"))
_AGENCY_TTL_S = 60.0


class QueryError(ValueError):
    """A search the console cannot run as asked (a bad pattern, time or camera)."""


@dataclass
class Search:
    """A search of the hits: every field optional; times are ISO 8601 (UTC unless given)."""

    plate: str = ""  # a plate, or a partial one with ? (one character) and * (any run)
    since: str = ""
    until: str = ""
    camera: str = ""  # "node/camera", or "node" for all of a node's cameras
    watchlist: str = ""
    limit: int = 500

    def query(self) -> HitQuery:
        """The search as the hit store takes it (QueryError: a bad pattern or time)."""
        plate = pattern = None
        if self.plate.strip():
            text = search_pattern(self.plate)  # only A-Z0-9 ? * are left: no escaping
            if "?" in text or "*" in text:
                pattern = text
            else:
                plate = text
        since, until = (
            _parse_time(value.strip(), name) if value.strip() else None
            for name, value in (("since", self.since), ("until", self.until))
        )
        node = camera = None
        if self.camera.strip():
            node, _, camera = self.camera.strip().partition("/")
        return HitQuery(plate=plate, plate_pattern=pattern, since=since, until=until,
                        node=node, camera=camera or None,
                        watchlist=self.watchlist.strip() or None)  # fmt: skip


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
        return parse_iso(value)
    except TimeOutOfRange:  # 9999-12-31T23:00-05:00 is past the last year there is
        raise QueryError(f"{what}: {value!r} is out of range (years 1 to 9999)") from None
    except ValueError:
        raise QueryError(f"{what}: {value!r} is not an ISO 8601 time") from None


class ConsoleData:
    """Read hits (`hits_db`, pictures beside it) and watchlists (`watchlists_db`)."""

    def __init__(
        self,
        hits_db: Path,
        watchlists_db: Path,
        *,
        places: Sequence[CameraPlace] = (),
        images_dir: Path | None = None,
        default_agency: str = DEFAULT_AGENCY,
        exchange_db: Path | None = None,
    ):
        self.hits_db = Path(hits_db)
        # Partners' cameras an agreement shows us (edge.collector.exchange.cameras).
        self._exchange = ReadPool(exchange_db or self.hits_db.parent / "exchange.db", size=1)
        self.watchlists_db = Path(watchlists_db)
        # Whose the rows from before agencies (agency "") are.
        self.default_agency = default_agency
        self.hits = HitReader(self.hits_db, images_dir=images_dir)
        self._hits = self.hits.pool  # nodes and cameras (below) are read over it too
        self.master = WatchlistReader(self.watchlists_db, default_agency=default_agency)
        self.places = {(p.node, p.camera): p for p in places}
        self._agencies: dict[tuple[str, str], str] = {}
        self._agencies_at = 0.0
        self._lock = threading.Lock()
        # Where each camera stood in its latest hit that said so: (node, camera) -> place.
        self._seen_at: dict[tuple[str, str], dict[str, Any]] = {}
        self._seen_rowid = 0

    def close(self) -> None:
        self.hits.close()
        self.master.close()
        self._exchange.close()

    # ------------------------------------------------------------ hits

    def last_rowid(self) -> int:
        return self.hits.last_rowid()

    def hits_after(self, rowid: int, limit: int = 200) -> list[dict[str, Any]]:
        """Hits stored after `rowid`, oldest first, each with its `rowid`."""
        hits = self._shown(self.hits.after(rowid, limit))
        self._note_places(hits)
        return hits

    def last_change(self) -> int:
        return self.hits.last_change()

    def changed_after(self, seq: int, limit: int = 200) -> tuple[int, list[dict[str, Any]]]:
        """Hits updated after change `seq` (early hits completed), as shown, and the last
        change read (`seq` when none)."""
        changed = self.hits.changed_after(seq, limit)
        return (changed[-1][0] if changed else seq), self._shown([h for _, h in changed])

    def recent(
        self, hours: float, limit: int = 500, scope: HitScope | None = None
    ) -> list[dict[str, Any]]:
        """Hits received in the last `hours` (that `scope` sees), newest first."""
        since = utc_now() - dt.timedelta(hours=hours)
        return self._shown(self.hits.recent(since, limit, scope))

    def search(self, s: Search, scope: HitScope | None = None) -> list[dict[str, Any]]:
        """Hits that match `s` (and that `scope` sees), the most recently seen first."""
        return self._shown(self.hits.search(s.query(), s.limit, scope=scope))

    def hit(self, hit_id: str, scope: HitScope | None = None) -> dict[str, Any] | None:
        """The hit `hit_id`, as shown; None if there is none or `scope` does not see it."""
        found = self.hits.get(hit_id, scope)
        return None if found is None else self._shown([found])[0]

    def camera_owners(self) -> list[tuple[str, str, str]]:
        """(agency as stored, node, camera) of every camera known from heartbeats or hits."""
        with self._hits.connection() as db:
            return [(r[0], r[1], r[2]) for r in
                    db.execute("SELECT agency, node, camera FROM cameras")]  # fmt: skip

    def image(self, hit_id: str, kind: str) -> bytes | None:
        """A hit's picture ("crop" or "scene") as JPEG bytes, or None."""
        return self.hits.picture(hit_id, kind)

    def _shown(self, hits: Sequence[StoredHit]) -> list[dict[str, Any]]:
        """Hits as the console sends them, each with the agency that owns its entry."""
        agencies = self._agencies_of([(h.watchlist, h.entry_id) for h in hits])
        out = []
        for h in hits:
            camera_agency = h.agency or self.default_agency
            out.append({"rowid": h.rowid, **{k: getattr(h, k) for k in _SHOWN},
                        "agency": agencies.get((h.watchlist, h.entry_id), ""),
                        "camera_agency": camera_agency,
                        "list_agency": h.list_agency or camera_agency})  # fmt: skip
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
            for entry in self.master.entries_by_id(ids):
                if (entry.list, str(entry.id)) in found:
                    found[(entry.list, str(entry.id))] = entry.agency
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

        now = utc_now()
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
                         "last_hit_at": None, "agency": None})  # fmt: skip
        out = []
        for c in cams:
            key = (c["node"], c["camera"])
            node = nodes.get(c["node"])
            judgement = judged.get(c["node"]) or NodeHealth("late", ("never heard",))
            status = judgement.status
            state = status.cameras.get(c["camera"]) if status is not None else None
            health = _camera_health(c["camera"], judgement, state)
            place = dict(seen_at.get(key) or {})
            if not place and state is not None and state.place is not None:
                place = state.place.model_dump()  # as its heartbeat says, until a hit does
            conf = self.places.get(key)
            if conf is not None:
                place.update(lat=conf.lat, lon=conf.lon)
                if conf.label:
                    place["label"] = conf.label
            out.append({
                "node": c["node"], "camera": c["camera"], "id": f"{c['node']}/{c['camera']}",
                "agency": c["agency"],  # as stored ("": before agencies; None: config only)
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

    def partner_cameras(self, now: float | None = None) -> list[dict[str, Any]]:
        """Partners' cameras held by the exchange (each names the agency granted them:
        `receiver`); none without an exchange."""
        try:
            with self._exchange.connection() as db:
                return read_partner_cameras(db, now)
        except (FileNotFoundError, sqlite3.OperationalError):
            return []

    # ------------------------------------------------------------ watchlists

    def lists(self) -> list[dict[str, Any]]:
        try:
            lists = self.master.lists()
        except (FileNotFoundError, sqlite3.OperationalError):
            return []
        return [{"name": i.policy.name, "seq": i.seq, "match": i.policy.match,
                 "max_distance": i.policy.max_distance, "description": i.policy.description,
                 "entries": i.entries, "agency": i.agency} for i in lists]  # fmt: skip

    def entries(
        self, name: str, plate: str = "", after_id: int = 0, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Entries of list `name` after entry `after_id`, by id; `plate` a pattern to match."""
        pattern = ""
        if plate.strip():
            # A wildcard searches entry patterns as text: "*123" finds "AB123" and "?B123".
            text = plate.strip().upper()
            if not all(c.isalnum() or c in "?*" for c in text):
                raise QueryError("a plate to look for is letters, digits, ? and *")
            pattern = text if "?" in text or "*" in text else f"*{text}*"
        try:
            found = self.master.entries(name, after_id=after_id, pattern=pattern, limit=limit)
        except (FileNotFoundError, sqlite3.OperationalError):
            return []
        now = time.time()
        out = []
        for e in found:
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
