"""A pass's event: one fused text, one country, the other readings carried."""

from __future__ import annotations

from edge.core.types import PlateRead, PlateText
from edge.node.track import PlateTracker


def passing(text: str, n: int = 6, night: bool = False) -> list[PlateRead]:
    reads = []
    for i in range(n):
        plate = PlateText(text, text, text, None, 0.9, (0.9,) * len(text))
        box = (300.0, 200.0 + 20 * i, 400.0 + 4 * i, 225.0 + 20 * i)
        reads.append(PlateRead(box=box, detection_confidence=0.9, plate=plate, pts=0.1 * i,
                               night=night))
    return reads


def event_of(reads: list[PlateRead], countries: list[str] | None = None) -> tuple[str, list[str]]:
    tracker = PlateTracker(countries=countries)
    for read in reads:
        assert tracker.update([read], read.pts) == []
    (event,) = tracker.flush()
    return event.text, event.readings


def test_a_slovak_plate_without_countries_keeps_its_text_and_carries_the_polish_one() -> None:
    text, readings = event_of(passing("KE123OZ"))
    assert text == "KE123OZ"
    assert "KE12302" in readings


def test_a_band_read_at_night_is_not_in_the_event() -> None:
    text, readings = event_of(passing("EABC123", night=True), ["LT"])
    assert text == "ABC123"
    assert readings == ["EABC123"]


def test_a_sighting_carries_the_other_readings_for_the_early_match() -> None:
    # the early hit is matched on a sighting: a Slovak KE123OZ listed as read must be
    # found there too, not only on the pass's final event
    tracker, shown = PlateTracker(), {}
    sighted = []
    for read in passing("KE123OZ"):
        tracker.update([read], read.pts)
        sighted += tracker.sightings(read.pts, shown)
    assert sighted and all(s.provisional for s in sighted)
    assert sighted[-1].text == "KE123OZ" and "KE12302" in sighted[-1].readings
