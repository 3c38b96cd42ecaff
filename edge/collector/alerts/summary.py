"""What an alert says about a hit: one flat, typed record, the same for webhooks and mail."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edge.collector.hits import StoredHit
from edge.core.link_protocol import HitMessage
from edge.core.times import format_time

# A hit as the collector's writer has it (a message just committed) or as stored.
HitLike = HitMessage | StoredHit


@dataclass(frozen=True)
class HitSummary:
    """A stored hit as it goes out: no pictures (a route may add the crop, apart)."""

    hit_id: str  # the id it is stored under (a completion: the early hit's)
    revision: int  # 0 as raised; 1 once the pass's final read completed it
    seen_at: str  # ISO 8601 UTC
    plate_text: str
    plate_formatted: str
    country: str | None
    list: str
    entry_id: str
    entry_plate: str
    match_kind: str
    priority: int
    reason: str
    node: str
    camera: str
    lat: float | None
    lon: float | None
    road: str
    direction: str
    vehicle_type: str
    vehicle_colour: str
    agency: str  # the camera's
    list_agency: str  # the list owner's

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HitSummary:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def summarise(hit: HitLike, agency: str, list_agency: str) -> HitSummary:
    """The summary of `hit`, a message just stored or a stored row."""
    if isinstance(hit, StoredHit):
        return HitSummary(
            hit_id=hit.hit_id, revision=hit.revision, seen_at=hit.seen_at,
            plate_text=hit.plate_text, plate_formatted=hit.plate_formatted,
            country=hit.country, list=hit.watchlist, entry_id=hit.entry_id,
            entry_plate=hit.entry_plate, match_kind=hit.match_kind, priority=hit.priority,
            reason=hit.reason, node=hit.node, camera=hit.camera, lat=hit.lat, lon=hit.lon,
            road=hit.road, direction=hit.direction, vehicle_type=hit.vehicle_type,
            vehicle_colour=hit.vehicle_colour, agency=agency, list_agency=list_agency,
        )  # fmt: skip
    p, m, loc = hit.plate, hit.match, hit.location
    return HitSummary(
        hit_id=hit.completes or hit.hit_id, revision=1 if hit.completes else 0,
        seen_at=format_time(hit.seen_at), plate_text=p.text,
        plate_formatted=p.formatted, country=p.country, list=m.watchlist,
        entry_id=m.entry_id, entry_plate=m.entry_plate, match_kind=m.kind,
        priority=m.priority, reason=m.reason, node=hit.node, camera=hit.camera,
        lat=loc.lat, lon=loc.lon, road=loc.road, direction=loc.direction,
        vehicle_type=hit.vehicle_type, vehicle_colour=hit.vehicle_colour, agency=agency,
        list_agency=list_agency,
    )  # fmt: skip
