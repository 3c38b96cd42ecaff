"""Plate text rules: normalise OCR output, fit it to national formats, format it for people.

Formats are data (`_FORMATS`): per country a few patterns such as "LLL DDD", where each
letter of a pattern names a character class (L a letter of the country's alphabet, D a
digit, N a digit 1-9, others per country), `[...]` marks an optional part, and a space or
dash is the separator written on the plate.  At import every pattern is expanded and
compiled to bit masks, so fitting a read to all formats is a few integer operations each.

Where a pattern wants a letter and the read has a digit (or the other way round), the
usual OCR confusions (`edge.core.confusions.READ_AS`) are corrected, at a cost that grows
with the character's OCR confidence; a read needing too many corrections fits nothing and
comes through as read.  Without camera countries, a read that two countries' formats
correct differently at a comparable cost also comes through as read (`readings` lists the
corrections).  What the plate's edges add (the blue band read as E, Z or B, a screw read as
I or 1) is dropped where the rest fits and the whole does not, or the glyph is doubtful
(`edge_trims`).
"""

from __future__ import annotations

import math
import string
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from edge.core.confusions import READ_AS
from edge.core.types import PlateText

__all__ = [
    "KNOWN_COUNTRIES",
    "PlateFormat",
    "MAX_COST",
    "MAX_SUBSTITUTIONS",
    "BAND_GLYPHS",
    "LEADING_GLYPHS",
    "TRAILING_GLYPHS",
    "CountryFit",
    "country_candidates",
    "country_fits",
    "edge_trims",
    "format_plate",
    "normalise",
    "parse",
    "readings",
    "unsure_edge",
]

# --------------------------------------------------------------------------- normalise

# Letters of other scripts that look like, and on plates stand for, Latin ones.  BG, UA,
# BY and RU plates use only Cyrillic letters with a Latin twin, so their Cyrillic spelling
# maps one to one; Greek plates likewise.
_LOOKALIKES = {
    **dict(zip("АВЕКМНОРСТУХІЈЅ", "ABEKMHOPCTYXIJS", strict=True)),  # Cyrillic
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX", strict=True)),  # Greek
    # Latin letters that NFKD does not decompose.
    "Ł": "L", "Ø": "O", "Đ": "D", "Ð": "D", "Ħ": "H", "Ŧ": "T", "Ŀ": "L", "Æ": "AE", "Œ": "OE",
}  # fmt: skip
_ALPHABET = string.ascii_uppercase + string.digits
_KEEP = frozenset(_ALPHABET)


def _normalise_char(ch: str) -> str:
    out = []
    for c in unicodedata.normalize("NFKD", ch.upper()):
        c = _LOOKALIKES.get(c, c)
        if c in _KEEP or (len(c) > 1 and set(c) <= _KEEP):
            out.append(c)
        elif not c.isascii() and unicodedata.decimal(c, None) is not None:
            out.append(str(unicodedata.decimal(c)))  # other scripts' digits, e.g. Arabic-Indic
    return "".join(out)


class _CharTable(dict[int, str]):
    """A `str.translate` table filled in on first sight of each character."""

    def __missing__(self, code: int) -> str:
        value = _normalise_char(chr(code))
        if len(self) < 65536:  # bound the memory an adversarial stream could take
            self[code] = value
        return value


_TABLE = _CharTable({ord(c): c for c in _KEEP})


def normalise(raw: str) -> str:
    """Upper case Latin A-Z0-9 only: look-alike Cyrillic and Greek letters become Latin,
    diacritics are stripped (Ä->A, Š->S, Ł->L), separators and everything else dropped."""
    return raw.translate(_TABLE)


# --------------------------------------------------------------------------- formats

_AZ = string.ascii_uppercase
_DIGITS = string.digits
_CYRILLIC_TWINS = "ABEKMHOPCTYX"  # BG and RU: Cyrillic letters with a Latin twin


@dataclass(frozen=True)
class PlateFormat:
    """A country's standard plate patterns.

    `codes`: region codes the first group (the characters before the first separator)
    must be one of; only enforced for group lengths that have codes listed, so a country
    can list its closed set of one-letter codes and leave longer ones open.
    `max_chars`: the most characters (separators not counted) a plate may have.
    """

    country: str
    patterns: tuple[str, ...]
    letters: str = _AZ
    classes: Mapping[str, str] = field(default_factory=dict)
    codes: frozenset[str] = frozenset()
    max_chars: int = 99


_RO_COUNTIES = frozenset(
    "AB AR AG BC BH BN BT BV BR BZ CS CL CJ CT CV DB DJ GL GR GJ HR HD IL IS IF "
    "MM MH MS NT OT PH SM SJ SB SV TR TM TL VS VL VN".split()
)
_BG_REGIONS = frozenset(
    "A B BH BP BT E EB EH K KH M H OB P PA PB PK PP C CA CB CH CM CO CC CT T TX X Y".split()
)
_TR_PROVINCES = frozenset(f"{i:02d}" for i in range(1, 82))
# DE: the closed set of one-letter district codes (two and three letters: not listed).
_DE_ONE_LETTER = frozenset("ABCDEFGHKLMNPRSVWZ")
# PL: after the district code, B D I O Z are never used (they read as 8 0 1 0 2).
_PL = {"V": "BCDEFGHKLNOPRSTUWZ", "R": "ACEFGHJKLMNPQRSTUVWXY"}
# fmt: off
_PL_PATTERNS = (
    "VL DDDDD", "VL DDDDR", "VL DDDRR", "VL NRDDD", "VL NRRDD",  # two-letter districts
    "VLL RDDD", "VLL DDRR", "VLL NRDD", "VLL DDRN", "VLL NRRN", "VLL RRDD",  # three letters
    "VLL DDDDD", "VLL DDDDR", "VLL DDDRR", "VLL RDDR", "VLL RNRR",  # three, added 2023
)
# fmt: on

_FORMATS: tuple[PlateFormat, ...] = (
    # Lithuania, since 2004: "ABC 123".
    PlateFormat("LT", ("LLL DDD",)),
    # Latvia: two letters and one to four digits, "AB-1234".
    PlateFormat("LV", ("LL-D[D][D][D]",)),
    # Estonia, since 2004: "123 ABC".
    PlateFormat("EE", ("DDD LLL",)),
    # Poland, since 2000: voivodeship letter (V; H services, U army) and one or two
    # district letters, then the vehicle part as the regulation lists it ("zasoby").
    PlateFormat("PL", _PL_PATTERNS, classes=_PL),
    # Bulgaria: region code of one or two letters, four digits, two letters, "CA 1234 AB";
    # only the twelve letters that are alike in Cyrillic and Latin.
    PlateFormat("BG", ("L[L] DDDD LL",), letters=_CYRILLIC_TWINS, codes=_BG_REGIONS),
    # Romania: county code, two digits, three letters, "CJ 12 ABC"; Bucharest "B 123 ABC".
    PlateFormat("RO", ("LL DD LLL",), codes=_RO_COUNTIES),
    PlateFormat("RO", ("L DD[D] LLL",), codes=frozenset({"B"})),
    # Turkey: province 01-81, one to three letters, two to five digits, "34 ABC 123";
    # Turkish letters without diacritics (no Q, W, X).
    PlateFormat(
        "TR",
        ("DD L DDDD[D]", "DD LL DDD[D]", "DD LLL DD[D]"),
        letters="ABCDEFGHIJKLMNOPRSTUVYZ",
        codes=_TR_PROVINCES,
    ),
    # Vietnam: province 11-99, a series of one or two characters, four or five digits,
    # "51G-123.45" (shown "51G-12345").  Not a country of ours, but of the clips engineers
    # replay: known so that its plates are not named Turkish, whose "DD L DDDD[D]" shape
    # they share (a tie between the two names no country).
    PlateFormat("VN", ("DDL-DDDD[D]", "DDLL-DDDDD", "DDLN-DDDDD"),
                codes=frozenset(f"{i}" for i in range(11, 100))),
    # Ukraine, since 2004: "AA 1234 BB", the twelve letters alike in Cyrillic and Latin.
    PlateFormat("UA", ("LL DDDD LL",), letters="ABCEHIKMOPTX"),
    # Belarus, since 2004: "1234 AB-7", the last digit the region.
    PlateFormat("BY", ("DDDD LL-N",), letters="ABEIKMHOPCTX"),
    # Germany: district code of one to three letters, one or two letters, a number 1-9999,
    # eight characters at most, "M-AB 1234"; an optional E (electric) or H (historic).
    PlateFormat("DE", ("L[L][L]-L[L] N[D][D][D]",), codes=_DE_ONE_LETTER, max_chars=8),
    PlateFormat(
        "DE", ("L[L][L]-L[L] N[D][D][D]S",), classes={"S": "EH"}, codes=_DE_ONE_LETTER, max_chars=9
    ),
    # Finland: two or three letters and one to three digits, "ABC-123".
    PlateFormat("FI", ("LL[L]-D[D][D]",)),
    # Slovakia: two letters, three digits, two letters, "BA-123AB".
    PlateFormat("SK", ("LL-DDDLL",)),
    # Czechia, since 2001: digit, region letter, letter or digit, four digits, "1A2 3456".
    PlateFormat("CZ", ("NRX DDDD",), classes={"R": "ABCEHJKLMPSTUZ", "X": _AZ + _DIGITS}),
    # Hungary: "ABC-123" (1990-2022) and "AA BC-123" (since 2022).
    PlateFormat("HU", ("LLL-DDD", "LL LL-DDD")),
    # Georgia, since 2014: "AB-123-CD".
    PlateFormat("GE", ("LL-DDD-LL",)),
    # Great Britain, since 2001: "AB12 CDE": area letter and office letter (no I, Q, Z),
    # age digits, then three letters without I or Q.
    PlateFormat(
        "GB",
        ("AODD CCC",),
        classes={"A": "ABCDEFGHKLMNOPRSVWY", "O": "ABCDEFGHJKLMNOPRSTUVWXY",
                 "C": "ABCDEFGHJKLMNOPRSTUVWXYZ"},
    ),
    # Russia: "A123BC 77" (region two or three digits), Cyrillic letters with a Latin twin.
    PlateFormat("RU", ("LDDDLL DD[D]",), letters=_CYRILLIC_TWINS),
    # United States, only the two commonest passenger shapes: California "7ABC123" and
    # "ABC-1234" (New York, Pennsylvania, Texas and others).  Known so that such a plate is
    # taken as read rather than bent into a European format one substitution away.
    PlateFormat("US", ("NLLLDDD", "LLL-DDDD")),
)

KNOWN_COUNTRIES: tuple[str, ...] = tuple(dict.fromkeys(f.country for f in _FORMATS))

MAX_SUBSTITUTIONS = 2  # and never more than a third of the characters
MAX_COST = 2.0  # confidence-weighted: two plain corrections, or one of a sure character
_EPS = 1e-9
_SEPARATORS = " -"

# --------------------------------------------------------------------------- compiling


# A text is compiled to one integer with a bit per position and character: bit
# `i * _BLOCK + _INDEX[c]` for character c at position i.  A pattern holds the same kind
# of integer for the characters it rejects, so `text & pattern.bad` has one bit for each
# position that needs a correction, and `bit_count()` counts them.
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_BLOCK = len(_ALPHABET)


@dataclass(frozen=True, slots=True)
class _Pattern:
    """One expanded pattern, compiled."""

    country: str
    length: int
    bad: int  # bits of the characters each position does not take as they are
    unfixable: int  # ... nor after one confusion
    fixes: tuple[Mapping[str, tuple[str, float]], ...]  # per position: char -> (fix, cost)
    seps: tuple[str, ...]  # the separator written after each character
    code_len: int
    codes: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Fit:
    """A read fitted to one pattern, before confidences are weighed."""

    country: str
    text: str
    seps: tuple[str, ...]
    fixes: tuple[tuple[int, float], ...]  # (position, base cost) of each substitution


def _expand(pattern: str) -> list[str]:
    out = [""]
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = pattern.index("]", i)
            out = [o + part for o in out for part in ("", pattern[i + 1 : j])]
            i = j + 1
        else:
            out = [o + pattern[i] for o in out]
            i += 1
    return list(dict.fromkeys(out))


def _fix_table(chars: str) -> dict[str, tuple[str, float]]:
    """For each character outside `chars`: its cheapest confusion inside, with the cost."""
    table = {}
    for c in _KEEP.difference(chars):
        fix = next(((t, cost) for t, cost in READ_AS.get(c, ()) if t in chars), None)
        if fix is not None:
            table[c] = fix
    return table


def _compile(fmt: PlateFormat) -> list[_Pattern]:
    classes = {"L": fmt.letters, "D": _DIGITS, "N": _DIGITS[1:], **fmt.classes}
    code_lens = {len(c) for c in fmt.codes}
    compiled = []
    for pattern in (p for raw in fmt.patterns for p in _expand(raw)):
        sets: list[str] = []
        seps: list[str] = []
        code_len = 0
        for symbol in pattern:
            if symbol in _SEPARATORS:
                seps[-1] += symbol
                code_len = code_len or len(sets)
            else:
                sets.append(classes[symbol])
                seps.append("")
        if len(sets) > fmt.max_chars:
            continue
        codes = fmt.codes if code_len in code_lens else frozenset()
        fixes = tuple(_fix_table(chars) for chars in sets)
        bad = unfixable = 0
        for i, (chars, fix) in enumerate(zip(sets, fixes, strict=True)):
            for c in _KEEP.difference(chars):
                bad |= 1 << (i * _BLOCK + _INDEX[c])
                if c not in fix:
                    unfixable |= 1 << (i * _BLOCK + _INDEX[c])
        compiled.append(
            _Pattern(fmt.country, len(sets), bad, unfixable, fixes, tuple(seps), code_len, codes)
        )
    return compiled


def _by_length() -> dict[int, list[_Pattern]]:
    out: dict[int, list[_Pattern]] = {}
    for fmt in _FORMATS:
        for p in _compile(fmt):
            out.setdefault(p.length, []).append(p)
    return out


_PATTERNS_BY_LENGTH = _by_length()


def _correct(p: _Pattern, text: str, wrong: int) -> _Fit:
    """`text` corrected at the positions of the bits of `wrong` (all fixable in `p`)."""
    chars = list(text)
    fixes = []
    while wrong:
        i = ((wrong & -wrong).bit_length() - 1) // _BLOCK
        wrong &= wrong - 1
        chars[i], cost = p.fixes[i][text[i]]
        fixes.append((i, cost))
    return _Fit(p.country, "".join(chars), p.seps, tuple(fixes))


@lru_cache(maxsize=8192)
def _fits(text: str) -> tuple[_Fit, ...]:
    """Every pattern `text` (normalised) fits within the substitution cap, in table order."""
    patterns = _PATTERNS_BY_LENGTH.get(len(text))
    if not patterns:
        return ()
    bits = 0
    for i, c in enumerate(text):
        bits |= 1 << (i * _BLOCK + _INDEX[c])
    cap = min(MAX_SUBSTITUTIONS, len(text) // 3)
    fits = []
    for p in patterns:
        wrong = bits & p.bad
        if not wrong:
            fit = _Fit(p.country, text, p.seps, ())
        elif bits & p.unfixable or wrong.bit_count() > cap:
            continue
        else:
            fit = _correct(p, text, wrong)
        if p.codes and fit.text[: p.code_len] not in p.codes:
            continue
        fits.append(fit)
    return tuple(fits)


# --------------------------------------------------------------------------- choosing


def _render(text: str, seps: Sequence[str]) -> str:
    return "".join(c + s for c, s in zip(text, seps, strict=True)).rstrip(_SEPARATORS)


def _agreed(all_seps: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The separators every layout agrees on; where they differ, none."""
    first = all_seps[0]
    if all(seps == first for seps in all_seps):
        return tuple(first)
    return tuple(s if all(o[i] == s for o in all_seps) else "" for i, s in enumerate(first))


@dataclass(slots=True)
class _Choice:
    """A country's cheapest fits: usually one corrected text, several when they tie."""

    country: str
    cost: float
    texts: dict[str, tuple[int, list[tuple[str, ...]]]]  # text -> (substitutions, layouts)


def _weight(conf: float) -> float:
    # 0.5 for a character the OCR was unsure of, 1.5 for one it was sure of (1.0 unknown).
    return 0.5 + (conf if 0.0 <= conf <= 1.0 else (1.0 if conf > 1.0 else 0.0))


_ORDER = {c: i for i, c in enumerate(KNOWN_COUNTRIES)}


def _by_country(text: str, confs: Sequence[float] | None) -> list[_Choice]:
    """The cheapest fits per country, cheapest first, then in `KNOWN_COUNTRIES` order."""
    best: dict[str, _Choice] = {}
    for fit in _fits(text):
        if confs is None:
            cost = sum(c for _, c in fit.fixes)
        else:
            cost = sum(c * _weight(confs[i]) for i, c in fit.fixes)
        if cost > MAX_COST + _EPS:
            continue
        have = best.get(fit.country)
        if have is None or cost < have.cost - _EPS:
            best[fit.country] = _Choice(fit.country, cost, {fit.text: (len(fit.fixes), [fit.seps])})
        elif cost <= have.cost + _EPS:
            have.texts.setdefault(fit.text, (len(fit.fixes), []))[1].append(fit.seps)
    return sorted(best.values(), key=lambda c: (round(c.cost, 6), _ORDER[c.country]))


def _decide(
    text: str, confs: Sequence[float] | None, countries: Sequence[str] | None
) -> tuple[str, str, str | None]:
    """(text, formatted, country) for a normalised read."""
    choices = _by_country(text, confs)
    if countries:
        prior = [countries] if isinstance(countries, str) else countries
        rank = {c.upper(): i for i, c in reversed(list(enumerate(prior)))}
        inside = [c for c in choices if c.country in rank]
        exact_elsewhere = [c for c in choices if c.cost <= _EPS and c.country not in rank]
        # A camera's countries bound the corrections: a read is bent only into their
        # formats.  A read that fits some other known format exactly, and none of the
        # camera's as read, is a foreign plate and stays as read.
        if inside and inside[0].cost <= _EPS:
            choices = inside
        else:
            choices = exact_elsewhere or inside
    if not choices:
        return text, text, None
    if not countries and choices[0].cost > _EPS and _rival(choices):
        # No camera countries, no exact fit, and another country's format corrects the
        # read differently at a comparable cost: which correction is right is open, so
        # the read stays as the OCR saw it (`readings` lists the corrections).
        return text, text, None
    ties = [c for c in choices if c.cost <= choices[0].cost + _EPS]
    if countries and len(ties) > 1:
        preferred = [c for c in ties if c.country in rank]
        if preferred:
            ties = [min(preferred, key=lambda c: rank[c.country])]
    texts = {t for c in ties for t in c.texts}
    if len(texts) > 1:  # equally good corrections disagree: leave the read as it is
        return text, text, ties[0].country if len(ties) == 1 else None
    fixed = texts.pop()
    layouts = [seps for c in ties for seps in c.texts[fixed][1]]
    return fixed, _render(fixed, _agreed(layouts)), ties[0].country if len(ties) == 1 else None


def _rival(choices: Sequence[_Choice]) -> bool:
    """Whether a country other than the cheapest corrects the read into another text at
    a cost within `RIVAL_MARGIN` of the cheapest."""
    best = choices[0]
    return any(
        c.cost <= best.cost + RIVAL_MARGIN + _EPS and set(c.texts) != set(best.texts)
        for c in choices[1:]
    )


RIVAL_MARGIN = 0.5  # corrections this close in cost are equally plausible
_EDGE_EMBLEM_MAX_CONF = 0.6  # an edge character read less surely than this may be an emblem
# What the plate's edges add to a read: the blue band (its stars, in infrared often its
# whole strip) read as E, Z or B before the plate; a screw or the frame as I or 1 before
# it, as I, 1 or J after it.
BAND_GLYPHS = frozenset("EZB")
LEADING_GLYPHS = BAND_GLYPHS | frozenset("I1")
TRAILING_GLYPHS = frozenset("I1J")
_UNSURE_MARGIN = 0.15  # an edge character this much less sure than the rest is doubtful
_TRIM_MAX_COST = 1.0  # with camera countries: the rest may need one plain correction


def unsure_edge(conf: float, rest_conf: float) -> bool:
    """Whether an edge character read at `conf`, beside the rest read at `rest_conf` (mean),
    is doubtful: unsure outright, or read clearly less surely than the rest."""
    return conf <= _EDGE_EMBLEM_MAX_CONF or conf < rest_conf - _UNSURE_MARGIN


def _in(country: str, countries: Sequence[str] | None) -> bool:
    """Whether `country` is one of the camera's (any, where it has none)."""
    if not countries:
        return True
    prior = [countries] if isinstance(countries, str) else countries
    return country in {c.upper() for c in prior}


def _fits_as_read(text: str, countries: Sequence[str] | None) -> bool:
    """Whether `text` fits a format exactly: of the camera's countries where it has any."""
    return any(not f.fixes and _in(f.country, countries) for f in _fits(text))


def edge_trims(
    text: str,
    confs: Sequence[float] | None,
    countries: Sequence[str] | None = None,
    *,
    night: bool = False,
) -> list[tuple[int, int]]:
    """(start, end) of the rests of `text` left when what a plate's edges add is dropped,
    best first: a character (or the band's two country letters) before the plate, or one
    after it.

    With camera countries an edge character is dropped when the read does not fit their
    formats as it is and the rest does, more cheaply (one plain correction allowed); where
    the whole read fits another country's format exactly (a foreign plate) only a band
    glyph before it, or a doubtful edge glyph.  Without camera countries: a typical edge
    glyph read less surely than the rest, or any edge character read unsurely where the
    whole read fits no format; the rest must fit a known format exactly (at night, where
    the OCR errs more, with one correction).  A pass adds its own evidence (`vote`).
    A read that fits the camera's formats as read keeps every character.
    """
    n = len(text)
    if n < 6 or (countries and _fits_as_read(text, countries)):
        return []
    whole_fits = bool(_fits(text))
    foreign = any(not f.fixes for f in _fits(text))  # (none of the camera's: see above)
    whole_cost = min(
        (c.cost for c in _by_country(text, confs) if _in(c.country, countries)), default=math.inf
    )
    out = []
    for start, end in ((1, n), (2, n), (0, n - 1)):
        rest = text[start:end]
        cut = text[:start] + text[end:]
        rest_confs = None if confs is None else confs[start:end]
        if start == 2 and cut not in KNOWN_COUNTRIES:
            continue
        glyph_ok = cut in (LEADING_GLYPHS if start else TRAILING_GLYPHS)
        conf = None if confs is None else confs[0 if start else -1]
        unsure = conf is not None and unsure_edge(
            conf, sum(rest_confs or ()) / max(1, len(rest_confs or ()))
        )
        doubtful_glyph = glyph_ok and unsure
        if countries:
            if foreign and not (doubtful_glyph or (start == 1 and cut in BAND_GLYPHS)):
                continue  # a foreign plate read whole, unless its edge may be the band
            fits = [c for c in _by_country(rest, rest_confs) if _in(c.country, countries)]
            if fits and fits[0].cost <= min(_TRIM_MAX_COST, whole_cost) + _EPS and (
                fits[0].cost + _EPS < whole_cost
            ):
                out.append((start, end))
            continue
        rest_fits = _by_country(rest, rest_confs)
        if not rest_fits or rest_fits[0].cost > _TRIM_MAX_COST + _EPS:
            continue
        if start == 2:  # the band's country letters: the rest must be of that country
            if any(not f.fixes and f.country == cut for f in _fits(rest)):
                out.append((start, end))
            continue
        exact_rest = rest_fits[0].cost <= _EPS  # by day a dropped glyph leaves an exact fit
        emblem = conf is not None and conf <= _EDGE_EMBLEM_MAX_CONF and not whole_fits
        if (doubtful_glyph and (exact_rest or night)) or (emblem and exact_rest):
            out.append((start, end))
    return out


def _decide_trimmed(
    text: str,
    confs: Sequence[float] | None,
    countries: Sequence[str] | None,
    night: bool = False,
) -> tuple[str, str, str | None, slice]:
    """`_decide`, or where what the plate's edges add is read (`edge_trims`): `_decide`
    on the rest.  The slice says which characters of `text` were kept."""
    for start, end in edge_trims(text, confs, countries, night=night):
        rest = text[start:end]
        rest_confs = None if confs is None else confs[start:end]
        band = text[:start] if start == 2 else ""
        return (*_decide(rest, rest_confs, [band] if band else countries), slice(start, end))
    return (*_decide(text, confs, countries), slice(None))


@dataclass(frozen=True, slots=True)
class CountryFit:
    """A read fitted to one country's formats: `text` (corrected) is the fit of the read's
    characters `start:end` (what the plate's edges add left out), at `cost`."""

    country: str
    text: str
    cost: float
    start: int
    end: int


def country_fits(
    text: str,
    confs: Sequence[float] | None = None,
    countries: Sequence[str] | None = None,
    *,
    night: bool = False,
) -> list[CountryFit]:
    """Every country's cheapest fits of a normalised read, and of the read without what the
    plate's edges add (`edge_trims`), cheapest first.  With camera countries: their formats,
    and other countries' only where a read fits exactly."""
    if confs is not None and len(confs) != len(text):
        confs = None
    out = []
    for start, end in [(0, len(text)), *edge_trims(text, confs, countries, night=night)]:
        rest = text[start:end]
        for choice in _by_country(rest, None if confs is None else confs[start:end]):
            if not (_in(choice.country, countries) or choice.cost <= _EPS):
                continue
            for fixed in choice.texts:
                out.append(CountryFit(choice.country, fixed, choice.cost, start, end))
    return sorted(out, key=lambda f: (round(f.cost, 6), f.end - f.start != len(text)))


def readings(
    text: str,
    countries: Sequence[str] | None = None,
    *,
    also: Sequence[str] = (),
    limit: int = 4,
) -> list[str]:
    """Other readings of `text` (normalised, as decided): the other corrections the
    formats (of the camera's countries, where it has any) would make, cheapest first,
    after the texts in `also` (e.g. the read as OCR saw it); `text` itself not included.
    The OCR's confidence does not bound them: they are what a watchlist may also try."""
    out: list[str] = []
    for t in also:
        if t and t != text and t not in out:
            out.append(t)
    for choice in _by_country(text, None):  # plain costs: however sure the OCR was
        if _in(choice.country, countries):
            out += [t for t in choice.texts if t != text and t not in out]
    return out[:limit]


def country_candidates(text: str) -> list[tuple[str, str, int]]:
    """(country, corrected text, substitutions) for every country `text` fits, best first;
    a country whose equally cheap corrections disagree is listed once for each."""
    return [
        (c.country, fixed, subs)
        for c in _by_country(normalise(text), None)
        for fixed, (subs, _) in c.texts.items()
    ]


def format_plate(text: str, country: str | None) -> str:
    """`text` as written on the plate in `country` ("ABC123", "LT" -> "ABC 123"); `text`
    unchanged when the country is unknown or the text fits none of its formats as is."""
    if not country:
        return text
    norm = normalise(text)
    layouts = [f.seps for f in _fits(norm) if f.country == country.upper() and not f.fixes]
    return _render(norm, _agreed(layouts)) if layouts else text


def parse(
    raw: str,
    confidence: float = 1.0,
    char_confidence: Sequence[float] = (),
    countries: Sequence[str] | None = None,
    *,
    night: bool = False,
) -> PlateText:
    """Normalise a read, fit it to the known formats, correct it where a format says so.

    The country is the one whose formats the read fits with the cheapest corrections.
    `char_confidence`, one per character of the normalised text (ignored otherwise), makes
    changing a character the OCR was sure of cost more.  `countries`, the camera's expected
    countries in order of preference, bounds the corrections to their formats (another
    country is named only for an exact fit) and breaks ties between equally good fits.  Where fits
    in several countries tie and none is preferred the country is None, and the read is
    corrected only if all of them agree on the correction.  A read that fits nothing within
    `MAX_SUBSTITUTIONS` (and a third of its length) and `MAX_COST` comes back as read.
    """
    text = normalise(raw)
    confs = tuple(float(c) for c in char_confidence)
    usable = len(confs) == len(text)
    fixed, formatted, country, kept = _decide_trimmed(
        text, confs if usable else None, countries, night
    )
    if usable:
        confs = confs[kept]
    return PlateText(raw, fixed, formatted, country, float(confidence), confs)
