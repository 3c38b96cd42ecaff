"""Partial-plate patterns (`AB?12?`, `*1234`, `AB*9`) indexed so a read finds its few candidates.

Patterns without `*` have a fixed length: per length, each position keeps a bit set of
the patterns that accept each character there, and a read ANDs one set per character.
Patterns with `*` are filed under three known characters (the start, the end, or a run
inside) and checked one by one.  Both work on confusion-folded text, so a fuzzy list
also hits when the OCR mixed up a known character; the hit's distance counts those.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge.watchlist.distance import CONFUSION_COST, fold
from edge.watchlist.entry import WILDCARD_ANY, WILDCARD_ONE

_KEY_LEN = 3


@dataclass(frozen=True, slots=True)
class _Starred:
    row: int
    segments: tuple[str, ...]  # the pattern split on '*', as written (normalised)
    folded: tuple[str, ...]
    anchored_start: bool
    anchored_end: bool


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
        # length -> (rows, patterns, per position: folded char -> bits, bits of '?')
        self._fixed: dict[int, tuple[list[int], list[str], list[dict[str, int]], list[int]]] = {}
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
                masks[i] = {ch: bits | any_bits[i] for ch, bits in masks[i].items()}
            self._fixed[length] = ([r for r, _ in items], [p for _, p in items], masks, any_bits)
        self._by_key: dict[str, list[int]] = defaultdict(list)
        self._scan: list[int] = []
        self._inner_keys = False
        for k, p in enumerate(self._starred):
            key = self._key_for(p)
            if key is None:
                self._scan.append(k)
            else:
                self._by_key[key].append(k)
                self._inner_keys |= key[0] == "~"
        self._by_key = dict(self._by_key)

    def _add_starred(self, row: int, pattern: str) -> None:
        segments = tuple(s for s in pattern.split(WILDCARD_ANY))
        p = _Starred(
            row=row,
            segments=tuple(s for s in segments if s),
            folded=tuple(fold(s) for s in segments if s),
            anchored_start=not pattern.startswith(WILDCARD_ANY),
            anchored_end=not pattern.endswith(WILDCARD_ANY),
        )
        self._starred.append(p)

    @staticmethod
    def _key_for(p: _Starred) -> str | None:
        head, tail = p.folded[0], p.folded[-1]
        if p.anchored_start and len(head) >= _KEY_LEN and WILDCARD_ONE not in head[:_KEY_LEN]:
            return "^" + head[:_KEY_LEN]
        if p.anchored_end and len(tail) >= _KEY_LEN and WILDCARD_ONE not in tail[-_KEY_LEN:]:
            return "$" + tail[-_KEY_LEN:]
        for seg in p.folded:
            for run in seg.split(WILDCARD_ONE):
                if len(run) >= _KEY_LEN:
                    return "~" + run[:_KEY_LEN]
        return None

    def match(
        self, text: str, folded: str, limit_of: Callable[[int], float | None]
    ) -> list[tuple[int, float]]:
        """(row, distance) of each pattern `text` fits with at most its list's distance.

        `limit_of(row)` gives the largest distance the row's list allows (0 for an exact
        list), or None to skip the row (list gone, wrong country, out of date...).
        """
        out: list[tuple[int, float]] = []
        group = self._fixed.get(len(text))
        if group is not None:
            rows, patterns, masks, any_bits = group
            bits = -1
            for i, ch in enumerate(folded):
                bits &= masks[i].get(ch, any_bits[i])
                if not bits:
                    break
            while bits > 0:
                low = bits & -bits
                k = low.bit_length() - 1
                bits ^= low
                limit = limit_of(rows[k])
                if limit is None:
                    continue
                distance = _confusions(patterns[k], text, 0) * CONFUSION_COST
                if distance <= limit:
                    out.append((rows[k], distance))
        if self._starred:
            for k in self._starred_candidates(folded):
                p = self._starred[k]
                limit = limit_of(p.row)
                if limit is None:
                    continue
                if _place(p, p.segments, text) is not None:
                    out.append((p.row, 0.0))
                    continue
                if limit <= 0:
                    continue
                where = _place(p, p.folded, folded)
                if where is not None:
                    placed = zip(p.segments, where, strict=True)
                    n = sum(_confusions(s, text, at) for s, at in placed)
                    if n * CONFUSION_COST <= limit:
                        out.append((p.row, n * CONFUSION_COST))
        return out

    def _starred_candidates(self, folded: str) -> list[int]:
        get = self._by_key.get
        found = list(self._scan)
        for key in ("^" + folded[:_KEY_LEN], "$" + folded[-_KEY_LEN:]):
            hit = get(key)
            if hit:
                found.extend(hit)
        if self._inner_keys:
            for i in range(len(folded) - _KEY_LEN + 1):
                hit = get("~" + folded[i : i + _KEY_LEN])
                if hit:
                    found.extend(hit)
        if len(found) > 1:
            found = list(dict.fromkeys(found))
        return found
