"""Watchlist entries and lists: the records, their validation, and the hit a match gives."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import NamedTuple

from edge.core.plates import normalise
from edge.core.times import UTC, TimeOutOfRange, iso, parse_iso
from edge.core.watchlist.distance import MAX_FUZZY_DISTANCE, MAX_PLATE_LEN

WILDCARD_ONE = "?"  # exactly one character
WILDCARD_ANY = "*"  # any number of characters, none included
MIN_WILDCARD_LITERALS = 3  # "*1" would match a tenth of all traffic
# A pattern with '*' is looked up by this many known characters: side by side, or split
# between a known start and a known end.  Without them it would be checked against
# every read ("*A*B*C*": 20,000 of them cost a quarter of a second a read).
MIN_STARRED_KEY = 3
MIN_PLATE_LEN = 2

CATEGORIES = ("stolen_vehicle", "stolen_plate", "wanted_person", "alert", "case", "other")
MATCH_KINDS = ("exact", "fuzzy", "wildcard")

_LIST_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_CATEGORY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_MAX_TEXT = 500


class FieldError(ValueError):
    """A field of an entry or list is invalid; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field {field!r}: {message}")
        self.field = field
        self.message = message


class Entry(NamedTuple):
    """One watched plate (or plate pattern) on one list.

    `pattern` is normalised like reads are (A-Z0-9), and may hold `?` (one character)
    and `*` (any run) for partial plates.  Times are UNIX seconds; `valid_until` is
    exclusive.  `priority` 1 is the most urgent, 9 the least.  `id` is given by the
    collector's master store (0 for an entry not stored yet).  A named tuple rather
    than a dataclass: hits make one per match, and this is four times quicker to make.
    """

    id: int
    pattern: str
    list: str
    agency: str
    category: str
    priority: int = 5
    reason: str = ""
    country: str | None = None
    valid_from: float | None = None
    valid_until: float | None = None
    added_by: str = ""

    @property
    def is_wildcard(self) -> bool:
        return is_wildcard(self.pattern)

    def active(self, now: float) -> bool:
        """Whether the entry is in force at `now`."""
        if self.valid_from is not None and now < self.valid_from:
            return False
        return self.valid_until is None or now < self.valid_until

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class WatchlistHit(NamedTuple):
    """A read matched an entry: how (`kind`: exact, fuzzy or wildcard) and how far.

    `distance` is 0 for an exact hit; for the others it is the cost of the confusions
    and edits between the read (`text`) and the entry (see `edge.core.watchlist.distance`).
    """

    entry: Entry
    kind: str
    distance: float
    text: str

    def sort_key(self) -> tuple[float, int, int, int]:
        return (self.distance, MATCH_KINDS.index(self.kind), self.entry.priority, self.entry.id)


@dataclass(frozen=True, slots=True)
class ListPolicy:
    """A list and how its entries match: `exact` only, or `fuzzy` up to `max_distance`."""

    name: str
    match: str = "fuzzy"
    max_distance: float = 1.0
    description: str = ""

    def __post_init__(self) -> None:
        check_list_name(self.name)
        if self.match not in ("exact", "fuzzy"):
            raise FieldError("match", f"must be 'exact' or 'fuzzy', got {self.match!r}")
        d = self.max_distance
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0 < d <= MAX_FUZZY_DISTANCE:
            raise FieldError(
                "max_distance", f"must be a number above 0 and at most {MAX_FUZZY_DISTANCE}"
            )
        if len(self.description) > _MAX_TEXT:
            raise FieldError("description", f"longer than {_MAX_TEXT} characters")

    @property
    def fuzzy_limit(self) -> float:
        """The largest distance a hit on this list may have (0 for exact-only lists)."""
        return float(self.max_distance) if self.match == "fuzzy" else 0.0

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> ListPolicy:
        try:
            return cls(
                name=_text(raw, "name", required=True, limit=64),
                match=_text(raw, "match", required=False, limit=10) or "fuzzy",
                max_distance=_number(raw, "max_distance", 1.0),
                description=_text(raw, "description", required=False),
            )
        except TypeError as e:
            raise FieldError("list", str(e)) from e


def check_list_name(name: object) -> str:
    if not isinstance(name, str) or not _LIST_NAME.match(name):
        raise FieldError(
            "list",
            f"{name!r} is not a list name: 1-64 of a-z, 0-9, '_', '.', '-', "
            "starting with a letter or digit",
        )
    return name


def is_wildcard(pattern: str) -> bool:
    return WILDCARD_ONE in pattern or WILDCARD_ANY in pattern


def parse_pattern(raw: str) -> str:
    """A plate or partial plate as written by people, in the form entries keep.

    Literal parts are normalised with the same rules as reads (`edge.core.plates.normalise`);
    `?` and `*` survive, runs of `*` collapse.  A pattern with wildcards needs at least
    `MIN_WILDCARD_LITERALS` known characters.
    """
    if not isinstance(raw, str):
        raise FieldError("plate", f"must be text, got {type(raw).__name__}")
    if not is_wildcard(raw):
        text = normalise(raw)
        if not MIN_PLATE_LEN <= len(text) <= MAX_PLATE_LEN:
            raise FieldError(
                "plate",
                f"{raw!r} normalises to {text!r}: a plate has {MIN_PLATE_LEN} to "
                f"{MAX_PLATE_LEN} characters A-Z0-9",
            )
        return text
    parts = re.split(r"([?*])", raw)
    out = "".join(p if p in (WILDCARD_ONE, WILDCARD_ANY) else normalise(p) for p in parts)
    out = re.sub(r"\*+", "*", out)
    literals = sum(c not in "?*" for c in out)
    if literals < MIN_WILDCARD_LITERALS:
        raise FieldError(
            "plate",
            f"{raw!r}: a partial plate needs at least {MIN_WILDCARD_LITERALS} known characters",
        )
    if len(out.replace(WILDCARD_ANY, "")) > MAX_PLATE_LEN:
        raise FieldError("plate", f"{raw!r}: longer than {MAX_PLATE_LEN} characters")
    if WILDCARD_ANY in out and not starred_key_chars(out):
        raise FieldError(
            "plate",
            f"{raw!r}: a partial plate with '*' needs {MIN_STARRED_KEY} known characters side "
            "by side (AB1*, *X12*), or as many between a known start and a known end "
            "(AB*1); where the length is known, write '?' for each unknown character "
            "(A?B?C??) instead of '*'",
        )
    return out


def starred_key_chars(pattern: str) -> int:
    """How many known characters of a pattern with '*' can look it up (0: too few).

    Those of a run of at least `MIN_STARRED_KEY` side by side anywhere, or those at the
    very start and very end (before the first and after the last '?' or '*') when the
    pattern is anchored at both ends.  The wildcard index files a pattern under them.
    """
    runs = [r for r in re.split(r"[?*]", pattern) if len(r) >= MIN_STARRED_KEY]
    best = max(map(len, runs), default=0)
    if not pattern.startswith(WILDCARD_ANY) and not pattern.endswith(WILDCARD_ANY):
        lead = len(re.split(r"[?*]", pattern, maxsplit=1)[0])
        trail = len(re.split(r"[?*]", pattern)[-1])
        if lead and trail and lead + trail >= MIN_STARRED_KEY:
            best = max(best, lead + trail)
    return best


def parse_time(value: object, field: str, *, end_of_day: bool = False) -> float | None:
    """UNIX seconds from a number, or ISO 8601 text (UTC when no offset is given).

    A bare date is the start of that day in UTC, or with `end_of_day` the start of
    the next one (so `valid_until: 2025-05-31` covers the 31st).
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FieldError(field, "must be a time, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                if len(text) == 10:
                    day = dt.date.fromisoformat(text)
                    moment = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
                    if end_of_day:
                        moment += dt.timedelta(days=1)
                else:
                    moment = parse_iso(text)
            except (TimeOutOfRange, OverflowError):  # past 9999-12-31 in UTC
                raise FieldError(field, f"{value!r} is out of range") from None
            except ValueError:
                raise FieldError(
                    field, f"{value!r} is not a time (ISO 8601, e.g. 2025-05-31T18:00:00Z)"
                ) from None
            seconds = moment.timestamp()
    else:
        raise FieldError(field, f"must be a time, got {type(value).__name__}")
    if not math.isfinite(seconds) or not 0 <= seconds < 253402300800:  # year 10000
        raise FieldError(field, f"{value!r} is out of range")
    return seconds


def format_time(seconds: float | None) -> str:
    """UNIX seconds as ISO 8601 with +00:00, to the second where they are whole."""
    if seconds is None:
        return ""
    return iso(seconds, "seconds" if seconds == int(seconds) else "milliseconds", z=False)


def _text(raw: Mapping[str, object], field: str, *, required: bool, limit: int = _MAX_TEXT) -> str:
    value = raw.get(field)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise FieldError(field, f"must be text, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise FieldError(field, "is required")
    if len(value) > limit:
        raise FieldError(field, f"longer than {limit} characters")
    if any(ord(c) < 32 and c not in "\t" for c in value):
        raise FieldError(field, "holds control characters")
    return value


def _number(raw: Mapping[str, object], field: str, default: float) -> float:
    value = raw.get(field)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise FieldError(field, "must be a number, got a boolean")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise FieldError(field, f"must be a number, got {value!r}") from None


def _integer(raw: Mapping[str, object], field: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(field)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise FieldError(field, "must be an integer, got a boolean")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not lo <= value <= hi:
        raise FieldError(field, f"must be an integer {lo}..{hi}, got {value!r}")
    return value


def parse_entry(
    raw: Mapping[str, object],
    *,
    list_name: str | None = None,
    defaults: Mapping[str, object] | None = None,
) -> Entry:
    """An `Entry` from a row of a CSV or JSON Lines file, or from the wire.

    `list_name`, when given, is the list the entry goes on (a `list` field in the row
    must then agree); `defaults` fill fields the row leaves empty (agency, added_by...).
    Raises `FieldError` naming the first bad field.
    """
    if defaults:
        raw = {**defaults, **{k: v for k, v in raw.items() if v not in (None, "")}}
    row_list = raw.get("list")
    if list_name is not None:
        if row_list not in (None, "", list_name):
            raise FieldError("list", f"row says {row_list!r} but the import is for {list_name!r}")
        row_list = list_name
    check_list_name(row_list)
    raw_id = raw.get("id")
    entry_id = 0 if raw_id in (None, "") else _integer(raw, "id", 0, 0, 2**62)
    plate = raw.get("plate", raw.get("pattern"))
    if plate is None or plate == "":
        raise FieldError("plate", "is required")
    pattern = parse_pattern(plate)  # type: ignore[arg-type]
    country = _text(raw, "country", required=False, limit=2).upper() or None
    if country is not None and not _COUNTRY.match(country):
        raise FieldError("country", f"{country!r} is not an ISO 3166 alpha-2 code")
    category = _text(raw, "category", required=True, limit=32).lower()
    category = re.sub(r"[\s-]+", "_", category)
    if not _CATEGORY.match(category):
        raise FieldError(
            "category", f"{category!r} is not a category (e.g. {', '.join(CATEGORIES)})"
        )
    valid_from = parse_time(raw.get("valid_from"), "valid_from")
    valid_until = parse_time(raw.get("valid_until"), "valid_until", end_of_day=True)
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise FieldError("valid_until", "is not after valid_from")
    return Entry(
        id=entry_id,
        pattern=pattern,
        list=row_list,  # type: ignore[arg-type]
        agency=_text(raw, "agency", required=True, limit=64),
        category=category,
        priority=_integer(raw, "priority", 5, 1, 9),
        reason=_text(raw, "reason", required=False),
        country=country,
        valid_from=valid_from,
        valid_until=valid_until,
        added_by=_text(raw, "added_by", required=True, limit=64),
    )


ENTRY_FIELDS = Entry._fields
