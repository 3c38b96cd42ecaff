"""One edit distance and alignment (`edge.core.edit`): the same answers as the three
copies it replaced, kept here as oracles, on random strings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core.edit import alignment, distance, levenshtein
from edge.core.watchlist.distance import EDIT_COST, char_cost, weighted_distance

# Few letters, so that equal characters, swaps and confusions are common.
texts = st.text(alphabet="AB8O0DIT1X", max_size=9)


# --------------------------------------------------------------------------- the oracles


def old_vote_edit_distance(a: str, b: str) -> int:
    """edge/node/vote.py edit_distance, as it was."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def old_vote_align(text: str, reference: str) -> list[int | None]:
    """edge/node/vote.py _align, as it was."""
    n, m = len(text), len(reference)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(
                cost[i - 1][j] + 1,
                cost[i][j - 1] + 1,
                cost[i - 1][j - 1] + (text[i - 1] != reference[j - 1]),
            )
    aligned: list[int | None] = [None] * m
    i, j = n, m
    while i > 0 and j > 0:
        if cost[i][j] == cost[i - 1][j - 1] + (text[i - 1] != reference[j - 1]):
            aligned[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return aligned


MISSING = "∅"


def old_edit_ops(label: str, read: str) -> list[tuple[str, str]]:
    """benchmarks/scoring.py edit_ops, as it was."""
    n, m = len(label), len(read)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (label[i - 1] != read[j - 1]))
    ops: list[tuple[str, str]] = []
    i, j = n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (label[i - 1] != read[j - 1]):
            ops.append((label[i - 1], read[j - 1]))
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            ops.append((label[i - 1], MISSING))
            i -= 1
        else:
            ops.append((MISSING, read[j - 1]))
            j -= 1
    return ops[::-1]


def old_weighted_distance(a: str, b: str) -> float:
    """edge/core/watchlist/distance.py weighted_distance, as it was."""
    la, lb = len(a), len(b)
    d = [[0.0] * (lb + 1) for _ in range(la + 1)]
    for i in range(la + 1):
        d[i][0] = i * EDIT_COST
    for j in range(lb + 1):
        d[0][j] = j * EDIT_COST
    for i in range(1, la + 1):
        for j in range(1, lb + 1):
            d[i][j] = min(
                d[i - 1][j] + EDIT_COST,
                d[i][j - 1] + EDIT_COST,
                d[i - 1][j - 1] + char_cost(a[i - 1], b[j - 1]),
            )
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + EDIT_COST)
    return d[la][lb]


# --------------------------------------------------------------------------- the tests


def test_levenshtein_examples():
    assert levenshtein("", "") == 0
    assert levenshtein("ABC", "") == 3
    assert levenshtein("ABC123", "ABC128") == 1
    assert levenshtein("ABC123", "AC123") == 1
    assert levenshtein("KITTEN", "SITTING") == 3
    assert levenshtein("AB12", "A1B2") == 2  # a swap is two edits here
    assert distance("AB12", "A1B2", swap=1) == 1


def test_alignment_examples():
    assert alignment("AB1", "AB1") == [(0, 0), (1, 1), (2, 2)]
    assert alignment("AB1", "A1") == [(0, 0), (1, None), (2, 1)]
    assert alignment("", "AB") == [(None, 0), (None, 1)]


@settings(max_examples=600, deadline=None)
@given(texts, texts)
def test_levenshtein_is_the_votes_old_edit_distance(a, b):
    got = levenshtein(a, b)
    assert got == old_vote_edit_distance(a, b) and type(got) is int


@settings(max_examples=600, deadline=None)
@given(texts, texts)
def test_alignment_gives_the_votes_old_positions(text, reference):
    positions: list[int | None] = [None] * len(reference)
    for i, j in alignment(text, reference):
        if j is not None:
            positions[j] = i
    assert positions == old_vote_align(text, reference)


@settings(max_examples=600, deadline=None)
@given(texts, texts)
def test_alignment_gives_the_benchmarks_old_edit_ops(label, read):
    ops = [(MISSING if i is None else label[i], MISSING if j is None else read[j])
           for i, j in alignment(label, read)]
    assert ops == old_edit_ops(label, read)


@settings(max_examples=600, deadline=None)
@given(texts, texts)
def test_weighted_distance_is_the_watchlists_old_one(a, b):
    assert weighted_distance(a, b) == old_weighted_distance(a, b)
    assert distance(a, b, char_cost, EDIT_COST, EDIT_COST) == old_weighted_distance(a, b)
