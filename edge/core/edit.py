"""Edit distance and alignment of two strings, the costs given by the caller.

`distance` is the optimal-string-alignment distance: an insertion or a deletion costs
`indel`, a substitution what `substitution` says of the two characters (1 for any two
different ones unless told), and, where `swap` is given, exchanging two neighbours costs
that.  With the defaults it is the Levenshtein distance (`levenshtein`).  `alignment`
pairs up the characters of a minimal Levenshtein alignment, for the vote's positions
and the benchmarks' confusion counts.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

Substitution = Callable[[str, str], float]
Pair = tuple[int | None, int | None]  # (index in a, index in b); None where one side has none


def _table(
    a: str, b: str, substitution: Substitution, indel: float, swap: float | None
) -> list[list[float]]:
    """d[i][j]: the distance of a[:i] and b[:j]."""
    n, m = len(a), len(b)
    d = [[j * indel for j in range(m + 1)]]
    for i in range(1, n + 1):
        row = [i * indel]
        above = d[i - 1]
        x = a[i - 1]
        for j in range(1, m + 1):
            y = b[j - 1]
            cost = min(above[j] + indel, row[j - 1] + indel, above[j - 1] + substitution(x, y))
            if swap is not None and i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                cost = min(cost, d[i - 2][j - 2] + swap)
            row.append(cost)
        d.append(row)
    return d


def distance(
    a: str,
    b: str,
    substitution: Substitution = operator.ne,
    indel: float = 1,
    swap: float | None = None,
) -> float:
    """The cheapest way to edit `a` into `b` (see the module docstring for the costs)."""
    return _table(a, b, substitution, indel, swap)[-1][-1]


def levenshtein(a: str, b: str) -> int:
    """Insertions, deletions and substitutions that make `a` into `b`, fewest."""
    return int(distance(a, b))


def alignment(a: str, b: str) -> list[Pair]:
    """A minimal Levenshtein alignment of `a` and `b`, as (index in a, index in b) pairs
    in order: both set where the characters are matched or substituted, one None where a
    character of the other side was deleted or inserted.  Where alignments tie, the later
    characters are matched first, then taken as deleted from `a`."""
    d = _table(a, b, operator.ne, 1, None)
    pairs: list[Pair] = []
    i, j = len(a), len(b)
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (a[i - 1] != b[j - 1]):
            i, j = i - 1, j - 1
            pairs.append((i, j))
        elif i and d[i][j] == d[i - 1][j] + 1:
            i -= 1
            pairs.append((i, None))
        else:
            j -= 1
            pairs.append((None, j))
    pairs.reverse()
    return pairs
