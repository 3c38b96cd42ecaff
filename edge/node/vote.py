"""Agree one plate read from the many reads of one vehicle."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from edge.core import plates
from edge.core.edit import alignment, levenshtein
from edge.core.types import PlateRead, PlateText

MIN_LENGTH = 3  # shorter texts are fragments and never win
MAX_ALTERNATIVES = 5
# Reads whose length differs from the agreed length are aligned onto it, and
# count for less: an inserted or dropped character makes their other positions
# less certain too.
ALIGNED_WEIGHT = 0.5


@dataclass(frozen=True)
class Vote:
    """The read agreed over a vehicle's reads, and how far they agreed."""

    plate: PlateText  # the agreed text, after the plate rules
    votes: int  # reads in the agreeing group
    total: int  # reads with any text
    confidence: float  # 0..1
    best: PlateRead  # the read whose crop best shows the agreed plate
    alternatives: list[tuple[str, int]] = field(default_factory=list)  # (text, reads)
    # other readings of the agreed characters: as the OCR saw them where the formats bent
    # them, the corrections other countries' formats would make, the read with its edge
    readings: list[str] = field(default_factory=list)


def read_text(read: PlateRead) -> str:
    """The text a read votes with: its raw OCR text, normalised but not format-corrected."""
    raw = read.plate.raw
    return plates.normalise(raw) if raw else read.plate.text


def similar(a: str, b: str) -> bool:
    """Whether two normalised texts are plausibly reads of one plate."""
    limit = 2 if min(len(a), len(b)) >= 7 else 1
    return abs(len(a) - len(b)) <= limit and levenshtein(a, b) <= limit


def vote(reads: Sequence[PlateRead], countries: Sequence[str] | None = None) -> Vote | None:
    """Agree one read from `reads` of one vehicle, or None when there is nothing to agree on.

    Reads are grouped around the best supported texts (edit distance 1, 2 for
    long plates); the group with the most read confidence wins; its characters
    are voted position by position, weighted by character confidence; and only
    then are the plate rules (`plates.parse`) applied to the agreed text.
    """
    texts = [read_text(r) for r in reads]
    voters = [(r, t) for r, t in zip(reads, texts, strict=True) if len(t) >= MIN_LENGTH]
    if not voters:
        return None
    total = sum(1 for t in texts if t)

    weight: defaultdict[str, float] = defaultdict(float)
    count: Counter[str] = Counter()
    for read, text in voters:
        weight[text] += read.confidence
        count[text] += 1

    # Seed groups with the best supported texts; every text joins its nearest seed.
    seeds: list[str] = []
    members: dict[str, list[str]] = {}
    for text in sorted(weight, key=lambda t: (-weight[t], -count[t], t)):
        near = [(levenshtein(text, s), i) for i, s in enumerate(seeds) if similar(text, s)]
        if near:
            members[seeds[min(near)[1]]].append(text)
        else:
            seeds.append(text)
            members[text] = [text]
    seed = max(
        seeds,
        key=lambda s: (sum(weight[t] for t in members[s]), sum(count[t] for t in members[s])),
    )
    group = set(members[seed])
    group_reads = [(r, t) for r, t in voters if t in group]

    fused = _fuse_by_country(group_reads, countries)
    seen_as: list[str] = []  # texts the OCR saw that the fusion may have bent or cut
    if fused is None:
        country = None
        raw_agreed = ""
        agreed, char_conf = _vote_characters(
            [(r, t, _char_confs(r, t)) for r, t in group_reads], seed, weight
        )
        votes = len(group_reads)
    else:
        country, seen_as = fused.country, fused.seen
        agreed, char_conf = _vote_characters(fused.fitted, seed, weight)
        raw_agreed = _vote_characters(fused.as_seen, seed, weight)[0]
        votes = len(fused.fitted)
    agreement = votes / total
    mean_char = sum(char_conf) / len(char_conf)
    # One read alone is less sure than several agreeing: 0.7, 0.85, 0.93, ... 1.
    support = 1.0 - 0.3 * 0.5 ** (votes - 1)
    confidence = min(1.0, max(0.0, mean_char * math.sqrt(agreement) * support))

    plate = plates.parse(
        agreed, confidence=confidence, char_confidence=char_conf, countries=countries
    )
    if country is not None and plate.country != country and not countries:
        # the pass decided its country: the agreed text is read in that country's formats
        # (where they tie with another, parse named none and that stands)
        decided = plates.parse(
            agreed, confidence=confidence, char_confidence=char_conf, countries=[country]
        )
        if plate.country is not None or decided.text != plate.text:
            plate = decided
    if raw_agreed:  # the raw text is what the OCR saw, voted
        plate = replace(plate, raw=raw_agreed)
    if len(plate.text) < MIN_LENGTH:
        return None

    def best_key(item: tuple[PlateRead, str]) -> tuple[bool, float, float]:
        read, text = item
        x1, y1, x2, y2 = read.box
        area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        return text in (agreed, raw_agreed), round(read.confidence, 2), area

    best = max(group_reads, key=best_key)[0]
    alternatives = sorted(
        ((t, n) for t, n in count.items() if t not in (agreed, raw_agreed, plate.text)),
        key=lambda tn: (-tn[1], tn[0]),
    )[:MAX_ALTERNATIVES]
    return Vote(
        plate=plate,
        votes=votes,
        total=total,
        confidence=float(plate.confidence),
        best=best,
        alternatives=alternatives,
        readings=plates.readings(plate.text, countries,
                                 also=[raw_agreed or agreed, *seen_as]),
    )


# A read whose edge character may be the band's counts for its whole text this much less
# than for the text without it.
WHOLE_WEIGHT = 0.8
# Without camera countries: a country whose reads fit it exactly carry less than this share
# of the pass is decided only where no other country's correction comes close (this share
# of its support); otherwise the reads are fused as the OCR saw them.
EXACT_SHARE = 0.5
RIVAL_SHARE = 0.6
# ... unless at least this share of the pass read the country's text exactly as it is, and
# less than this share the rival's: the OCR saw the one, not the other (a Czech 1B8 0338
# read 1880338 in most frames and 1B80338 as it came closer; never as Turkish 18B0338).
# A read counts here by the plate's width in it against the widest of the pass: a Slovak
# BA-302OZ read BA3020Z up close is no Polish BA30202 for a few far frames that read a 2.
SEEN_SHARE = 0.15
# An edge glyph (plates.LEADING_GLYPHS, TRAILING_GLYPHS) is not the plate's where at least
# this share of the pass read the plate without it.
EDGE_EVIDENCE = 0.1


# A voted position whose winner has less than this support, where at least this share of
# the pass read the text without it exactly, is dropped (`_vote_characters`), unless
# at least this share of the voters there read it alike.
LONE_CONF = 0.4
LONE_SHARE = 0.2
LONE_ALIKE = 0.5

_Voter = tuple[PlateRead, str, tuple[float, ...] | None]  # (read, text, char confidences)


@dataclass(frozen=True)
class _Fusion:
    """A pass's reads in its country: `country` (None where, without camera countries,
    another country's correction comes as close: the reads then vote as the OCR saw them),
    the voters with their texts fitted to it, the voters with the characters the OCR saw
    (edges cut), and whole texts seen where an edge was cut."""

    country: str | None
    fitted: list[_Voter]
    as_seen: list[_Voter]
    seen: list[str]


def _width(read: PlateRead) -> float:
    x1, _, x2, _ = read.box
    return max(0.0, x2 - x1)


def _char_confs(read: PlateRead, text: str) -> tuple[float, ...] | None:
    cc = read.plate.char_confidence
    return tuple(cc) if len(cc) == len(text) else None


_Edge = tuple[int, str]  # (side: 0 before the plate, 1 after it; the rest of the read)


def _edge_doubts(group: list[tuple[PlateRead, str]]) -> set[_Edge]:
    """The edges the pass read doubtfully: over the reads with a character there (any
    character: a band, an emblem or a frame is read as whatever it looks like), the
    character's confidence, weighted by the read's, is doubtful beside the rest's
    (`plates.unsure_edge`).  A real character is read about as surely as its neighbours
    in most frames; what a plate's edge adds is a guess that wavers from frame to frame."""
    edge: defaultdict[_Edge, float] = defaultdict(float)
    rest: defaultdict[_Edge, float] = defaultdict(float)
    weight: defaultdict[_Edge, float] = defaultdict(float)
    for read, text in group:
        confs = _char_confs(read, text)
        if confs is None or len(text) < 6:
            continue
        for side, key, cc in ((0, text[1:], confs[1:]), (1, text[:-1], confs[:-1])):
            w = read.confidence
            edge[side, key] += w * (confs[0] if side == 0 else confs[-1])
            rest[side, key] += w * sum(cc) / len(cc)
            weight[side, key] += w
    return {k for k, w in weight.items()
            if w > 0 and plates.unsure_edge(edge[k] / w, rest[k] / w)}


def _pass_trims(
    text: str,
    confs: tuple[float, ...] | None,
    countries: Sequence[str] | None,
    read_as: dict[str, float],
    everyone: float,
    fits: list[plates.CountryFit],
    doubts: set[_Edge],
) -> list[plates.CountryFit]:
    """Fits of `text` without an edge character where the pass itself shows it is not the
    plate's: an edge glyph where at least `EDGE_EVIDENCE` of the pass read the text
    without it; any character, read doubtfully across the pass (`_edge_doubts`), where
    some read of the pass saw the text without it and that text fits a format as read.
    (A band at night, in greyscale, is read as a letter a real plate may start with: a
    Slovak shield as P, and PRK 755AJ is a Polish format, RK-755AJ the Slovak plate.)"""
    out = []
    n = len(text)
    for side, start, end, glyphs in ((0, 1, n, plates.LEADING_GLYPHS),
                                     (1, 0, n - 1, plates.TRAILING_GLYPHS)):
        rest = text[start:end]
        seen = read_as.get(rest, 0.0)
        if len(rest) < 5 or seen <= 0.0 or any(f.start == start and f.end == end for f in fits):
            continue
        glyph = text[:start] + text[end:] in glyphs and seen >= EDGE_EVIDENCE * everyone
        doubted = (side, rest) in doubts
        if not (glyph or doubted):
            continue
        rest_confs = None if confs is None else confs[start:end]
        out += [plates.CountryFit(f.country, f.text, f.cost, start, end)
                for f in plates.country_fits(rest, rest_confs, countries)
                if f.end - f.start == len(rest) and (glyph or f.cost <= 1e-9)]
    return out


def _fuse_by_country(
    group: list[tuple[PlateRead, str]], countries: Sequence[str] | None
) -> _Fusion | None:
    """One country for the pass, from the formats every read fits, and each read's text in
    it; None where most of the pass fits no format.

    A read supports each country by its cheapest fit there (of the whole read, or of the
    read without what the plate's edges add), weighted by its confidence and by how little
    the fit corrects.  The country with the most support wins; its reads vote with their
    texts fitted to it: corrected, or with no camera countries and a comparable rival
    correction, as the OCR saw them.
    """
    support: defaultdict[str, float] = defaultdict(float)
    exact: defaultdict[str, float] = defaultdict(float)
    seen_exact: defaultdict[str, float] = defaultdict(float)  # exact, by the plate's size
    widest = max((_width(read) for read, _ in group), default=0.0) or 1.0
    fits_of: list[dict[str, plates.CountryFit]] = []
    total = fitting = 0.0
    read_as: defaultdict[str, float] = defaultdict(float)  # weight of the reads of each text
    for read, text in group:
        read_as[text] += read.confidence
    everyone = sum(read_as.values())
    doubts = _edge_doubts(group)
    for read, text in group:
        confs = _char_confs(read, text)
        fits = plates.country_fits(text, confs, countries, night=read.night)
        fits += _pass_trims(text, confs, countries, read_as, everyone, fits, doubts)
        cut = any(f.end - f.start != len(text) for f in fits)
        best: dict[str, tuple[float, plates.CountryFit]] = {}
        for fit in fits:
            quality = 1.0 / (1.0 + fit.cost)
            if cut and fit.end - fit.start == len(text):
                quality *= WHOLE_WEIGHT
            if fit.country not in best or quality > best[fit.country][0]:
                best[fit.country] = (quality, fit)
        for country, (quality, fit) in best.items():
            support[country] += read.confidence * quality
            if fit.cost <= 1e-9:
                exact[country] += read.confidence
                # a plate seen small is seen less well: the far frames' exact fits count
                # for less than the near ones'
                seen_exact[country] += read.confidence * _width(read) / widest
        total += read.confidence
        fitting += read.confidence if best else 0.0
        fits_of.append({c: f for c, (_, f) in best.items()})
    if not support:
        return None
    rank = {c.upper(): i for i, c in reversed(list(enumerate(countries or ())))}
    order = {c: i for i, c in enumerate(plates.KNOWN_COUNTRIES)}
    country = max(support, key=lambda c: (round(support[c], 9), -rank.get(c, len(rank)),
                                          -order.get(c, len(order))))
    if fitting < 0.5 * total:  # most of the pass fits no format: nothing to decide
        return None
    as_read = False
    if not countries and exact[country] < EXACT_SHARE * total:
        texts = {f.text for fits in fits_of for c, f in fits.items() if c == country}
        # reads that fit the country as read are the OCR seeing its text: a rival whose
        # text the OCR (all but) never saw is a correction only, and no rival
        seen_so = seen_exact[country] >= SEEN_SHARE * total
        as_read = any(
            support[c] >= RIVAL_SHARE * support[country]
            and (not seen_so or seen_exact[c] >= SEEN_SHARE * total)
            and {f.text for fits in fits_of for k, f in fits.items() if k == c} != texts
            for c in support if c != country
        )
    fitted: list[tuple[PlateRead, str, tuple[float, ...] | None]] = []
    raw: list[tuple[PlateRead, str, tuple[float, ...] | None]] = []
    seen: list[str] = []
    for (read, text), by_country in zip(group, fits_of, strict=True):
        confs = _char_confs(read, text)
        found = by_country.get(country)
        if found is None:  # fits no format of the country: votes as read
            fitted.append((read, text, confs))
            raw.append((read, text, confs))
            continue
        kept = None if confs is None else confs[found.start : found.end]
        fitted.append((read, text[found.start : found.end] if as_read else found.text, kept))
        raw.append((read, text[found.start : found.end], kept))
        if found.end - found.start != len(text) and text not in seen:
            seen.append(text)
    return _Fusion(None if as_read else country, fitted, raw, seen[:2])


def _vote_characters(
    group: list[tuple[PlateRead, str, tuple[float, ...] | None]],
    seed: str,
    weight: dict[str, float],
    length: int | None = None,
) -> tuple[str, tuple[float, ...]]:
    """Vote position by position over the group's modal length (or `length`).

    Returns the agreed text and, per position, the winner's support divided by
    the voters there: the mean confidence of that character, dissenters counting 0.
    A position the reads hardly agree on (`LONE_CONF`, `LONE_ALIKE`), where a share of the pass
    (`LONE_SHARE`) read the rest exactly without it, is no character of the plate: the
    group is voted again one shorter (a bolt, a stain or a seam read as a character in
    some frames, as something else in others).
    """
    length_weight: defaultdict[int, float] = defaultdict(float)
    text_weight: defaultdict[str, float] = defaultdict(float)
    for read, text, _ in group:
        length_weight[len(text)] += read.confidence
        text_weight[text] += read.confidence
    forced = length is not None
    if length is None:
        length = max(length_weight, key=lambda n: (length_weight[n], n == len(seed)))
    reference = (
        seed
        if len(seed) == length and seed in text_weight
        else max((t for _, t, _ in group if len(t) == length),
                 key=lambda t: (weight.get(t, 0.0) + text_weight[t], t))
    )

    scores: list[defaultdict[str, float]] = [defaultdict(float) for _ in range(length)]
    seen: list[defaultdict[str, float]] = [defaultdict(float) for _ in range(length)]
    voters = [0.0] * length
    for read, text, cc in group:
        scale = 0.5 + 0.5 * read.detection_confidence
        per_char = (
            [c * scale for c in cc]
            if cc is not None and len(cc) == len(text)
            else [read.confidence] * len(text)
        )
        if len(text) == length:
            positions: list[int | None] = list(range(length))
            share = 1.0
        else:
            positions = _align(text, reference)
            share = ALIGNED_WEIGHT
        for pos, index in enumerate(positions):
            voters[pos] += share
            if index is not None:
                scores[pos][text[index]] += share * per_char[index]
                seen[pos][text[index]] += share

    chars: list[str] = []
    confidence: list[float] = []
    for pos, score in enumerate(scores):
        if score:
            favoured = reference[pos]
            ch = max(score, key=lambda c: (score[c], c == favoured))
        else:
            ch = reference[pos]
        chars.append(ch)
        confidence.append(min(1.0, score[ch] / voters[pos]) if voters[pos] else 0.0)
    agreed = "".join(chars)
    if not forced and length > MIN_LENGTH:
        everyone = sum(text_weight.values())
        for pos in sorted(range(length), key=lambda p: confidence[p]):
            if confidence[pos] >= LONE_CONF:
                break
            rest = agreed[:pos] + agreed[pos + 1 :]
            alike = seen[pos][agreed[pos]] / voters[pos] if voters[pos] else 0.0
            if alike < LONE_ALIKE and text_weight.get(rest, 0.0) >= LONE_SHARE * everyone:
                return _vote_characters(group, rest, weight, length - 1)
    return agreed, tuple(confidence)


def _align(text: str, reference: str) -> list[int | None]:
    """For each position of `reference`, the index of `text` aligned with it (edit
    distance alignment), or None where `text` dropped that character."""
    aligned: list[int | None] = [None] * len(reference)
    for i, j in alignment(text, reference):
        if j is not None:
            aligned[j] = i
    return aligned
