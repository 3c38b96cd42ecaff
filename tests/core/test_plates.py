"""Plate text rules: normalisation, national formats, OCR confusion correction."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core import plates
from edge.core.plates import (
    KNOWN_COUNTRIES,
    country_candidates,
    format_plate,
    normalise,
    parse,
    readings,
)
from edge.core.types import PlateText

# --------------------------------------------------------------------------- normalise


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("abc 123", "ABC123"),
        ("AB-12.34", "AB1234"),
        (" ka\t12_34 · ab|", "KA1234AB"),
        ("СВ 1234 АК", "CB1234AK"),  # Bulgarian, written in Cyrillic
        ("ав 1234 ос", "AB1234OC"),  # lower case Cyrillic
        ("АА 1234 ІХ", "AA1234IX"),  # Ukrainian І
        ("ї", "I"),
        ("ΑΒΕ-1234", "ABE1234"),  # Greek
        ("ÄÖÜ ŠČŽ ŁĄĘ ĖŪ Ő Ñ", "AOUSCZLAEEUON"),
        ("ß", "SS"),
        ("ＡＢＣ１２３", "ABC123"),  # full-width
        ("٣٤ ABC", "34ABC"),  # Arabic-Indic digits
        ("LT ★ ABC 123 🇱🇹", "LTABC123"),
        ("ЖЩЯ", ""),  # Cyrillic letters with no Latin twin are dropped
        ("", ""),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


# --------------------------------------------------------------------------- formats

# (plate as written, country): a valid current plate of each country, as it is written.
VALID = [
    ("OY09 FEU", "GB"),
    ("ABC 123", "LT"),
    ("AB-1234", "LV"),
    ("HM-818", "LV"),
    ("123 ABC", "EE"),
    ("WA 12345", "PL"),
    ("KR 1234A", "PL"),
    ("PO 123AC", "PL"),
    ("KRA 1A23", "PL"),
    ("WPI 12AC", "PL"),
    ("CA 1234 AB", "BG"),
    ("B 1234 PK", "BG"),
    ("IS 12 ABC", "RO"),
    ("B 123 ABC", "RO"),
    ("34 ABC 123", "TR"),
    ("06 A 1234", "TR"),
    ("35 AB 1234", "TR"),
    ("AA 1234 BB", "UA"),
    ("1234 AB-7", "BY"),
    ("ABC-DE 12", "DE"),
    ("HHAB 1234", "DE"),  # two ways to split HH|AB or HHA|B: only the certain space
    ("MAB 123E", "DE"),
    ("ABC-123", "FI"),
    ("BA-123AB", "SK"),
    ("1A2 3456", "CZ"),
    ("9B8 1234", "CZ"),
    ("ABC-123", "HU"),
    ("AA BC-123", "HU"),
    ("AB-123-CD", "GE"),
    ("A123BC 77", "RU"),
    ("A123BC 777", "RU"),
    ("7ABC123", "US"),
    ("ABC-1234", "US"),
    ("51G-12345", "VN"),
    ("29A1-12345", "VN"),
    ("51LD-12345", "VN"),
]


@pytest.mark.parametrize(("written", "country"), VALID)
def test_valid_plate_round_trips(written: str, country: str) -> None:
    text = normalise(written)
    p = parse(written, countries=[country])
    assert (p.text, p.formatted, p.country) == (text, written, country)
    assert format_plate(text, country) == written
    assert (country, text, 0) in country_candidates(text)


def test_every_known_country_has_an_example() -> None:
    assert {c for _, c in VALID} == set(KNOWN_COUNTRIES)


@pytest.mark.parametrize(
    ("written", "country"),
    [
        ("123 ABC", "EE"),
        ("WA 12345", "PL"),
        ("IS 12 ABC", "RO"),
        ("34 ABC 123", "TR"),
        ("AA 1234 BB", "UA"),
        ("1234 AB-7", "BY"),
        ("ABC-DE 12", "DE"),
        ("1A2 3456", "CZ"),
        ("A123BC 77", "RU"),
    ],
)
def test_unique_formats_need_no_prior(written: str, country: str) -> None:
    p = parse(written)
    assert (p.country, p.formatted) == (country, written)


def test_parse_returns_plate_text() -> None:
    p = parse("abc-123", 0.8, (0.9,) * 6, countries=["LT"])
    assert p == PlateText("abc-123", "ABC123", "ABC 123", "LT", 0.8, (0.9,) * 6)


def test_format_plate_unknown_country_or_no_fit_is_unchanged() -> None:
    assert format_plate("ABC123", None) == "ABC123"
    assert format_plate("ABC123", "XX") == "ABC123"
    assert format_plate("ABC123", "EE") == "ABC123"
    assert format_plate("abc123", "lt") == "ABC 123"


@pytest.mark.parametrize(
    ("text", "country"),
    [("XY 12345", "PL"), ("CA 12 ABC", "RO"), ("Q 1234 AB", "BG"), ("82 A 1234", "TR")],
)
def test_region_codes_are_checked(text: str, country: str) -> None:
    # XY: no voivodeship X; CA: no Romanian county; Q: no Bulgarian region; 82: no province
    assert country not in [c for c, _, _ in country_candidates(text)]


def test_restricted_alphabets() -> None:
    assert "BG" not in [c for c, _, _ in country_candidates("CA 1234 AD")]  # no D in BG
    assert "UA" not in [c for c, _, _ in country_candidates("AA 1234 BY")]  # no Y in UA
    assert "TR" not in [c for c, _, _ in country_candidates("34 QA 123")]  # no Q in TR


# --------------------------------------------------------------------------- corrections


@pytest.mark.parametrize(
    ("raw", "countries", "text", "country"),
    [
        ("A8C 123", ["LT"], "ABC123", "LT"),  # digit read where a letter must be
        ("ABC 12O", ["LT"], "ABC120", "LT"),  # letter read where a digit must be
        ("I23 ABC", None, "123ABC", "EE"),
        ("A8C 1ZS", ["LT"], "A8C1ZS", None),  # three corrections needed: too many
        ("34 ABC 1Z3", None, "34ABC123", "TR"),
        ("O6 A 1234", ["TR"], "06A1234", "TR"),
        ("CA 1234 A8", ["BG"], "CA1234AB", "BG"),
        ("1234 A8-7", None, "1234AB7", "BY"),
        ("RK857A1", ["SK"], "RK857AI", "SK"),
        ("RK-857A1", ["SK"], "RK857AI", "SK"),
        ("A123BC 7Z", None, "A123BC72", "RU"),
        ("1A2 34S6", None, "1A23456", "CZ"),
    ],
)
def test_confusions_are_corrected(
    raw: str, countries: list[str] | None, text: str, country: str | None
) -> None:
    p = parse(raw, countries=countries)
    assert (p.text, p.country) == (normalise(text), country)


def test_polish_vehicle_part_has_no_b_d_i_o_z() -> None:
    # After the district code Polish plates never use B (it is always 8).
    assert parse("KRA 12AB").text == "KRA12A8"


def test_correction_agreed_by_all_fits_is_kept_without_a_country() -> None:
    # LT, FI, HU and DE all read ABC123: corrected, but which country is open.
    p = parse("A8C123")
    assert (p.text, p.country) == ("ABC123", None)


def test_disagreeing_corrections_leave_the_read_alone() -> None:
    # SK/GE read RK857AI (1 -> I), PL reads RKB57A1 (8 -> B): one each, no prior.
    p = parse("RK857A1")
    assert (p.text, p.formatted, p.country) == ("RK857A1", "RK857A1", None)
    assert {t for _, t, _ in country_candidates("RK857A1")} == {"RK857AI", "RKB57A1"}


def test_char_confidence_decides_which_character_to_change() -> None:
    sure_8 = parse("RK857A1", char_confidence=[0.9, 0.9, 0.97, 0.9, 0.9, 0.9, 0.4])
    assert sure_8.text == "RK857AI"
    sure_1 = parse("RK857A1", char_confidence=[0.9, 0.9, 0.4, 0.9, 0.9, 0.9, 0.97])
    assert (sure_1.text, sure_1.country, sure_1.formatted) == ("RKB57A1", "PL", "RKB 57A1")


def test_char_confidence_of_the_wrong_length_is_ignored() -> None:
    assert parse("RK857A1", char_confidence=[0.9, 0.4]).text == "RK857A1"


def test_confident_characters_are_not_changed_twice() -> None:
    # Two substitutions: allowed when the OCR was unsure of both, not when it was sure.
    unsure = parse("A8C1Z3", countries=["LT"], char_confidence=[0.9, 0.5, 0.9, 0.9, 0.5, 0.9])
    assert unsure.text == "ABC123"
    sure = parse("A8C1Z3", countries=["LT"], char_confidence=[0.95] * 6)
    assert (sure.text, sure.country) == ("A8C1Z3", None)


@pytest.mark.parametrize(
    "raw",
    ["QQQQQQ", "HELLOWORLD", "XX", "0", "", "88C1ZS", "ZZZZZZZZZZZZ", "12345678901"],
)
def test_garbage_is_not_bent_into_a_format(raw: str) -> None:
    p = parse(raw)
    assert (p.text, p.formatted, p.country) == (normalise(raw), normalise(raw), None)


def test_substitutions_capped_at_a_third_of_the_length() -> None:
    # LV "AB-120" is one substitution from "AB12O"; two would be more than 5 // 3.
    assert parse("AB12O", countries=["LV"]).text == "AB120"
    assert parse("A812O", countries=["LV"]).text == "A812O"


@pytest.mark.parametrize(
    "raw", ["7ABC123", "6TRJ244", "8ABC123", "1ABC234", "4GHJ921", "ABC-1234", "FL0RIDA"]
)
def test_us_plates_come_through_unchanged(raw: str) -> None:
    for countries in (None, ["LT", "PL", "DE"], ["TR"]):
        assert parse(raw, countries=countries).text == normalise(raw)


# --------------------------------------------------------------------------- the prior


def test_prior_breaks_ties_in_its_order() -> None:
    assert parse("ABC123").country is None
    assert parse("ABC123", countries=["LT", "FI"]).formatted == "ABC 123"
    assert parse("ABC123", countries=["FI", "LT"]).formatted == "ABC-123"
    assert parse("ABC123", countries=["fi"]).country == "FI"
    assert parse("ABC123", countries="LT").country == "LT"
    assert parse("ABC123", countries=["XX", "HU"]).country == "HU"
    assert parse("ABC123", countries=["XX"]).country is None


def test_prior_does_not_outweigh_a_better_fit() -> None:
    # LV fits AB-1234 as read; LT would need 1 -> I.  A LT camera still gets no LT.
    p = parse("AB1234", countries=["LT"])
    assert (p.text, p.country) == ("AB1234", None)
    assert parse("123ABC", countries=["LT"]).country == "EE"


def test_country_candidates_best_first() -> None:
    cands = country_candidates("AB-1234")
    assert cands[:2] == [("LV", "AB1234", 0), ("DE", "AB1234", 0)]
    assert ("LT", "ABI234", 1) in cands
    assert [s for _, _, s in cands] == sorted(s for _, _, s in cands)
    assert country_candidates("QQQQQQ") == []


# --------------------------------------------------------------------------- properties


def _examples(fmt: plates.PlateFormat) -> st.SearchStrategy[str]:
    """Valid plates of one format, drawn from its own table entry."""
    classes = {"L": fmt.letters, "D": string.digits, "N": string.digits[1:], **fmt.classes}
    code_lens = {len(c) for c in fmt.codes}

    def build(pattern: str, draw: st.DrawFn) -> str:
        chars = [draw(st.sampled_from(classes[s])) for s in pattern if s not in " -"]
        group = len(pattern.split(" ")[0].split("-")[0])
        if group in code_lens:
            chars[:group] = draw(st.sampled_from(sorted(c for c in fmt.codes if len(c) == group)))
        return "".join(chars)

    patterns = [p for raw in fmt.patterns for p in plates._expand(raw)]
    patterns = [p for p in patterns if len(p.replace(" ", "").replace("-", "")) <= fmt.max_chars]
    return st.composite(lambda draw: build(draw(st.sampled_from(patterns)), draw))()


@pytest.mark.parametrize("fmt", plates._FORMATS, ids=lambda f: f"{f.country}-{f.patterns[0]}")
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_valid_plate_is_kept_and_recognised(
    fmt: plates.PlateFormat, data: st.DataObject
) -> None:
    text = data.draw(_examples(fmt))
    p = parse(text, countries=[fmt.country])
    assert (p.text, p.country) == (text, fmt.country)
    assert normalise(p.formatted) == text


@settings(max_examples=300, deadline=None)
@given(raw=st.text(max_size=14), confs=st.lists(st.floats(allow_nan=True), max_size=14))
def test_parse_never_raises_and_gives_a_z_0_9(raw: str, confs: list[float]) -> None:
    p = parse(raw, 0.5, confs)
    assert set(p.text) <= set(string.ascii_uppercase + string.digits)
    assert normalise(p.formatted) == p.text
    # a corrected read needs no more correction
    assert parse(p.text, 0.5, p.char_confidence).text == p.text


_PLATEISH = st.text(alphabet=string.ascii_uppercase + string.digits + " -", max_size=10)


@settings(max_examples=300, deadline=None)
@given(raw=_PLATEISH, countries=st.sampled_from([None, ["LT"], ["PL", "DE"], ["US"]]))
def test_corrections_stay_within_the_cap(raw: str, countries: list[str] | None) -> None:
    p = parse(raw, countries=countries)
    text = normalise(raw)
    # what the plate's edges add may be dropped: compare with the kept characters
    assert len(text) - 2 <= len(p.text) <= len(text)
    kept = [text[i : i + len(p.text)] for i in range(len(text) - len(p.text) + 1)]
    changed = min(sum(a != b for a, b in zip(p.text, k, strict=True)) for k in kept)
    assert changed <= min(plates.MAX_SUBSTITUTIONS, len(text) // 3)


@given(raw=st.text(max_size=20))
def test_normalise_is_idempotent(raw: str) -> None:
    once = normalise(raw)
    assert normalise(once) == once
    assert set(once) <= set(string.ascii_uppercase + string.digits)


def test_camera_countries_bound_the_corrections():
    # a US plate bends into a Polish format by one substitution when every format counts
    assert parse("K179658").text == "KI79658"
    assert parse("K179658", countries=["US"]).text == "K179658"
    assert parse("FZRULZ", countries=["US"]).text == "FZRULZ"
    # inside the camera's countries the corrections still apply
    assert parse("RK708A1", countries=["SK", "CZ", "PL"]).text == "RK708AI"
    # a foreign plate that fits a known format exactly is still named
    assert parse("KR12345", countries=["LT"]).country == "PL"
    # and one that fits a foreign format only by bending is left as read, country unknown
    foreign = parse("K179658", countries=["LT"])
    assert foreign.text == "K179658" and foreign.country is None


def test_emblem_or_band_letters_at_the_edge_are_dropped_when_the_rest_fits():
    # a flag read as a low-confidence "8" before a British plate
    flag = parse("8OY09FEU", 0.9, [0.2, 0.85, 1.0, 0.7, 1.0, 1.0, 1.0, 1.0])
    assert (flag.text, flag.country) == ("OY09FEU", "GB")
    assert len(flag.char_confidence) == len(flag.text)
    # the same character read surely is a character: nothing is dropped
    sure = parse("8OY09FEU", 0.9, [0.99] * 8)
    assert sure.text == "8OY09FEU" and sure.country is None
    # the blue band's country letters read before the plate
    band = parse("EE123ABC")
    assert (band.text, band.country) == ("123ABC", "EE")
    # an unsure edge character of a read that fits nothing even without it stays
    assert parse("6M5XSX", 0.9, [0.43, 1.0, 1.0, 1.0, 1.0, 1.0]).text == "6M5XSX"


def test_vietnamese_plates_are_not_named_turkish():
    """The tollbooth clip engineers replay is Vietnamese: its plates share Turkey's
    'DD L DDDD[D]' shape, and were all named TR."""
    assert parse("29A112345").country == "VN"  # a series of two: Vietnamese only
    assert parse("99A12345").country == "VN"  # no Turkish province 99
    assert parse("51G12345").country is None  # both shapes fit: no country is named
    assert parse("51G12345", countries=["VN"]).country == "VN"
    assert parse("34ABC123").country == "TR"


def test_a_band_glyph_before_a_plate_of_the_camera_countries_is_dropped():
    # EABC123 fits a Polish format exactly; a Lithuanian camera reads the band's E off
    for night in (False, True):
        p = parse("EABC123", 0.9, [0.9] * 7, countries=["LT"], night=night)
        assert (p.text, p.country) == ("ABC123", "LT")
    # a Polish camera: the read fits its formats as read, nothing is dropped
    assert parse("EABC123", countries=["PL"], night=True).text == "EABC123"
    # no country list: a typical band glyph read less surely than the rest, when the rest
    # fits; read as surely as the rest it is a character (EAB C123 is a Polish format)
    assert parse("EABC123", 0.9, [0.7] + [0.95] * 6, night=True).text == "ABC123"
    assert parse("EABC123", 0.9, [0.9] * 7, night=True).text == "EABC123"
    assert parse("BRK906AJ", 0.9, [0.7] + [0.95] * 7).text == "RK906AJ"
    # a Polish plate of a district starting with B, read at night: nothing dropped
    assert parse("BSE5579", 0.9, [0.9] * 7, night=True).text == "BSE5579"
    # a screw after the plate, read less surely (read as surely, ABC-1231 is a US plate)
    assert parse("ABC1231", 0.9, [0.9] * 6 + [0.6], countries=["LT"]).text == "ABC123"
    assert parse("ABC1231", 0.9, [0.9] * 7, countries=["LT"]).text == "ABC1231"


def test_without_countries_rival_corrections_leave_the_read_as_ocr_saw_it():
    # Slovak KE-123OZ read with a zero: Polish KE12302 and Slovak KE123OZ as plausible
    assert parse("KE1230Z").text == "KE1230Z"
    assert parse("KE123OZ").text == "KE123OZ"  # fits Slovak as read
    assert readings("KE123OZ")[:1] == ["KE12302"]
    assert set(readings("KE1230Z")) >= {"KE12302", "KE123OZ"}
    assert readings("KE123OZ", countries=["SK"]) == []  # Poland is not the camera's
    # with a country list, its correction is made
    assert parse("KE1230Z", countries=["SK"]).text == "KE123OZ"
