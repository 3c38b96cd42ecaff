"""Following plates across frames and emitting one event per vehicle pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from edge.core.types import PlateEvent, PlateRead, PlateText
from edge.node.track import PlateTracker, Point, direction


def make_read(
    text: str,
    box: tuple[float, float, float, float],
    pts: float,
    conf: float = 0.9,
    night: bool = False,
) -> PlateRead:
    plate = PlateText(text, text, text, None, conf)
    return PlateRead(box=box, detection_confidence=1.0, plate=plate, pts=pts, night=night)


def box_at(cx: float, cy: float, w: float = 100.0) -> tuple[float, float, float, float]:
    return (cx - w / 2, cy - w / 8, cx + w / 2, cy + w / 8)


def run(tracker: PlateTracker, frames: Sequence[tuple[float, list[PlateRead]]]) -> list[PlateEvent]:
    events: list[PlateEvent] = []
    for pts, reads in frames:
        events += tracker.update(reads, pts)
    return events + tracker.flush()


def run_without_flush(
    tracker: PlateTracker, frames: Sequence[tuple[float, list[PlateRead]]]
) -> list[PlateEvent]:
    return [e for pts, reads in frames for e in tracker.update(reads, pts)]


def approaching(text: str, start: float, n: int = 10, x: float = 300.0) -> list[PlateRead]:
    """A plate coming towards the camera: moving down the frame and growing."""
    return [make_read(text, box_at(x, 200 + 30 * i, 80 + 6 * i), start + 0.1 * i) for i in range(n)]


def by_frame(*tracks: list[PlateRead]) -> list[tuple[float, list[PlateRead]]]:
    frames: dict[float, list[PlateRead]] = {}
    for reads in tracks:
        for read in reads:
            frames.setdefault(round(read.pts, 6), []).append(read)
    return sorted(frames.items())


def test_one_car_over_ten_frames_is_one_event() -> None:
    tracker = PlateTracker(camera="cam-1", countries=["LT"])
    events = []
    for read in approaching("ABC123", start=5.0):
        events += tracker.update([read], read.pts)
        assert tracker.active == 1
    assert events == []
    events += tracker.update([], 5.9 + 0.5)  # within max_age: still live
    assert events == [] and tracker.active == 1
    events += tracker.update([], 5.9 + 1.01)
    assert tracker.active == 0
    (event,) = events
    assert (event.text, event.formatted, event.country) == ("ABC123", "ABC 123", "LT")
    assert (event.first_seen, event.last_seen) == (5.0, 5.9)
    assert event.frames == 10
    assert event.direction == "approaching"
    assert event.camera == "cam-1"
    assert event.best_box is not None and 0 < event.confidence <= 1


def test_two_cars_at_once_are_two_events() -> None:
    left = approaching("ABC123", start=0.0, x=200)
    right = [
        make_read("KLM456", box_at(900, 600 - 30 * i, 120 - 6 * i), 0.1 * i) for i in range(10)
    ]
    events = run(PlateTracker(), by_frame(left, right))
    assert sorted((e.text, e.direction, e.frames) for e in events) == [
        ("ABC123", "approaching", 10),
        ("KLM456", "receding", 10),
    ]


def test_noisy_reads_agree_on_the_majority() -> None:
    reads = approaching("ABC123", start=0.0, n=12)
    noisy = ["ABC123", "A8C123", "ABC123", "ABC128", "ABC123", "#", "ABC123", "QQQ777",
             "ABC123", "", "ABC123", "ABC123"]  # fmt: skip
    reads = [make_read(t, r.box, r.pts) for t, r in zip(noisy, reads, strict=True)]
    (event,) = run(PlateTracker(), by_frame(reads))
    assert event.text == "ABC123"
    assert event.frames == 12
    assert ("A8C123", 1) in event.alternatives
    assert ("QQQ777", 1) in event.alternatives  # a confident misread where the plate is


def test_a_new_plate_where_the_last_one_left_is_a_new_track() -> None:
    gone = [make_read("ABC123", box_at(300 + 10 * i, 500), 0.1 * i) for i in range(10)]
    new = [make_read("XYZ789", box_at(500, 500), 1.3 + 0.1 * i) for i in range(5)]
    events = run(PlateTracker(), by_frame(gone, new))
    assert [(e.text, e.frames) for e in events] == [("ABC123", 10), ("XYZ789", 5)]


def test_time_going_back_ends_all_tracks() -> None:
    tracker = PlateTracker()
    run_without_flush(tracker, by_frame(approaching("ABC123", start=10.0, n=3)))
    (event,) = tracker.update([], 0.0)  # the source restarted
    assert event.text == "ABC123" and tracker.active == 0


def test_fast_plate_with_irregular_frames_stays_one_track() -> None:
    # 25 plate widths a second sideways: no overlap at all between samples.
    times = [0.0, 0.07, 0.25, 0.33, 0.5, 0.58, 0.71, 0.9]
    reads = [make_read("ABC123", box_at(100 + 1500 * t, 400, 60), t) for t in times]
    tracker = PlateTracker()
    events = []
    for read in reads:
        events += tracker.update([read], read.pts)
        assert tracker.active == 1
    (event,) = events + tracker.flush()
    assert event.frames == len(times)
    assert event.direction == "right"


def test_gap_shorter_than_max_age_keeps_the_track() -> None:
    reads = approaching("ABC123", start=0.0, n=10)
    frames = (
        by_frame(reads[:5])
        + [(0.9, [])]
        + by_frame([make_read("ABC123", r.box, r.pts + 0.8) for r in reads[5:]])
    )
    (event,) = run(PlateTracker(max_age_s=1.0), frames)
    assert event.frames == 10
    assert (event.first_seen, event.last_seen) == (0.0, 1.7)


def test_gap_longer_than_max_age_ends_the_track() -> None:
    tracker = PlateTracker(max_age_s=1.0, dedupe_s=0.0)
    first = approaching("ABC123", start=0.0, n=5)
    again = [make_read("ABC123", r.box, r.pts + 3.0) for r in first]
    ended = run_without_flush(tracker, by_frame(first, again))
    assert [(e.first_seen, e.last_seen) for e in ended] == [(0.0, 0.4)]
    assert tracker.active == 1
    (last,) = tracker.flush()
    assert (last.first_seen, last.last_seen) == (3.0, 3.4)


def test_flush_ends_every_track() -> None:
    tracker = PlateTracker()
    cars = [approaching(t, start=0.0, n=3, x=x) for t, x in [("AAA111", 100), ("BBB222", 600),
                                                          ("CCC333", 1100)]]  # fmt: skip
    assert run_without_flush(tracker, by_frame(*cars)) == []
    assert tracker.active == 3
    assert sorted(e.text for e in tracker.flush()) == ["AAA111", "BBB222", "CCC333"]
    assert tracker.active == 0 and tracker.flush() == []


def test_a_refound_plate_is_not_reported_twice() -> None:
    first = approaching("ABC123", start=0.0, n=5)
    # Lost for 1.5 s (longer than max_age), then found again a little further on.
    again = [make_read("ABC123", box_at(300, 400 + 30 * i, 110), 1.9 + 0.1 * i) for i in range(5)]
    assert len(run(PlateTracker(), by_frame(first, again))) == 1
    assert len(run(PlateTracker(dedupe_s=0.0), by_frame(first, again))) == 2
    # The same plate well after dedupe_s is another pass.
    later = [make_read("ABC123", r.box, r.pts + 20.0) for r in first]
    assert len(run(PlateTracker(), by_frame(first, later))) == 2


def test_too_few_reads_emit_nothing_unless_one_is_very_sure() -> None:
    unsure = [make_read("ABC123", box_at(300, 300), 0.0, conf=0.6)]
    assert run(PlateTracker(min_reads=2), by_frame(unsure)) == []
    sure = [make_read("ABC123", box_at(300, 300), 0.0, conf=0.95)]
    (event,) = run(PlateTracker(min_reads=2), by_frame(sure))
    assert event.frames == 1 and event.direction == "unknown"


def test_night_is_the_majority_of_reads() -> None:
    reads = [make_read("ABC123", box_at(300, 300), 0.1 * i, night=i < 3) for i in range(5)]
    assert run(PlateTracker(), by_frame(reads))[0].night
    reads = [make_read("ABC123", box_at(300, 300), 0.1 * i, night=i < 2) for i in range(5)]
    assert not run(PlateTracker(), by_frame(reads))[0].night


def test_direction_from_trajectory() -> None:
    def path(dx: float, dy: float, dw: float) -> list[Point]:
        return [Point(0.1 * i, 500 + dx * i, 400 + dy * i, 100 + dw * i, 25) for i in range(9)]

    assert direction(path(0, 10, 8)) == "approaching"
    assert direction(path(0, 0, 8)) == "approaching"
    assert direction(path(0, -10, -8)) == "receding"
    assert direction(path(40, 0, 0)) == "right"
    assert direction(path(-40, 2, 1)) == "left"
    assert direction(path(1, -1, 0.5)) == "stationary"
    assert direction(path(0, 10, 8)[:2]) == "unknown"


def test_memory_stays_bounded_for_a_parked_car() -> None:
    tracker = PlateTracker(max_history=30)
    for i in range(10_000):
        jitter = (i % 3) - 1
        tracker.update([make_read("ABC123", box_at(300 + jitter, 300), i * 0.1)], i * 0.1)
    (track,) = tracker.tracks
    assert track.seen == 10_000
    assert len(track.reads) == 30
    assert len(track.trajectory) <= 30 + 10
    assert len(track.voting_reads()) <= 30 + 5
    (event,) = tracker.flush()
    assert event.direction == "stationary"
    assert (event.first_seen, event.last_seen) == (0.0, pytest.approx(999.9))


def test_two_cars_in_a_row_with_plates_two_characters_apart_are_two_events() -> None:
    tracker = PlateTracker(max_age_s=0.5, min_reads=2)
    events = []
    for i in range(10):  # the first car, then a gap of 1.5 s, then the second at the same place
        events += tracker.update([make_read("RK906AJ", (100, 100 + i, 180, 120 + i), i * 0.1)],
                                 i * 0.1)
    for i in range(10):
        pts = 2.5 + i * 0.1
        events += tracker.update([make_read("RK026AJ", (100, 100 + i, 180, 120 + i), pts)], pts)
    events += tracker.flush()
    assert [e.text for e in events] == ["RK906AJ", "RK026AJ"]


# --------------------------------------------------------------------------- passes


def towards(text: str, start: float, n: int = 10, x: float = 300.0,
            vehicle: bool = False) -> list[PlateRead]:
    """A car coming at the camera from the same far point as every car before it: its
    plate grows from 40 to 112 px wide and moves down the frame (a drive-by)."""
    reads = []
    for i in range(n):
        w = 40 + 8 * i
        read = make_read(text, box_at(x, 200 + 25 * i, w), start + 0.1 * i)
        if vehicle:
            cx, cy = x, 200 + 25 * i
            read.vehicle_box = (cx - 1.5 * w, cy - 1.5 * w, cx + 1.5 * w, cy + 0.3 * w)
        reads.append(read)
    return reads


def test_two_cars_0_2_s_apart_with_plates_one_character_apart_are_two_events() -> None:
    # The second car shows 0.2 s after the first left, far back where the first came from.
    first = towards("AB123CD", start=0.0)
    second = towards("AB128CD", start=1.1)
    events = run(PlateTracker(), by_frame(first, second))
    assert [(e.text, e.frames) for e in events] == [("AB123CD", 10), ("AB128CD", 10)]


def test_a_plate_hidden_for_0_3_s_mid_pass_is_one_event() -> None:
    # Crossing the picture at 25 plate widths a second, hidden behind a post for 0.3 s,
    # and read a little differently when it comes out (look-alikes, a band glyph).
    texts = ["AB123CD"] * 6 + ["AB1Z3CD", "EAB123CD"] + ["AB123CD"] * 6
    times = [0.1 * i for i in range(6)] + [0.9 + 0.1 * i for i in range(8)]
    reads = [make_read(t, box_at(100 + 1500 * p, 400, 60), p)
             for t, p in zip(texts, times, strict=True)]
    frames = by_frame(reads[:6]) + [(0.6, []), (0.7, []), (0.8, [])] + by_frame(reads[6:])
    (event,) = run(PlateTracker(), frames)
    assert event.text == "AB123CD"
    assert (event.first_seen, event.last_seen) == (0.0, pytest.approx(1.6))
    assert event.frames == 14


def test_two_plates_side_by_side_are_two_events() -> None:
    # Two cars of one fleet in two lanes, their plates a character apart.
    left = approaching("AB123CD", start=0.0, x=300)
    right = approaching("AB124CD", start=0.0, x=700)
    events = run(PlateTracker(), by_frame(left, right))
    assert sorted((e.text, e.frames) for e in events) == [("AB123CD", 10), ("AB124CD", 10)]


def test_two_overlapping_tracks_of_one_plate_are_one_event() -> None:
    # One plate followed twice for half a second (two boxes of it, a third of a plate
    # apart), one track reading an O for its D: one pass, voted over all its reads.
    one = [make_read("OS749ZA", box_at(300 + 100 * p, 500), p, conf=0.8)
           for p in (0.1 * i for i in range(11))]
    two = [make_read("DS749ZA", box_at(330 + 100 * p, 500), p, conf=0.95)
           for p in (0.5 + 0.1 * i for i in range(16))]
    (event,) = run(PlateTracker(), by_frame(one, two))
    assert event.text == "DS749ZA"
    assert (event.first_seen, event.last_seen) == (0.0, pytest.approx(2.0))


def test_a_plate_back_at_the_same_place_with_another_text_is_a_new_pass() -> None:
    # A car waits at a barrier and leaves; the next one pulls up to the same place.
    first = [make_read("AB123CD", box_at(500, 400), 0.1 * i) for i in range(10)]
    second = [make_read("XY987ZW", box_at(502, 401), 1.2 + 0.1 * i) for i in range(10)]
    events = run(PlateTracker(), by_frame(first, second))
    assert [(e.text, e.frames) for e in events] == [("AB123CD", 10), ("XY987ZW", 10)]
    # ... also where its plate is a character off the first one's
    second = [make_read("AB128CD", box_at(502, 401), 1.2 + 0.1 * i) for i in range(10)]
    events = run(PlateTracker(), by_frame(first, second))
    assert [(e.text, e.frames) for e in events] == [("AB123CD", 10), ("AB128CD", 10)]


def test_a_plate_belongs_to_its_vehicle() -> None:
    # A car passes right in front of a parked one; the moving plate's box lands where the
    # parked plate's would be, but on another vehicle.
    parked = [make_read("AB123CD", box_at(500, 400), 0.1 * i) for i in range(10)]
    for read in parked:
        read.vehicle_box = (350, 250, 650, 450)
    passing = [make_read("AB123CF", box_at(510, 402), 1.0 + 0.1 * i) for i in range(5)]
    for read in passing:
        read.vehicle_box = (440, 320, 1100, 480)
    frames = by_frame(parked) + by_frame(passing)
    events = run(PlateTracker(dedupe_s=0.0), frames)
    assert sorted((e.text, e.frames) for e in events) == [("AB123CD", 10), ("AB123CF", 5)]
    # without vehicle boxes the passing plate continues the parked one's track
    for read in parked + passing:
        read.vehicle_box = None
    (event,) = run(PlateTracker(dedupe_s=0.0), frames)
    assert event.frames == 15


def test_two_cars_in_a_row_with_vehicles_detected_are_two_events() -> None:
    first = towards("AB123CD", start=0.0, vehicle=True)
    second = towards("AB128CD", start=1.1, vehicle=True)
    events = run(PlateTracker(), by_frame(first, second))
    assert [e.text for e in events] == ["AB123CD", "AB128CD"]


def test_memory_of_plates_seen_together_stays_bounded() -> None:
    tracker = PlateTracker()
    for i in range(300):  # a busy scene: a new plate beside a parked one every frame
        pts = 0.1 * i
        reads = [make_read("AB123CD", box_at(300, 300), pts),
                 make_read(f"XY{i:03d}ZW", box_at(900, 300 + (i % 2) * 200), pts)]
        tracker.update(reads, pts)
    parked = max(tracker.tracks, key=lambda t: t.seen)
    assert parked.seen == 300
    assert len(parked.together) <= 32


def test_a_pass_in_view_is_sighted_when_its_fused_text_changes_and_not_again() -> None:
    tracker = PlateTracker(camera="cam-1")
    shown: dict[int, tuple[str, int]] = {}
    texts = ["AB123CD"] * 5 + ["AB128CD"] * 12  # a car stopped at the booth, read better later
    sighted: list[list[PlateEvent]] = []
    for i, text in enumerate(texts):
        pts = 0.1 * i
        assert tracker.update([make_read(text, box_at(300, 200), pts, 0.99)], pts) == []
        sighted.append(tracker.sightings(pts, shown))
    # the first read, then as a second and a third agree, then the new text once
    given = [(i, e.text, e.frames) for i, s in enumerate(sighted) for e in s]
    assert given[:3] == [(0, "AB123CD", 1), (1, "AB123CD", 2), (2, "AB123CD", 3)]
    assert [t for _, t, _ in given[3:]] == ["AB128CD"] * len(given[3:]) and len(given) <= 6
    assert all(e.provisional and e.camera == "cam-1" for s in sighted for e in s)
    (final,) = tracker.update([], 5.0)  # gone: the final event, of the same track
    assert not final.provisional and final.text == "AB128CD"
    assert {e.track_id for s in sighted for e in s} == {final.track_id}
    assert tracker.sightings(5.0, shown) == [] and shown == {}


def test_a_fragment_read_where_a_plate_was_does_not_stretch_its_pass() -> None:
    # Side by side: once the left car has gone, its lane's blurred road is read as "2"
    # where its plate was, while the right lane's car is still in view; the left pass's
    # event must not cover that moment, or it spans the right car's time.
    tracker = PlateTracker(max_age_s=0.5)
    left = approaching("RK457AS", start=0.0, n=10)
    junk = make_read("2", box_at(300, 200 + 30 * 10, 80 + 6 * 10), 1.0, conf=0.28)
    events = run(tracker, by_frame(left, [junk]))
    assert [(e.text, e.first_seen, e.last_seen) for e in events] == [
        ("RK457AS", 0.0, pytest.approx(0.9))]


def read_badly_then_surely() -> list[PlateRead]:
    """A car ahead through rain: from afar no two reads agree (a band glyph, look-alikes),
    then it is lost for two frames (1.8 and 1.9 s) and comes back where it should be, read
    surely: reads[:9] before the gap, reads[9:] after it."""
    far = ["EJ745", "1EJ70LH", "1EJ729LYI", "HEJ728LY", "NEJ728LT", "NEJ728LY", "EJ720LTE",
           "NEJ720LT", "NEJ720LY"]
    near = ["JE3728LY", "JEJ720LY", "E3728LY", "EJ720LY"] + ["EJ728LY"] * 8
    reads = [make_read(t, box_at(700 - 60 * p, 530, 40), p, conf=0.8)
             for t, p in zip(far, (0.6 + 0.1 * i for i in range(9)), strict=True)]
    return reads + [make_read(t, box_at(700 - 60 * p + 10, 535 + 10 * (p - 2), 44 + 4 * (p - 2)),
                              p, conf=0.88 if i < 4 else 0.99)
                    for i, (t, p) in enumerate(zip(near, (2.0 + 0.1 * i for i in range(12)),
                                                   strict=True))]


def test_a_plate_read_badly_from_afar_then_surely_up_close_is_one_event() -> None:
    reads = read_badly_then_surely()
    frames = by_frame(reads[:9]) + [(1.8, []), (1.9, [])] + by_frame(reads[9:])
    (event,) = run(PlateTracker(), frames)
    assert event.text == "EJ728LY"
    assert event.first_seen == pytest.approx(0.6)
    # ... but a clearly different plate there (three characters off) is another car's
    other = [replace(r, plate=PlateText("KX728PR", "KX728PR", "KX728PR", None, 0.99))
             for r in reads[9:]]
    frames = by_frame(reads[:9]) + [(1.8, []), (1.9, [])] + by_frame(other)
    first, second = run(PlateTracker(), frames)
    assert second.text == "KX728PR" and first.last_seen < 1.8


def test_a_moving_plate_lost_a_frame_and_read_a_character_otherwise_is_one_event() -> None:
    # At night a short plate reads FME50 for half a second, is lost for a frame, and comes
    # back right where its motion puts it reading FWE50: one car, not the car behind.
    reads = approaching("FME50", start=0.0, n=6) + approaching("FWE50", start=0.0, n=16)[7:]
    frames = by_frame(reads[:6]) + [(0.6, [])] + by_frame(reads[6:])
    (event,) = run(PlateTracker(), frames)
    assert event.text == "FWE50"
    assert event.frames == 15


def test_a_pass_that_ends_without_an_event_of_its_own_is_told_apart_from_one_merged() -> None:
    # early hits are raised on a pass's sightings and completed by its final event: a
    # pass that never gets one must say so, or its hits wait for ever
    first = approaching("ABC123", start=0.0, n=5)
    again = [make_read("ABC123", box_at(300, 400 + 30 * i, 110), 1.9 + 0.1 * i) for i in range(5)]
    tracker = PlateTracker()
    (event,) = run(tracker, by_frame(first, again))
    assert tracker.take_closed() == [event.track_id + 1]  # the duplicate of the first pass
    assert tracker.take_closed() == [] and event.absorbed == []

    tracker = PlateTracker(min_reads=2)
    assert run(tracker, by_frame([make_read("ABC123", box_at(300, 300), 0.0, conf=0.6)])) == []
    assert tracker.take_closed() == [1]  # too few reads

    # a pass taken up by the track that continues it (the case above, a car through rain
    # read badly from afar): that track's event completes it
    reads = read_badly_then_surely()
    tracker = PlateTracker()
    (event,) = run(tracker, by_frame(reads[:9]) + [(1.8, []), (1.9, [])] + by_frame(reads[9:]))
    assert event.text == "EJ728LY" and event.absorbed and event.track_id not in event.absorbed
    assert tracker.take_closed() == []
