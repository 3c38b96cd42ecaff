"""A pass whose first reads were fragments is sighted again once its fused text is confident."""

from __future__ import annotations

from edge.core.types import PlateEvent, PlateRead, PlateText
from edge.node.track import PlateTracker


def read(text: str, pts: float, conf: float) -> PlateRead:
    return PlateRead(box=(250.0, 190.0, 350.0, 215.0), detection_confidence=1.0,
                     plate=PlateText(text, text, text, None, conf), pts=pts)


def test_a_pass_that_began_on_fragments_is_sighted_again_when_it_is_confident() -> None:
    tracker = PlateTracker(camera="booth")
    shown: dict = {}
    # a far plate read first as pieces, then whole and sure, the car still in view
    texts = [("201", 0.8), ("2019", 0.87), ("201393", 0.66), ("9C20339", 0.84),
             ("89C20320", 0.77), ("99C20339", 0.9)] + [("89C20339", 0.99)] * 20
    given: list[PlateEvent] = []
    for i, (text, conf) in enumerate(texts):
        pts = 0.11 * i
        tracker.update([read(text, pts, conf)], pts)
        given += tracker.sightings(pts, shown)
    whole = [e for e in given if e.text == "89C20339"]
    assert whole, [(e.text, e.frames, round(e.confidence, 2)) for e in given]
    # the early match's rule wants 2 agreeing reads at 0.6: a sighting offers that in view
    assert max(e.confidence for e in whole) >= 0.6, [
        (e.text, e.frames, round(e.confidence, 2)) for e in given]
    assert len(given) <= 16  # a step at a time, not a sighting a frame
