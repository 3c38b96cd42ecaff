"""The OCR-aware plate distance and the fuzzy index keys."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core.watchlist.distance import (
    CONFUSION_COST,
    EDIT_COST,
    MAX_FUZZY_DISTANCE,
    deletion_keys,
    fold,
    plate_distance,
    weighted_distance,
)
from edge.core.watchlist.index import _fuzzy_keys

# A small alphabet full of confusable characters makes the interesting cases common.
plates = st.text(alphabet="AB8O0DQSZ2I1T5G6X", min_size=1, max_size=9)


def test_confusions_cost_less_than_other_substitutions():
    assert plate_distance("AB123CD", "A8123CD") == CONFUSION_COST
    assert plate_distance("AB123CD", "AB12OCD") == EDIT_COST  # 3 and O are not confused
    assert plate_distance("AB123CD", "AX123CD") == EDIT_COST
    assert plate_distance("OIBSZG", "018526") == 6 * CONFUSION_COST
    assert plate_distance("DQ", "0O") == 2 * CONFUSION_COST


def test_edits_insertion_deletion_swap():
    assert plate_distance("AB123CD", "AB12CD") == EDIT_COST
    assert plate_distance("AB12CD", "AB123CD") == EDIT_COST
    assert plate_distance("AB123CD", "AB132CD") == EDIT_COST  # neighbours swapped
    assert plate_distance("AB123CD", "XB123CX") is None  # two edits are never fuzzy
    assert plate_distance("AB123CD", "A8123C") == EDIT_COST + CONFUSION_COST


def test_limit_is_respected():
    assert plate_distance("AB123CD", "AX123CD", limit=0.5) is None
    assert plate_distance("AB123CD", "A8123CD", limit=0.25) == 0.25


@settings(max_examples=1500, deadline=None)
@given(plates, plates)
def test_plate_distance_equals_full_distance_below_two_edits(a, b):
    full = weighted_distance(a, b)
    fast = plate_distance(a, b, MAX_FUZZY_DISTANCE)
    if full <= MAX_FUZZY_DISTANCE:
        assert fast == full
    else:
        assert fast is None


@settings(max_examples=500, deadline=None)
@given(plates, plates)
def test_close_plates_share_a_deletion_key(a, b):
    if weighted_distance(a, b) <= MAX_FUZZY_DISTANCE:
        assert set(deletion_keys(fold(a))) & set(deletion_keys(fold(b)))


def test_numpy_keys_equal_python_keys():
    pats = ["AB123CD", "O0DQ", "ZZZZZZZZZZZZ", "K1", "X"]
    blob = "".join(pats).encode()
    lengths = np.array([len(p) for p in pats])
    combined = _fuzzy_keys(blob, lengths, np.arange(len(pats)))
    got: dict[int, set[int]] = {}
    for value in combined.tolist():
        got.setdefault(value & 0xFFFFFFFF, set()).add(value >> 32)
    for row, p in enumerate(pats):
        assert got[row] == set(deletion_keys(fold(p)))
