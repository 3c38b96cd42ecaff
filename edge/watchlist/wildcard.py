"""Partial-plate patterns (`AB?12?`, `*1234`, `AB*9`) indexed so a read finds its few candidates.

Patterns without `*` have a fixed length: per length, each position keeps a bit set of
the patterns that accept each character there, and a read ANDs one set per character.
Patterns with `*` are filed under three known characters (the start, the end, or a run
inside) and checked one by one.  Both work on confusion-folded text, so a fuzzy list
also hits when the OCR mixed up a known character; the hit's distance counts those.
"""

from __future__ import annotations

import functools
import operator
import string
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge.watchlist.distance import CONFUSION_COST, fold
from edge.watchlist.entry import WILDCARD_ANY, WILDCARD_ONE

_KEY_LENS = (4, 3)  # known characters a starred pattern is filed under: 4 if it has them
_READ_CHARS = frozenset(string.ascii_uppercase + string.digits)


@dataclass(frozen=True, slots=True)
class _Starred:
    row: int
    segments: tuple[str, ...]  # the pattern split on '*', as written (normalised)
    folded: tuple[str, ...]
    anchored_start: bool
    anchored_end: bool
    # The common shapes (AB*, *1234, AB*12, no '?') are checked with startswith/endswith.
    simple: bool = False
    head: str = ""
    tail: str = ""
    folded_head: str = ""
    folded_tail: str = ""


def _segment_at(segment: str, text: str, at: int) -> bool:
    if at < 0 or at + len(segment) > len(text):
        return False
    for i, ch in enumerate(segment):
        if ch != WILDCARD_ONE and ch != text[at + i]:
            return False
    return True


def _place(p: _Starred, segments: tuple[str, ...], text: str) -> list[int] | None:
    """Where each segment sits in `text`, leftmost first, or None if the pattern does not fit."""
    n = len(segments)
    where = [0] * n
    lo, hi = 0, len(text)
    first, last = 0, n
    if p.anchored_start:
        if not _segment_at(segments[0], text, 0):
            return None
        lo = len(segments[0])
        first = 1
    if p.anchored_end and last > first:
        tail = segments[-1]
        if not _segment_at(tail, text, hi - len(tail)) or hi - len(tail) < lo:
            return None
        hi -= len(tail)
        where[n - 1] = hi
        last = n - 1
    for k in range(first, last):
        seg = segments[k]
        at = lo
        while at + len(seg) <= hi and not _segment_at(seg, text, at):
            at += 1
        if at + len(seg) > hi:
            return None
        where[k] = at
        lo = at + len(seg)
    return where


def _confusions(pattern: str, text: str, at: int) -> int:
    return sum(1 for i, ch in enumerate(pattern) if ch != WILDCARD_ONE and ch != text[at + i])


class WildcardIndex:
    """Candidate finding and checking for the wildcard entries of one index."""

    def __init__(self, patterns: Iterable[tuple[int, str]]):
        fixed: dict[int, list[tuple[int, str]]] = defaultdict(list)
        self._starred: list[_Starred] = []
        for row, pattern in patterns:
            if WILDCARD_ANY in pattern:
                self._add_starred(row, pattern)
            else:
                fixed[len(pattern)].append((row, pattern))
        self.size = sum(map(len, fixed.values())) + len(self._starred)
        # length -> (rows, patterns, per position: folded character -> bits of the
        # patterns that accept it there, for every character a read can have)
        self._fixed: dict[int, tuple[list[int], list[str], list[dict[str, int]]]] = {}
        for length, items in fixed.items():
            masks: list[dict[str, int]] = [defaultdict(int) for _ in range(length)]
            any_bits = [0] * length
            for bit, (_, pattern) in enumerate(items):
                for i, ch in enumerate(fold(pattern)):
                    if ch == WILDCARD_ONE:
                        any_bits[i] |= 1 << bit
                    else:
                        masks[i][ch] |= 1 << bit
            for i in range(length):  # fold '?' into every character's set, once
                masks[i] = {ch: masks[i].get(ch, 0) | any_bits[i] for ch in _READ_CHARS}
            self._fixed[length] = ([r for r, _ in items], [p for _, p in items], masks)
        # Starred patterns filed by known characters, folded (for lists that take
        # confusions) and as written (fewer candidates when none may hit).
        self._folded_files = _Files(self._starred, folded=True)
        self._exact_files = _Files(self._starred, folded=False)

    def _add_starred(self, row: int, pattern: str) -> None:
        parts = pattern.split(WILDCARD_ANY)
        segments = tuple(s for s in parts if s)
        start, end = not pattern.startswith(WILDCARD_ANY), not pattern.endswith(WILDCARD_ANY)
        head = parts[0] if start else ""
        tail = parts[-1] if end else ""
        simple = (
            WILDCARD_ONE not in pattern
            and len(segments) == int(start) + int(end)  # nothing between the ends
        )
        p = _Starred(
            row, segments, tuple(map(fold, segments)), start, end, simple, head, tail,
            fold(head), fold(tail),
        )  # fmt: skip
        self._starred.append(p)

    @staticmethod
    def _fit_simple(p: _Starred, text: str, folded: str) -> int | None:
        """Confusions needed for a simple pattern to fit `text`, or None if it cannot."""
        head, tail = p.head, p.tail
        if len(text) < len(head) + len(tail):
            return None
        if text.startswith(head) and text.endswith(tail):
            return 0
        if not (folded.startswith(p.folded_head) and folded.endswith(p.folded_tail)):
            return None
        n = sum(a != b for a, b in zip(head, text, strict=False))
        if tail:
            n += sum(a != b for a, b in zip(tail, text[-len(tail) :], strict=True))
        return n

    @staticmethod
    def _fit(p: _Starred, text: str, folded: str) -> int | None:
        """Confusions needed for `p` to fit `text` (leftmost placement), or None."""
        if _place(p, p.segments, text) is not None:
            return 0
        where = _place(p, p.folded, folded)
        if where is None:
            return None
        return sum(_confusions(s, text, at) for s, at in zip(p.segments, where, strict=True))

    def match(
        self,
        text: str,
        folded: str,
        limit_of: Callable[[int], float | None],
        confusions: bool = True,
    ) -> list[tuple[int, float]]:
        """(row, distance) of each pattern `text` fits with at most its list's distance.

        `limit_of(row)` gives the largest distance the row's list allows (0 for an exact
        list), or None to skip the row (list gone, wrong country, out of date...).
        With `confusions` False no list takes any, and fewer candidates are looked at.
        """
        out: list[tuple[int, float]] = []
        group = self._fixed.get(len(text))
        if group is not None:
            rows, patterns, masks = group
            # One AND per position, all in C (a read holds only A-Z0-9, each in the masks).
            try:
                bits = functools.reduce(operator.and_, map(dict.__getitem__, masks, folded), -1)
            except KeyError:  # not a normalised read: no partial plate takes it
                bits = 0
            while bits > 0:
                low = bits & -bits
                k = low.bit_length() - 1
                bits ^= low
                distance = _confusions(patterns[k], text, 0) * CONFUSION_COST
                limit = limit_of(rows[k])
                if limit is not None and distance <= limit:
                    out.append((rows[k], distance))
        if self._starred:
            files = self._folded_files if confusions else self._exact_files
            for k in files.candidates(folded if confusions else text):
                p = self._starred[k]
                n = self._fit_simple(p, text, folded) if p.simple else self._fit(p, text, folded)
                if n is None:
                    continue
                limit = limit_of(p.row)
                if limit is not None and n * CONFUSION_COST <= limit:
                    out.append((p.row, n * CONFUSION_COST))
        return out


class _Files:
    """Starred patterns filed under known characters: at the start, at the end, inside;
    patterns with no run of known characters long enough are looked at every time."""

    def __init__(self, starred: list[_Starred], folded: bool):
        by: dict[str, dict[str, list[int]]] = {"^": {}, "$": {}, "~": {}}
        self.scan: list[int] = []
        for k, p in enumerate(starred):
            key = self._key_for(
                p.anchored_start, p.anchored_end, p.folded if folded else p.segments
            )
            if key is None:
                self.scan.append(k)
            else:
                by[key[0]].setdefault(key[1:], []).append(k)
        self.by_head, self.by_tail, self.by_inner = by["^"], by["$"], by["~"]
        self.head_lens = sorted({len(k) for k in self.by_head}, reverse=True)
        self.tail_lens = sorted({len(k) for k in self.by_tail}, reverse=True)

    @staticmethod
    def _key_for(start: bool, end: bool, segments: tuple[str, ...]) -> str | None:
        head, tail = segments[0], segments[-1]
        for n in _KEY_LENS:
            if start and len(head) >= n and WILDCARD_ONE not in head[:n]:
                return "^" + head[:n]
            if end and len(tail) >= n and WILDCARD_ONE not in tail[-n:]:
                return "$" + tail[-n:]
        for seg in segments:
            for run in seg.split(WILDCARD_ONE):
                if len(run) >= _KEY_LENS[-1]:
                    return "~" + run[: _KEY_LENS[-1]]
        return None

    def candidates(self, text: str) -> list[int]:
        found = list(self.scan)
        get = self.by_head.get
        for n in self.head_lens:
            hit = get(text[:n])
            if hit:
                found += hit
        get = self.by_tail.get
        for n in self.tail_lens:
            hit = get(text[-n:])
            if hit:
                found += hit
        if self.by_inner:
            get = self.by_inner.get
            n = _KEY_LENS[-1]
            for i in range(len(text) - n + 1):
                hit = get(text[i : i + n])
                if hit:
                    found += hit
        if len(found) > 1:
            found = list(dict.fromkeys(found))
        return found
