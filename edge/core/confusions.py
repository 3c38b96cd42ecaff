"""The characters OCR reads one for another: one table for the plate rules and the watchlist.

`READ_AS` says of a character read what it may really be where a plate format wants the
other kind (a digit where a letter was read, a letter where a digit was), cheapest first:
1 for PP-OCR's common misreads, 1.5 for rarer ones.  The plate rules correct reads with it.

`CLASSES` are the groups it joins ("0DOQ", "1I", "8B", ...).  The watchlist distance counts
reading one character of a class for another as a confusion, cheaper than an edit, and its
index folds each class to its digit, so a class is closed: all its members stand for one
another.  A look-alike confused with only part of a class therefore stays out of it.  T is
one: PP-OCR misreads I for T, but not 1 for T, and the plate rules never make a T a 1 (it
would bend too many foreign plates into a format), so with T in the class of I and 1 a
fuzzy watchlist hit would take any T for a 1 at a confusion's price; reading I for T
costs an edit instead.  L, confused with neither by PP-OCR, stays out too.
"""

from __future__ import annotations

from collections.abc import Mapping

# D->0, Q->0 and 0->D are rarer and cost half as much again.  T->1 and A->4 are left out
# on purpose: they would bend too many foreign plates into a format.
READ_AS: Mapping[str, tuple[tuple[str, float], ...]] = {
    "O": (("0", 1.0),), "I": (("1", 1.0),), "0": (("O", 1.0), ("D", 1.5)), "1": (("I", 1.0),),
    "B": (("8", 1.0),), "S": (("5", 1.0),), "Z": (("2", 1.0),), "G": (("6", 1.0),),
    "8": (("B", 1.0),), "5": (("S", 1.0),), "2": (("Z", 1.0),), "6": (("G", 1.0),),
    "D": (("0", 1.5),), "Q": (("0", 1.5),),
}  # fmt: skip


def _classes(read_as: Mapping[str, tuple[tuple[str, float], ...]]) -> tuple[str, ...]:
    """The characters `read_as` joins, each group sorted (its digit first), in the order
    the table first names them."""
    group: dict[str, frozenset[str]] = {}
    for read, fixes in read_as.items():
        for real, _ in fixes:
            joined = group.get(read, frozenset(read)) | group.get(real, frozenset(real))
            for c in joined:
                group[c] = joined
    return tuple(dict.fromkeys("".join(sorted(group[c])) for c in read_as))


CLASSES = _classes(READ_AS)
