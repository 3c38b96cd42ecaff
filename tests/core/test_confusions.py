"""One OCR confusion table: the plate rules correct with it, the watchlist folds with it."""

from __future__ import annotations

from edge.core.confusions import CLASSES, READ_AS
from edge.core.watchlist.distance import (
    CONFUSION_COST,
    EDIT_COST,
    FOLD_MAP,
    fold,
    plate_distance,
)


def test_the_plate_rules_table_is_the_one_they_had():
    assert READ_AS == {
        "O": (("0", 1.0),), "I": (("1", 1.0),), "0": (("O", 1.0), ("D", 1.5)), "1": (("I", 1.0),),
        "B": (("8", 1.0),), "S": (("5", 1.0),), "Z": (("2", 1.0),), "G": (("6", 1.0),),
        "8": (("B", 1.0),), "5": (("S", 1.0),), "2": (("Z", 1.0),), "6": (("G", 1.0),),
        "D": (("0", 1.5),), "Q": (("0", 1.5),),
    }  # fmt: skip


def test_each_class_has_one_digit_to_fold_to():
    assert CLASSES == ("0DOQ", "1I", "8B", "5S", "2Z", "6G")
    for cls in CLASSES:
        assert sum(c.isdigit() for c in cls) == 1
    assert len("".join(CLASSES)) == len(set("".join(CLASSES)))  # no character in two


def test_the_watchlist_confuses_a_letter_and_a_digit_only_where_the_plate_rules_do():
    corrected = {frozenset((read, real)) for read, fixes in READ_AS.items() for real, _ in fixes}
    for a in FOLD_MAP:
        for b in FOLD_MAP:
            if a.isdigit() != b.isdigit() and FOLD_MAP[a] == FOLD_MAP[b]:
                assert frozenset((a, b)) in corrected, (a, b)
    for pair in corrected:
        a, b = pair
        assert fold(a) == fold(b)


def test_t_and_l_are_not_confusions_of_1():
    assert plate_distance("AB1234", "ABI234") == CONFUSION_COST
    assert plate_distance("AB1234", "ABT234") == EDIT_COST
    assert plate_distance("AB1234", "ABL234") == EDIT_COST
    assert plate_distance("ABI234", "ABT234") == EDIT_COST  # one edit: still a fuzzy hit
    assert plate_distance("ABT23X", "AB1234") is None  # T for 1 and another edit: not
