"""ByteTrack as the tracker's box association: ids for every box, our passes and votes kept."""

from __future__ import annotations

import pytest

from edge.core.types import PlateRead, PlateText
from edge.node import bytetrack
from edge.node.config import TrackConfig
from edge.node.track import PlateTracker

needs_trackers = pytest.mark.skipif(not bytetrack.available(),
                                    reason="the `trackers` package (bench extra) is absent")


def box_at(cx: float, cy: float, w: float = 100.0) -> tuple[float, float, float, float]:
    return (cx - w / 2, cy - w / 8, cx + w / 2, cy + w / 8)


def read(text: str, box: tuple[float, float, float, float], pts: float) -> PlateRead:
    return PlateRead(box=box, detection_confidence=0.8,
                     plate=PlateText(text, text, text, None, 0.9), pts=pts)


@needs_trackers
def test_every_box_has_an_id_from_its_first_frame() -> None:
    assoc = bytetrack.ByteTrackAssociation()
    first = assoc.assign([box_at(100, 100), box_at(600, 100)], [0.9, 0.3], 0.0)
    assert len(set(first)) == 2
    again = assoc.assign([box_at(102, 100), box_at(602, 100)], [0.9, 0.9], 0.1)
    assert again[0] == first[0]  # followed
    assert again[1] not in first  # a weak box starts no ByteTrack track: this one is new
    assert assoc.assign([], [], 0.2) == []
    assoc.reset()
    assert assoc.assign([box_at(104, 100)], [0.9], 0.3)[0] not in first + again


@needs_trackers
def test_bytetrack_association_keeps_our_passes_and_votes() -> None:
    tracker = PlateTracker(association=bytetrack.ByteTrackAssociation())
    events = []
    for i in range(10):  # one approaching, one receding, at once
        pts = 0.1 * i
        reads = [read("ABC123", box_at(200, 200 + 30 * i, 80 + 6 * i), pts),
                 read("KLM456", box_at(900, 600 - 30 * i, 120 - 6 * i), pts)]
        events += tracker.update(reads, pts)
    events += tracker.flush()
    assert sorted((e.text, e.frames) for e in events) == [("ABC123", 10), ("KLM456", 10)]


def test_the_association_is_a_config_key() -> None:
    assert TrackConfig().association == "plate"
    assert TrackConfig(association="bytetrack").association == "bytetrack"
    with pytest.raises(ValueError):
        TrackConfig(association="sort")  # type: ignore[arg-type]


@pytest.mark.skipif(bytetrack.available(), reason="the `trackers` package is installed")
def test_without_trackers_bytetrack_is_a_clear_error() -> None:
    with pytest.raises(bytetrack.AssociationUnavailable, match="trackers"):
        bytetrack.ByteTrackAssociation()
