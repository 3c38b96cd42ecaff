"""Partial-plate patterns (`AB?12?`, `*1234`, `AB*9`) indexed so a read finds its few candidates.

Patterns without `*` have a fixed length: per length, each position keeps a bit set of
the patterns that accept each character there, and a read ANDs one set per character.
Patterns with `*` are filed under three or four known characters (at the start, at the
end, split between the two, or a run inside), and a read checks one by one only the
patterns filed under what it holds there: a handful of look-ups per read, each giving
the patterns of one key.  Imports refuse a pattern with too few known characters to be
filed (`entry.MIN_STARRED_KEY`: "*A*B*C*" would be checked against every read) and a
file crowding more than `MAX_PER_KEY` patterns under one key, so a read checks at most
its look-ups times the largest file (`examined` counts, `examined_at_most` bounds).
Patterns stored before that rule are still found, checked on every read.  Both work on
confusion-folded text, so a fuzzy list also hits when the OCR mixed up a known
character; the hit's distance counts those.
"""

from __future__ import annotations

import functools
import operator
import string
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge.core.watchlist.distance import CONFUSION_COST, fold
from edge.core.watchlist.entry import MIN_STARRED_KEY, WILDCARD_ANY, WILDCARD_ONE

_KEY_LENS = (4, MIN_STARRED_KEY)  # known characters a starred pattern is filed under
# (known characters at the start, at the end) of the keys split between the two
_SPLITS = {4: ((2, 2), (3, 1), (1, 3)), 3: ((2, 1), (1, 2))}
# Patterns with `*` one file may put under one key, at most: each read that holds the
# key checks them all.
MAX_PER_KEY = 50
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

    def examined(self, text: str, folded: str, confusions: bool = True) -> int:
        """How many starred patterns a read of `text` checks one by one (the work it costs)."""
        if not self._starred:
            return 0
        files = self._folded_files if confusions else self._exact_files
        return len(files.candidates(folded if confusions else text))

    def examined_at_most(self, length: int, confusions: bool = True) -> int:
        """The most starred patterns a read of `length` characters can check: its look-ups
        times the largest file, and the patterns without a key."""
        files = self._folded_files if confusions else self._exact_files
        return files.probes(length) * files.largest() + len(files.scan)

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
    """Starred patterns filed under known characters: at the start, at the end, split
    between both, inside; patterns with no key (stored before imports refused them)
    are looked at every time."""

    def __init__(self, starred: list[_Starred], folded: bool):
        by: dict[str, dict[str, list[int]]] = {"^": {}, "$": {}, "&": {}, "~": {}}
        self.scan: list[int] = []
        for k, p in enumerate(starred):
            key = file_key(p.anchored_start, p.anchored_end, p.folded if folded else p.segments)
            if key is None:
                self.scan.append(k)
            else:
                by[key[0]].setdefault(key[1:], []).append(k)
        self.by_head, self.by_tail, self.by_inner = by["^"], by["$"], by["~"]
        self.by_ends = by["&"]
        self.head_lens = sorted({len(k) for k in self.by_head}, reverse=True)
        self.tail_lens = sorted({len(k) for k in self.by_tail}, reverse=True)
        self.end_lens = sorted({(k.index("|"), len(k) - k.index("|") - 1) for k in self.by_ends})

    def probes(self, length: int) -> int:
        """Look-ups a read of `length` characters makes (each gives one key's patterns)."""
        inner = max(0, length - _KEY_LENS[-1] + 1) if self.by_inner else 0
        return len(self.head_lens) + len(self.tail_lens) + len(self.end_lens) + inner

    def largest(self) -> int:
        """The most patterns filed under one key."""
        files = (*self.by_head.values(), *self.by_tail.values(), *self.by_ends.values(),
                 *self.by_inner.values())  # fmt: skip
        return max(map(len, files), default=0)

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
        get = self.by_ends.get
        for a, b in self.end_lens:
            if len(text) >= a + b:
                hit = get(f"{text[:a]}|{text[-b:]}")
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


def file_key(start: bool, end: bool, segments: tuple[str, ...]) -> str | None:
    """The key a starred pattern (split on '*', anchored at its start and/or end) is
    filed under: the most known characters first; None if it has too few."""
    head, tail = segments[0], segments[-1]
    lead = len(head.split(WILDCARD_ONE, 1)[0]) if start else 0
    trail = len(tail.rsplit(WILDCARD_ONE, 1)[-1]) if end else 0
    for n in _KEY_LENS:
        if lead >= n:
            return "^" + head[:n]
        if trail >= n:
            return "$" + tail[-n:]
        if start and end:
            for a, b in _SPLITS[n]:
                if lead >= a and trail >= b:
                    return f"&{head[:a]}|{tail[-b:]}"
    for seg in segments:
        for run in seg.split(WILDCARD_ONE):
            if len(run) >= _KEY_LENS[-1]:
                return "~" + run[: _KEY_LENS[-1]]
    return None


def pattern_key(pattern: str, folded: bool = True) -> str | None:
    """`file_key` of a pattern as entries keep it (None also for one without '*')."""
    if WILDCARD_ANY not in pattern:
        return None
    segments = tuple(s for s in pattern.split(WILDCARD_ANY) if s)
    if folded:
        segments = tuple(map(fold, segments))
    return file_key(not pattern.startswith(WILDCARD_ANY), not pattern.endswith(WILDCARD_ANY),
                    segments)  # fmt: skip


def crowded(patterns: Iterable[tuple[int, str]], limit: int = MAX_PER_KEY) -> list[tuple[int, str]]:
    """(line, message) for each pattern beyond the `limit`-th filed under one key, of
    (line, pattern) pairs; a fuzzy list's patterns are filed folded, so those count."""
    by_key: dict[str, list[int]] = defaultdict(list)
    out: list[tuple[int, str]] = []
    for line, pattern in patterns:
        key = pattern_key(pattern)
        if key is None:
            continue
        lines = by_key[key]
        lines.append(line)
        if len(lines) > limit:
            shared = _describe(pattern_key(pattern, folded=False) or key)
            out.append((line, f"{pattern!r}: more than {limit} partial plates share the known "
                        f"characters {shared} (or look-alikes such as 0/O; line {lines[0]} is "
                        "the first); each read holding them would check them all: make them "
                        "more specific"))  # fmt: skip
    return out


def _describe(key: str) -> str:
    kind, chars = key[0], key[1:]
    if kind == "^":
        return f"{chars!r} at the start"
    if kind == "$":
        return f"{chars!r} at the end"
    if kind == "&":
        head, tail = chars.split("|")
        return f"{head!r} at the start and {tail!r} at the end"
    return f"{chars!r}"
