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


# --------------------------------------------------------------------------- a pass, fused


def night_read(text: str, char_conf: Sequence[float] | None = None) -> PlateRead:
    read = make_read(text, char_conf=char_conf or [0.9] * len(text))
    read.night = True
    return read


def test_a_band_glyph_read_at_night_is_dropped() -> None:
    # Infrared turns the blue band into an "E" before a Lithuanian plate, in every frame.
    reads = [night_read("EABC123")] * 4
    lt = vote(reads, countries=["LT"])
    assert lt is not None and (lt.plate.text, lt.plate.country) == ("ABC123", "LT")
    assert "EABC123" in lt.readings  # what the OCR saw stays an alternative
    # no camera countries: EAB C123 is a Polish format, and the E is kept unless the pass
    # shows it is not the plate's: some frames read the plate without it
    assert agreed(reads).plate.text == "EABC123"
    assert agreed(reads + [night_read("ABC123")]).plate.text == "ABC123"
    # or it is read less surely than the rest
    assert agreed([night_read("EABC123", [0.7] + [0.95] * 6)] * 4).plate.text == "ABC123"
    # a Slovak plate whose band reads as "Z" (the whole would fit a 2023 Polish format)
    sk = agreed([night_read("ZRK906AJ")] * 3 + [night_read("RK906AJ")])
    assert sk.plate.text == "RK906AJ" and "ZRK906AJ" in sk.readings
    # a real last character that a frame missed stays (SG 47471 is a Polish plate)
    assert agreed([night_read("SG47471")] * 19 + [night_read("SG4747")]).plate.text == "SG47471"


def test_a_real_character_of_a_plate_that_fits_as_read_is_kept() -> None:
    # "EKR12345" is a Polish plate as read: a Polish camera keeps the E, day or night
    reads = [night_read("EKR12345")] * 4
    assert agreed_with(reads, ["PL"]).plate.text == "EKR12345"
    # by day, read as surely as the rest, E is a character
    assert agreed([make_read("EABC123", char_conf=[0.95] * 7)] * 4).plate.text == "EABC123"


def agreed_with(reads: list[PlateRead], countries: list[str]) -> Vote:
    result = vote(reads, countries=countries)
    assert result is not None
    return result


def test_without_countries_a_read_fitting_several_formats_keeps_what_ocr_saw() -> None:
    # Slovak KE-123OZ as read; a Polish format would make it KE12302
    result = agreed([make_read("KE123OZ")] * 4)
    assert result.plate.text == "KE123OZ"
    assert "KE12302" in result.readings
    # read with a zero: Slovak and Polish corrections are as plausible, the read stays
    zero = agreed([make_read("KE1230Z")] * 4)
    assert zero.plate.text == "KE1230Z"
    assert {"KE12302", "KE123OZ"} <= set(zero.readings)


def test_a_pass_whose_reads_disagree_on_the_country_fuses_to_one_country() -> None:
    # Three reads of a Slovak plate, two read as a Polish one; voted character by
    # character they make BA302O2, a plate of no country.  The pass is Slovak.
    sk = [0.95] * 5 + [0.9, 0.5]
    pl = [0.95] * 5 + [0.6, 0.95]
    reads = [make_read("BA302OZ", char_conf=sk)] * 3 + [make_read("BA30202", char_conf=pl)] * 2
    result = agreed(reads)
    assert (result.plate.text, result.plate.country) == ("BA302OZ", "SK")
    assert result.plate.raw == "BA302O2"  # what the OCR saw, voted


def test_a_format_the_pass_read_as_it_is_wins_over_a_correction_never_seen() -> None:
    # A Czech 1B8 0338 read 1880338 while far (Turkish 18B0338 and Czech corrections tie)
    # and 1B80338 as it came closer: the OCR saw the Czech text, never the Turkish one.
    far = [make_read("1880338", conf=0.89, char_conf=[1.0, 0.98, 0.98, 1.0, 1.0, 1.0, 1.0]),
           make_read("1880338", conf=0.89, char_conf=[1.0] * 7)] * 7
    near = [make_read("1B80338", conf=0.89, char_conf=[1.0, 0.94, 0.99, 1.0, 1.0, 1.0, 1.0]),
            make_read("1B80338", conf=0.9, char_conf=[1.0, 0.96, 1.0, 1.0, 1.0, 1.0, 1.0]),
            make_read("1B80338", conf=0.89, char_conf=[1.0, 0.83, 1.0, 1.0, 1.0, 1.0, 1.0]),
            make_read("1B80338", conf=0.58, char_conf=[1.0, 0.83, 1.0, 1.0, 1.0, 1.0, 1.0])]
    result = agreed(far + near)
    assert (result.plate.text, result.plate.country) == ("1B80338", "CZ")
    assert "1880338" in result.readings  # what the OCR saw most stays an alternative
    # read only as the ambiguous text, the pass keeps what the OCR saw
    assert agreed(far).plate.text == "1880338"
    # one stray exact read among many is no evidence: the read stays
    assert agreed(far * 2 + near[:1]).plate.text == "1880338"


def test_a_position_the_reads_hardly_agree_on_is_dropped_where_reads_lack_it() -> None:
    # A Slovak BY-649AG: a seam after the Y is read as a character in most frames, each
    # time another one and unsurely; the frames that do not read it agree on the rest.
    sure = [0.99] * 7
    seam = [0.99, 0.99, 0.3] + [0.99] * 5
    reads = [make_read(f"BY{c}649AG", conf=0.82, char_conf=seam) for c in "E1G6I5"]
    reads += [make_read("BY649AG", conf=0.9, char_conf=sure)] * 3
    assert agreed(reads).plate.text == "BY649AG"
    # a character read unsurely but alike in every frame is the plate's: kept
    same = [make_read("BYE649AG", conf=0.82, char_conf=seam)] * 6
    assert agreed(same + reads[-3:]).plate.text == "BYE649AG"
    # ... and so is one nobody read without: no read of the rest, nothing dropped
    assert len(agreed(reads[:6]).plate.text) == 8


def test_a_few_exact_reads_of_one_country_decide_nothing() -> None:
    # A Slovak BA-302OZ read BA3020Z in most frames (Slovak and Polish corrections tie)
    # and as the Polish BA30202 in two of eighteen: too few to say the OCR saw a Polish
    # plate, so the pass keeps what it saw.
    conf = [0.95] * 5 + [0.9, 0.9]
    reads = [make_read("BA3020Z", char_conf=conf)] * 16 + [make_read("BA30202", char_conf=conf)] * 2
    assert agreed(reads).plate.text == "BA3020Z"


def hd_night_read(text: str, first: float, x: float) -> PlateRead:
    """A read of a plate approaching in a 1080p night frame: its box grows from ~150 px
    wide; every character read surely but the first, at `first`."""
    width = 150 + 12 * x
    read = make_read(text, box=(860 - x, 370 + 8 * x, 860 - x + width, 370 + 8 * x + width / 3.6),
                     conf=0.95, char_conf=[first] + [1.0] * (len(text) - 1), det=0.8)
    read.night = True
    return read


def test_a_band_read_as_a_letter_at_night_is_dropped() -> None:
    # A Slovak RK-755AJ: at night its band (the shield over "SK") is read as a P, each
    # frame more or less unsurely; PRK 755AJ would be a Polish plate.  One frame read the
    # plate without it.
    firsts = [0.5, 0.86, 0.53, 0.53, 0.83, 0.83, 0.68, 0.68, 0.68, 0.97, 0.55, 0.8]
    reads = [hd_night_read("PRK755AJ", c, i) for i, c in enumerate(firsts)]
    reads.append(hd_night_read("RK755AJ", 1.0, len(firsts)))
    result = agreed(reads)
    assert result.plate.text == "RK755AJ"
    assert "PRK755AJ" in result.readings  # what the OCR saw stays an alternative
    # the same with a Slovak camera, or a Polish one (the rest is a plate as read)
    assert agreed_with(reads, ["SK"]).plate.text == "RK755AJ"
    assert agreed_with(reads, ["PL"]).plate.text == "RK755AJ"


def test_a_real_first_letter_that_fits_the_format_is_kept() -> None:
    # A Polish PRK 755AJ read surely, one frame missing its P: the P is the plate's
    reads = [hd_night_read("PRK755AJ", c, i) for i, c in enumerate([0.97, 0.99, 0.95] * 4)]
    reads.append(hd_night_read("RK755AJ", 1.0, 12))
    assert agreed(reads).plate.text == "PRK755AJ"
    assert agreed_with(reads, ["PL"]).plate.text == "PRK755AJ"
    # by day too, and a Lithuanian PRK 123
    day = [make_read("PRK123", char_conf=[0.98] + [0.99] * 5)] * 8 + [make_read("RK123")]
    assert agreed(day).plate.text == "PRK123"
    # a first letter read unsurely in every frame, but never missing: no read shows the
    # plate without it, so nothing is dropped
    unsure = [hd_night_read("PRK755AJ", c, i) for i, c in enumerate([0.5, 0.6, 0.55] * 4)]
    assert agreed(unsure).plate.text == "PRK755AJ"


def test_exact_fits_read_only_far_away_are_no_sign_of_their_country() -> None:
    # A Slovak BA-302OZ in glare: read BA3020Z in most frames (Slovak and Polish
    # corrections tie); the three farthest frames read Polish plates (BA30202, BA3020A),
    # two read the band as an E.  The pass keeps what it saw.
    def read(text: str, cc: list[float], width: float) -> PlateRead:
        return make_read(text, box=(260, 100, 260 + width, 100 + width / 3.5),
                         conf=sum(cc) / len(cc), char_conf=cc, det=0.75)

    sure = [1.0] * 5 + [0.99, 1.0]
    far = [read("BA30202", [0.99, 0.98, 0.99, 0.99, 1.0, 0.99, 0.66], 41),
           read("BA30202", [0.99, 0.97, 0.99, 0.99, 0.98, 0.99, 0.61], 44),
           read("BA3020A", [0.98, 0.67, 0.97, 0.98, 0.94, 0.91, 0.57], 45)]
    near = [read("BA3020Z", sure, 46 + 3 * i) for i in range(13)]
    near += [read("EBA3020Z", [0.89] + [1.0] * 7, 47), read("EBA3020Z", [0.91] + [1.0] * 7, 52)]
    result = agreed(far + near)
    assert result.plate.text == "BA3020Z"
    assert "BA30202" in result.readings and "BA302OZ" in result.readings
    # read so up close, the same Polish frames are the OCR seeing a Polish plate
    close = [read(r.plate.raw, list(r.plate.char_confidence), 80) for r in far]
    assert agreed(close + near).plate.text == "BA30202"
