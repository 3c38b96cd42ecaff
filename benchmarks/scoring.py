"""Scoring rules shared by the suites: box matching, exact reads, character accuracy, confusions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from edge.core.boxes import iou
from edge.core.edit import alignment, levenshtein

Box = Sequence[float]

IOU_MATCH = 0.3  # a detection counts when it overlaps a labelled plate this much
MISSING = "∅"  # the other side of a character the reader dropped or made up


def match_boxes(labels: Sequence[Box], found: Sequence[Box],
                threshold: float = IOU_MATCH) -> list[tuple[int, int, float]]:
    """One-to-one (label index, found index, IoU) pairs, greedily by IoU, at >= threshold."""
    pairs = sorted(((iou(lb, fb), i, j) for i, lb in enumerate(labels)
                    for j, fb in enumerate(found)), reverse=True)
    used_l: set[int] = set()
    used_f: set[int] = set()
    out = []
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if i in used_l or j in used_f:
            continue
        used_l.add(i)
        used_f.add(j)
        out.append((i, j, overlap))
    return sorted(out)


def o_is_zero(text: str) -> str:
    """The plate with the letter O and the digit 0 made one glyph (the Slovak font has one)."""
    return text.replace("O", "0")


def edit_ops(label: str, read: str) -> list[tuple[str, str]]:
    """The (label char, read char) pairs of a minimal alignment; MISSING on one side marks a
    deletion or an insertion. Matching characters appear as equal pairs."""
    return [(MISSING if i is None else label[i], MISSING if j is None else read[j])
            for i, j in alignment(label, read)]


def char_accuracy(label: str, read: str) -> float:
    """1 - edit distance / label length, floored at 0 (a read twice too long scores 0)."""
    if not label:
        return 1.0 if not read else 0.0
    return max(0.0, 1.0 - levenshtein(label, read) / len(label))


def best_read(label: str, reads: Iterable[str]) -> tuple[str, float]:
    """The read closest to the label and its character accuracy ("" and 0 when none)."""
    best, score = "", 0.0
    for text in reads:
        acc = char_accuracy(label, text)
        if acc > score or (not best and text):
            best, score = text, max(score, acc)
    return best, score


def confusions(pairs: Iterable[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """How often each (label char, read char) went wrong, over many label/read pairs."""
    counts: Counter[tuple[str, str]] = Counter()
    for label, read in pairs:
        counts.update((a, b) for a, b in edit_ops(label, read) if a != b)
    return counts


def rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def same_plate(label: str, text: str) -> bool:
    """Whether a read is plausibly of this plate: within a third of its length (at least 2
    edits) of the label, O = 0. Another car's plate differs in more than that."""
    return levenshtein(o_is_zero(label), o_is_zero(text)) <= max(2, len(label) // 3)


def quantiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """Median, 90th percentile (numpy's linear one) and maximum, None when no values."""
    if not len(values):
        return {"n": 0, "median": None, "p90": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"n": int(arr.size), "median": round(float(np.median(arr)), 3),
            "p90": round(float(np.percentile(arr, 90)), 3), "max": round(float(arr.max()), 3)}


def repeated_passes(events: Sequence[tuple[str, float, float]]) -> int:
    """Events (text, first_seen, last_seen) that repeat a pass: events of one plate (same
    text within `same_plate`'s edits, O = 0) that overlap in time are one car reported more
    than once. Returns events minus the cars they make (0: one event a car)."""
    parent = list(range(len(events)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (ti, fi, li) in enumerate(events):
        for j in range(i):
            tj, fj, lj = events[j]
            if min(li, lj) >= max(fi, fj) and same_plate(ti, tj):
                parent[root(i)] = root(j)
    return len(events) - len({root(i) for i in range(len(events))})
