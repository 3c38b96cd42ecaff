"""The search's own source: the hits the collector holds, searched as the nodes search reads.

A pass that matched a list is a hit, not a read: the node sends it to the collector and
forgets it once acknowledged (edge.node.service keeps a read only for a pass that hit
no list), so no node search finds a listed plate.  `HitSearch.find` searches `hits.db`
for a query as a node searches its reads: the same modes (exact, `GLOB` for `?`/`*`,
fuzzy by `plate_distance`, the watchlist distance the nodes judge by), the same
[since, until], cameras and area (the hit's own place), newest first, at most
`max_rows`.  Scope as the console's (edge.collector.hits.HitScope), but with search's
grant: hits the agency's cameras read, hits on its lists, and hits read on partners' nodes
an agreement lets it search (`Agreements.may_search`, which grants whole nodes), each
hit judged by the agency stored with it (its camera's, when it was read).  One pass that
hit several lists is one result, its lists named (sorted); the crop comes from the
collector's image log.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.collector.agreements import Agreements
from edge.collector.hits import HIT_COLUMNS, HitReader, StoredHit
from edge.core.errors import ProtocolError
from edge.core.search import MAX_CROP_BYTES, SearchQuery, SearchRead
from edge.core.times import format_time, parse_iso
from edge.core.watchlist.distance import plate_distance

_COLUMNS = ", ".join(HIT_COLUMNS)
_SQL_VARS = 900


@dataclass(frozen=True)
class FoundHit:
    """A pass the collector holds as a hit (or several: one per list it matched)."""

    node: str
    agency: str  # the camera's
    hit_ids: tuple[str, ...]
    watchlists: tuple[str, ...]
    read: SearchRead


def pass_key(node: str, camera: str, seen_at: str, text: str) -> tuple[str, str, str, str]:
    """What makes one pass one: where, when (as the wire writes it) and what was read."""
    return (node, camera, seen_at, text)


class HitSearch:
    """Search the hits of `db_path` for an agency (images beside it, as the collector's).

    `agreements()` the agreements in force; `default_agency` whose the rows of before
    agencies (agency "") are."""

    def __init__(self, db_path: Path, *, default_agency: str,
                 agreements: Callable[[], Agreements] = Agreements.empty,
                 agency_of_node: Callable[[str], str | None] = lambda node: None,
                 images_dir: Path | None = None):  # fmt: skip
        self.reader = HitReader(Path(db_path), images_dir=images_dir, connections=2)
        self.default_agency = default_agency
        self._agreements = agreements
        self._agency_of_node = agency_of_node

    def close(self) -> None:
        self.reader.close()

    def scope(self, agency: str) -> Callable[[StoredHit], bool]:
        """Whether a hit is `agency`'s to search: its cameras', on its lists, or read on a
        partner's node an agreement in force lets it search."""
        agreements = self._agreements()
        mine = {agency, ""} if agency == self.default_agency else {agency}
        granted: dict[tuple[str, str], bool] = {}

        def allows(h: StoredHit) -> bool:
            if h.agency in mine or h.list_agency == agency:
                return True
            key = (h.agency or self.default_agency, h.node)
            if key not in granted:
                granted[key] = agreements.may_search(agency, *key)
            return granted[key]

        return allows

    def find(self, q: SearchQuery, agency: str, nodes: Iterable[str] = ()
             ) -> tuple[list[FoundHit], int]:  # fmt: skip
        """The newest `q.max_rows` passes matching `q` in `agency`'s scope (newest first;
        only at `nodes` when given), and how many matched.  No hits database: none."""
        try:
            self.reader.check()
        except FileNotFoundError:
            return [], 0
        allows = self.scope(agency)
        where = ["seen_at >= ?", "seen_at <= ?"]
        args: list[Any] = [format_time(q.since), format_time(q.until)]
        for column, values in (("camera", tuple(q.cameras)), ("node", tuple(nodes))):
            if values:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                args.extend(values)
        if q.area is not None:
            where.append("lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?")
            args += [q.area[0], q.area[2], q.area[1], q.area[3]]
        with self.reader.pool.connection() as db:
            plates = self._plates(db, q, where, args)
            hits: list[StoredHit] = []
            for part in _batches(plates, _SQL_VARS - len(args) - 64):
                cond = " AND ".join([*where, f"plate_text IN ({','.join('?' * len(part))})"])
                rows = db.execute(f"SELECT rowid, {_COLUMNS} FROM hits WHERE {cond}",
                                  [*args, *part]).fetchall()  # fmt: skip
                hits += [h for h in (StoredHit(*row) for row in rows) if allows(h)]
        passes: dict[tuple[str, str, str, str], list[StoredHit]] = {}
        for h in sorted(hits, key=lambda h: (h.seen_at, h.rowid), reverse=True):
            key = pass_key(h.node, h.camera, format_time(parse_iso(h.seen_at)), h.plate_text)
            passes.setdefault(key, []).append(h)
        kept = list(passes.values())[: q.max_rows]
        return [r for r in (self._found(group) for group in kept) if r is not None], len(passes)

    @staticmethod
    def _plates(db: sqlite3.Connection, q: SearchQuery, where: list[str],
                args: list[Any]) -> list[str]:  # fmt: skip
        """The plates stored that the query's pattern matches (hits hold few: listed ones);
        scope is judged on the hits of these plates."""
        if q.mode == "exact":
            return [q.pattern]
        cond = " AND ".join(where)
        if q.mode == "wildcard":  # GLOB's ? and * are the query's, as on the nodes
            cond += " AND plate_text GLOB ?"
            args = [*args, q.pattern]
        rows = db.execute(f"SELECT DISTINCT plate_text FROM hits WHERE {cond}", args)
        plates = sorted({r[0] for r in rows})
        if q.mode == "fuzzy":
            plates = [p for p in plates if plate_distance(q.pattern, p, q.max_distance) is not None]
        return plates

    def _found(self, group: list[StoredHit]) -> FoundHit | None:
        h = next((g for g in group if g.crop_bytes), group[0])
        try:
            crop = self.reader.picture(h.hit_id, "crop") or b""
        except (OSError, ValueError):
            crop = b""
        try:
            read = SearchRead(
                text=h.plate_text, formatted=h.plate_formatted or h.plate_text,
                country=(h.country or "")[:8], confidence=min(1.0, max(0.0, h.confidence or 0)),
                seen_at=parse_iso(h.seen_at), camera=h.camera, direction=h.direction or "",
                vehicle_type=h.vehicle_type or "", vehicle_colour=h.vehicle_colour or "",
                lat=h.lat, lon=h.lon,
                crop_jpeg=crop if len(crop) <= MAX_CROP_BYTES else b"",
            )  # fmt: skip
        except (ProtocolError, ValueError, TypeError):
            return None
        return FoundHit(h.node, h.agency or self.default_agency,
                        tuple(g.hit_id for g in group),
                        tuple(sorted({g.watchlist for g in group})), read)  # fmt: skip


def _batches(items: list[str], size: int) -> Iterable[list[str]]:
    size = max(1, size)
    for i in range(0, len(items), size):
        yield items[i : i + size]
