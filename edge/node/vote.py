"""Agree one plate read from the many reads of one vehicle."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

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

    agreed, char_conf = _vote_characters(group_reads, seed, weight)
    votes = len(group_reads)
    agreement = votes / total
    mean_char = sum(char_conf) / len(char_conf)
    # One read alone is less sure than several agreeing: 0.7, 0.85, 0.93, ... 1.
    support = 1.0 - 0.3 * 0.5 ** (votes - 1)
    confidence = min(1.0, max(0.0, mean_char * math.sqrt(agreement) * support))

    plate = plates.parse(
        agreed, confidence=confidence, char_confidence=char_conf, countries=countries
    )
    if len(plate.text) < MIN_LENGTH:
        return None

    def best_key(item: tuple[PlateRead, str]) -> tuple[bool, float, float]:
        read, text = item
        x1, y1, x2, y2 = read.box
        return text == agreed, round(read.confidence, 2), max(0.0, x2 - x1) * max(0.0, y2 - y1)

    best = max(group_reads, key=best_key)[0]
    alternatives = sorted(
        ((t, n) for t, n in count.items() if t not in (agreed, plate.text)),
        key=lambda tn: (-tn[1], tn[0]),
    )[:MAX_ALTERNATIVES]
    return Vote(
        plate=plate,
        votes=votes,
        total=total,
        confidence=float(plate.confidence),
        best=best,
        alternatives=alternatives,
    )


def _vote_characters(
    group: list[tuple[PlateRead, str]], seed: str, weight: dict[str, float]
) -> tuple[str, tuple[float, ...]]:
    """Vote position by position over the group's modal length.

    Returns the agreed text and, per position, the winner's support divided by
    the voters there: the mean confidence of that character, dissenters counting 0.
    """
    length_weight: defaultdict[int, float] = defaultdict(float)
    for read, text in group:
        length_weight[len(text)] += read.confidence
    length = max(length_weight, key=lambda n: (length_weight[n], n == len(seed)))
    reference = (
        seed
        if len(seed) == length
        else max((t for _, t in group if len(t) == length), key=lambda t: weight[t])
    )

    scores: list[defaultdict[str, float]] = [defaultdict(float) for _ in range(length)]
    voters = [0.0] * length
    for read, text in group:
        scale = 0.5 + 0.5 * read.detection_confidence
        cc = read.plate.char_confidence
        per_char = (
            [c * scale for c in cc] if len(cc) == len(text) else [read.confidence] * len(text)
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
    return "".join(chars), tuple(confidence)


def _align(text: str, reference: str) -> list[int | None]:
    """For each position of `reference`, the index of `text` aligned with it (edit
    distance alignment), or None where `text` dropped that character."""
    aligned: list[int | None] = [None] * len(reference)
    for i, j in alignment(text, reference):
        if j is not None:
            aligned[j] = i
    return aligned
