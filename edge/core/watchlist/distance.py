"""How far a read is from a listed plate, in a cost model that knows OCR's confusions.

A substitution between characters an OCR mixes up (O/0/D/Q, I/1, B/8, S/5, Z/2, G/6:
the classes of `edge.core.confusions`, which the plate rules correct with) costs
`CONFUSION_COST`; any other substitution, an insertion, a deletion or the
swap of two neighbours costs `EDIT_COST`.  A list may allow fuzzy matches up to
`MAX_FUZZY_DISTANCE`, which is below two edits: a fuzzy hit is then any number of
confusions plus at most one other edit.  That bound is what lets the index find every
candidate with the one-deletion neighbourhood of the confusion-folded text (see
`fold` and `deletion_keys`), and lets `plate_distance` work in linear time.
"""

from __future__ import annotations

from edge.core import confusions, edit

CONFUSION_CLASSES = confusions.CLASSES
CONFUSION_COST = 0.25
EDIT_COST = 1.0
MAX_FUZZY_DISTANCE = 1.75  # must stay below 2 * EDIT_COST; see the module docstring

# Each character of a confusion class folds to the class's digit; others stay.
FOLD_MAP = {c: next(d for d in cls if d.isdigit()) for cls in CONFUSION_CLASSES for c in cls}
FOLD_TABLE = str.maketrans(FOLD_MAP)

_INF = float("inf")


def fold(text: str) -> str:
    """`text` with each confusable character replaced by its class's representative."""
    return text.translate(FOLD_TABLE)


def char_cost(a: str, b: str) -> float:
    """The cost of reading `b` where `a` is written (0 when equal)."""
    if a == b:
        return 0.0
    return CONFUSION_COST if FOLD_MAP.get(a, a) == FOLD_MAP.get(b, b) else EDIT_COST


def _aligned_cost(a: str, b: str) -> float:
    """Cost of `a` against `b` position by position, infinite if any position needs an edit."""
    cost = 0.0
    for x, y in zip(a, b, strict=True):
        if x != y:
            if FOLD_MAP.get(x, x) != FOLD_MAP.get(y, y):
                return _INF
            cost += CONFUSION_COST
    return cost


def plate_distance(a: str, b: str, limit: float = MAX_FUZZY_DISTANCE) -> float | None:
    """The cheapest alignment of `a` and `b` using confusions and at most one other edit.

    Returns None when that is above `limit` (which must be below two edits; then the
    result equals the full weighted edit distance, see `weighted_distance`).
    """
    if limit >= 2 * EDIT_COST:
        raise ValueError(f"limit {limit} must be below {2 * EDIT_COST}")
    la, lb = len(a), len(b)
    if la == lb:
        best = _INF
        edits: list[int] = []
        cost = 0.0
        for i in range(la):
            x, y = a[i], b[i]
            if x != y:
                if FOLD_MAP.get(x, x) == FOLD_MAP.get(y, y):
                    cost += CONFUSION_COST
                else:
                    edits.append(i)
                    if len(edits) > 2:
                        return None
        if len(edits) <= 1:
            best = cost + EDIT_COST * len(edits)
        elif edits[1] == edits[0] + 1:
            i = edits[0]
            if a[i] == b[i + 1] and a[i + 1] == b[i]:  # two neighbours swapped
                best = cost + EDIT_COST
        return best if best <= limit else None
    if abs(la - lb) != 1:
        return None
    long, short = (a, b) if la > lb else (b, a)
    n = len(short)
    # prefix[k]: cost of long[:k] against short[:k]; suffix[k]: long[k+1:] against short[k:]
    prefix = [0.0] * (n + 1)
    for k in range(n):
        prefix[k + 1] = prefix[k] + _aligned_cost(long[k], short[k])
    best = _INF
    tail = 0.0
    for k in range(n, -1, -1):  # delete long[k]
        if k < n:
            tail += _aligned_cost(long[k + 1], short[k])
        if tail == _INF:
            break
        best = min(best, prefix[k] + tail + EDIT_COST)
    return best if best <= limit else None


def weighted_distance(a: str, b: str) -> float:
    """Full weighted optimal-string-alignment distance (the reference for `plate_distance`)."""
    return edit.distance(a, b, char_cost, EDIT_COST, EDIT_COST)


# --------------------------------------------------------------------------- index keys

HASH_BASE = 131
_M64 = (1 << 64) - 1
MAX_PLATE_LEN = 12
HASH_POW = [pow(HASH_BASE, k, 1 << 64) for k in range(MAX_PLATE_LEN + 2)]


HASH_MIX = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: Fibonacci hashing


def deletion_keys(folded: str) -> list[int]:
    """32-bit keys of `folded` and of each string made by deleting one of its characters.

    A string's key is the top half of its base-131 polynomial (mod 2^64) times
    `HASH_MIX`.  Two plates within one edit (after folding) share at least one key;
    the index in `edge.core.watchlist.index` computes the same keys with numpy.
    """
    n = len(folded)
    prefix = [0] * (n + 1)
    h = 0
    for i, ch in enumerate(folded):
        h = h * HASH_BASE + ord(ch)  # unmasked: taken mod 2^64 at the end, as numpy wraps
        prefix[i + 1] = h
    full = h
    keys = [((full * HASH_MIX) & _M64) >> 32]
    for i in range(n):
        p = HASH_POW[n - 1 - i]
        keys.append((((prefix[i] - prefix[i + 1]) * p + full) * HASH_MIX & _M64) >> 32)
    return keys
