"""Settled reads: a plate read the same way several times is followed, not read again."""

from __future__ import annotations

from edge.core.types import Detections, PlateRead, PlateText
from edge.node.settled import SettledReads


def read(text: str, box, conf: float = 0.95) -> PlateRead:
    return PlateRead(box=box, detection_confidence=0.9,
                     plate=PlateText(text, text, text, None, conf))


def step(settled: SettledReads, box, pts: float, text: str = "ABC123", conf: float = 0.95):
    dets = Detections([box], [0.9], [0])
    known = settled.known(dets, pts)
    plate = known.get(0)
    r = read(text, box, conf) if plate is None else PlateRead(box, 0.9, plate)
    settled.update([r], pts, [id(p) for p in known.values()])
    return plate is not None


def test_a_moving_plate_settles_after_a_streak_and_is_reread_regularly():
    settled = SettledReads(streak=3, reread_every=4)
    looks = [step(settled, (100 + 20 * i, 100, 180 + 20 * i, 120), i * 0.1) for i in range(12)]
    # read three times, then reused, with a fresh read every fourth frame
    assert looks[:3] == [False, False, False]
    assert looks[3:6] == [True, True, True] and looks[6] is False
    assert sum(looks) >= 6


def test_an_unsure_or_changing_read_never_settles():
    settled = SettledReads(streak=3)
    assert not any(step(settled, (100, 100, 180, 120), i * 0.1, conf=0.6) for i in range(8))
    settled = SettledReads(streak=3)
    texts = ["ABC123", "ABC128"] * 4
    assert not any(step(settled, (100, 100, 180, 120), i * 0.1, text=t)
                   for i, t in enumerate(texts))


def test_a_box_that_never_reads_as_a_plate_is_skipped_between_looks():
    settled = SettledReads(reread_every=4)
    looks = [step(settled, (300, 50, 360, 110), i * 0.1, text="D", conf=0.9) for i in range(8)]
    assert looks[:2] == [False, False] and looks[2] is True and sum(looks) >= 4
