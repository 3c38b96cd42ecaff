"""Agreeing one read from a vehicle's many reads."""

from __future__ import annotations

from collections.abc import Sequence

from edge.core.types import PlateRead, PlateText
from edge.node.vote import Vote, vote


def make_read(
    text: str,
    box: tuple[float, float, float, float] = (100, 100, 200, 130),
    pts: float = 0.0,
    conf: float = 0.9,
    char_conf: Sequence[float] = (),
    det: float = 1.0,
) -> PlateRead:
    plate = PlateText(text, text, text, None, conf, tuple(char_conf))
    return PlateRead(box=box, detection_confidence=det, plate=plate, pts=pts)


def agreed(reads: list[PlateRead]) -> Vote:
    result = vote(reads)
    assert result is not None
    return result


def test_nothing_or_garbage_agrees_on_nothing() -> None:
    assert vote([]) is None
    assert vote([make_read(""), make_read("A1"), make_read("X"), make_read("--")]) is None


def test_majority_wins_over_noise_and_garbage() -> None:
    texts = ["ABC123"] * 6 + ["ABC128", "A8C123", "QW", "ZZZ999"]
    result = agreed([make_read(t) for t in texts])
    assert result.plate.text == "ABC123"
    assert result.votes == 8  # the exact reads and the two near misses
    assert result.total == 10
    assert ("ZZZ999", 1) in result.alternatives
    assert all(t != "ABC123" for t, _ in result.alternatives)


def test_per_character_vote_fixes_what_no_single_read_got_right() -> None:
    # Each read has one character wrong, each in a different place.
    truth = "ABC1234"
    reads = []
    for i in range(len(truth)):
        wrong = truth[:i] + ("X" if truth[i] != "X" else "Y") + truth[i + 1 :]
        reads.append(make_read(wrong))
    result = agreed(reads)
    assert result.plate.text == truth
    assert result.votes == len(truth)


def test_character_confidence_decides_a_split_position() -> None:
    sure = (0.9, 0.9, 0.9, 0.9, 0.9, 0.95)
    unsure = (0.9, 0.9, 0.9, 0.9, 0.9, 0.2)
    reads = [make_read("ABC123", char_conf=sure), make_read("ABC128", char_conf=unsure)] * 2
    assert agreed(reads).plate.text == "ABC123"
    reads = [make_read("ABC123", char_conf=unsure), make_read("ABC128", char_conf=sure)] * 2
    assert agreed(reads).plate.text == "ABC128"


def test_reads_of_another_length_are_aligned_not_discarded() -> None:
    reads = [make_read("ABC1234")] * 3 + [make_read("ABC124"), make_read("ABCX1234")]
    result = agreed(reads)
    assert result.plate.text == "ABC1234"
    assert result.votes == 5


def test_more_agreeing_reads_are_more_confident() -> None:
    one = agreed([make_read("ABC123")])
    five = agreed([make_read("ABC123")] * 5)
    split = agreed([make_read("ABC123")] * 3 + [make_read("XYZ789")] * 2)
    assert 0 < one.confidence < five.confidence <= 1
    assert split.confidence < five.confidence


def test_best_read_is_most_confident_supporter_then_largest() -> None:
    small = make_read("ABC123", box=(0, 0, 50, 15), conf=0.9)
    large = make_read("ABC123", box=(0, 0, 120, 30), conf=0.9)
    wrong = make_read("XYZ789", box=(0, 0, 300, 80), conf=0.99)
    assert agreed([small, large, wrong, make_read("ABC123", conf=0.5)]).best is large
    sharper = make_read("ABC123", box=(0, 0, 60, 15), conf=0.97)
    assert agreed([small, large, sharper]).best is sharper


def test_cyrillic_raw_reads_vote_with_latin() -> None:
    reads = [make_read("ABC123")] * 2 + [
        PlateRead(
            box=(0, 0, 100, 30),
            detection_confidence=1.0,
            plate=PlateText("АВС123", "ABC123", "ABC 123", None, 0.9),
        )
    ]
    result = agreed(reads)
    assert result.plate.text == "ABC123"
    assert result.votes == 3


def test_plate_rules_apply_to_the_agreed_read() -> None:
    # Raw reads vote as read; the format's letter/digit fix comes after.
    result = vote([make_read("ABC12O")] * 2 + [make_read("ABC120")], countries=["LT"])
    assert result is not None
    assert result.plate.raw == "ABC12O"
    assert (result.plate.text, result.plate.formatted, result.plate.country) == (
        "ABC120",
        "ABC 120",
        "LT",
    )
    assert result.votes == 3 and result.alternatives == []
