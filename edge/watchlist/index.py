"""An immutable index of many watchlist entries in compact numpy columns.

A million entries as Python objects would take most of a gigabyte; here an entry costs
about 150 bytes: its fields in numpy columns (texts in one blob each, repeated strings
interned to codes), a sorted 64-bit hash for exact lookup, and the 32-bit keys of its
confusion-folded one-deletion neighbourhood (`edge.watchlist.distance.deletion_keys`)
for fuzzy lookup.  Entries are turned back into `Entry` objects only for hits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from edge.watchlist.distance import (
    FOLD_MAP,
    HASH_BASE,
    HASH_POW,
    MAX_PLATE_LEN,
    deletion_keys,
    plate_distance,
)
from edge.watchlist.entry import Entry, ListPolicy, WatchlistHit, is_wildcard
from edge.watchlist.wildcard import WildcardIndex

MIN_FUZZY_LEN = 4  # shorter reads and plates match exactly or not at all

Row = tuple  # (id, pattern, list, agency, category, priority, reason, country,
#              valid_from, valid_until, added_by), the order of `Entry`'s fields

_FOLD_LUT = np.arange(256, dtype=np.uint8)
for _c, _f in FOLD_MAP.items():
    _FOLD_LUT[ord(_c)] = ord(_f)
_POW_ARR = np.array(HASH_POW, dtype=np.uint64)
_U64 = np.uint64


class _Interner(dict):
    """Gives each distinct value the next small integer code."""

    def __missing__(self, key: object) -> int:
        code = len(self)
        self[key] = code
        return code


def _mix32(h: np.ndarray) -> np.ndarray:
    """`distance._mix32` over a uint64 array."""
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    h = h ^ (h >> _U64(33))
    return h >> _U64(32)


def _fuzzy_keys(blob: bytes, lengths: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(key << 32 | row) for every deletion key of every pattern, as `deletion_keys` makes them."""
    if not len(rows):
        return np.zeros(0, np.uint64)
    folded = _FOLD_LUT[np.frombuffer(blob, np.uint8)]
    starts = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    m = len(rows)
    width = int(lengths.max())
    cols = np.arange(width)
    inside = cols[None, :] < lengths[:, None]
    at = np.minimum(starts[:, None] + cols[None, :], len(folded) - 1)
    chars = np.where(inside, folded[at], 0).astype(np.uint64)
    prefix = np.zeros((m, width + 1), np.uint64)
    for j in range(width):
        prefix[:, j + 1] = prefix[:, j] * _U64(HASH_BASE) + chars[:, j]
    full = prefix[np.arange(m), lengths]
    row64 = rows.astype(np.uint64)
    parts = [(_mix32(full) << _U64(32)) | row64]
    for i in range(width):
        ok = i < lengths
        p = _POW_ARR[np.maximum(lengths - 1 - i, 0)]
        key = prefix[:, i] * p + full - prefix[:, i + 1] * p
        parts.append((_mix32(key[ok]) << _U64(32)) | row64[ok])
    return np.concatenate(parts)


class CompactIndex:
    """Entries in columns, with exact, fuzzy and wildcard lookup.  Build with `build`."""

    def __init__(self) -> None:
        self.size = 0
        self._ids = np.zeros(0, np.int64)
        self._list = np.zeros(0, np.int32)
        self._agency = np.zeros(0, np.int32)
        self._category = np.zeros(0, np.int32)
        self._added_by = np.zeros(0, np.int32)
        self._country = np.zeros(0, np.int32)
        self._priority = np.zeros(0, np.int8)
        self._valid_from = np.zeros(0, np.float64)
        self._valid_until = np.zeros(0, np.float64)
        self._patterns = b""
        self._pattern_at = np.zeros(1, np.int64)
        self._reasons = b""
        self._reason_at = np.zeros(1, np.int64)
        self._names: dict[str, list] = {"list": [], "agency": [], "category": [], "added_by": []}
        self._countries: list[str | None] = [None]
        self._exact_keys = np.zeros(0, np.int64)
        self._exact_rows = np.zeros(0, np.int32)
        self._fuzzy_keys = np.zeros(0, np.uint32)
        self._fuzzy_rows = np.zeros(0, np.int32)
        self._wild = WildcardIndex(())

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, chunks: Iterable[Sequence[Row]]) -> CompactIndex:
        """An index of the rows in `chunks` (each a sequence of `Entry`-ordered tuples).

        Rows are taken as valid (the replica and `Entry` checked them).  Feed chunks of
        some ten thousand rows: each chunk's Python objects are freed once converted.
        """
        self = cls()
        interners = {k: _Interner() for k in self._names}
        countries = _Interner({None: 0})
        cols: dict[str, list[np.ndarray]] = {k: [] for k in (
            "ids", "list", "agency", "category", "added_by", "country", "priority",
            "valid_from", "valid_until", "pattern_len", "reason_len", "exact_keys",
            "exact_rows", "fuzzy")}  # fmt: skip
        patterns: list[bytes] = []
        reasons: list[bytes] = []
        wild: list[tuple[int, str]] = []
        offset = 0
        for chunk in chunks:
            n = len(chunk)
            if not n:
                continue
            (ids, pats, lists, agencies, categories, priorities, reasons_, countries_,
             valid_from, valid_until, added_by) = zip(*chunk, strict=True)  # fmt: skip
            cols["ids"].append(np.array(ids, np.int64))
            for name, values in (("list", lists), ("agency", agencies),
                                 ("category", categories), ("added_by", added_by)):  # fmt: skip
                codes = map(interners[name].__getitem__, values)
                cols[name].append(np.fromiter(codes, np.int32, n))
            cols["country"].append(np.fromiter(map(countries.__getitem__, countries_), np.int32, n))
            cols["priority"].append(np.array(priorities, np.int8))
            vf = np.array(valid_from, np.float64)  # None becomes NaN
            vu = np.array(valid_until, np.float64)
            vf[np.isnan(vf)] = -np.inf
            vu[np.isnan(vu)] = np.inf
            cols["valid_from"].append(vf)
            cols["valid_until"].append(vu)
            blob = "".join(pats).encode("ascii")
            patterns.append(blob)
            lengths = np.fromiter(map(len, pats), np.int64, n)
            cols["pattern_len"].append(lengths)
            encoded = [r.encode("utf-8") for r in reasons_]
            reasons.append(b"".join(encoded))
            cols["reason_len"].append(np.fromiter(map(len, encoded), np.int64, n))
            rows = np.arange(offset, offset + n, dtype=np.int64)
            wild_mask = np.fromiter(map(is_wildcard, pats), bool, n)
            exact = ~wild_mask
            cols["exact_keys"].append(np.fromiter(map(hash, pats), np.int64, n)[exact])
            cols["exact_rows"].append(rows[exact])
            for i in np.flatnonzero(wild_mask).tolist():
                wild.append((offset + i, pats[i]))
            fuzzy = exact & (lengths >= MIN_FUZZY_LEN)
            if fuzzy.all():
                cols["fuzzy"].append(_fuzzy_keys(blob, lengths, rows))
            elif fuzzy.any():
                sub = [p for p, f in zip(pats, fuzzy.tolist(), strict=True) if f]
                cols["fuzzy"].append(
                    _fuzzy_keys("".join(sub).encode("ascii"), lengths[fuzzy], rows[fuzzy])
                )
            offset += n
        self.size = offset
        if not offset:
            return self

        def cat(name: str, dtype: type) -> np.ndarray:
            out = np.concatenate(cols.pop(name)).astype(dtype, copy=False)
            return out

        self._ids = cat("ids", np.int64)
        self._list = cat("list", np.int32)
        self._agency = cat("agency", np.int32)
        self._category = cat("category", np.int32)
        self._added_by = cat("added_by", np.int32)
        self._country = cat("country", np.int32)
        self._priority = cat("priority", np.int8)
        self._valid_from = cat("valid_from", np.float64)
        self._valid_until = cat("valid_until", np.float64)
        self._patterns = b"".join(patterns)
        self._pattern_at = np.zeros(offset + 1, np.int64)
        np.cumsum(cat("pattern_len", np.int64), out=self._pattern_at[1:])
        self._reasons = b"".join(reasons)
        self._reason_at = np.zeros(offset + 1, np.int64)
        np.cumsum(cat("reason_len", np.int64), out=self._reason_at[1:])
        for name, interner in interners.items():
            self._names[name] = list(interner)
        self._countries = list(countries)
        keys = cat("exact_keys", np.int64)
        order = np.argsort(keys, kind="stable")
        self._exact_keys = keys[order]
        self._exact_rows = cat("exact_rows", np.int64)[order].astype(np.int32)
        del keys, order
        if cols["fuzzy"]:
            combined = np.concatenate(cols.pop("fuzzy"))
            combined.sort()
            self._fuzzy_keys = (combined >> _U64(32)).astype(np.uint32)
            self._fuzzy_rows = (combined & _U64(0xFFFFFFFF)).astype(np.int32)
            del combined
        self._wild = WildcardIndex(wild)
        return self

    @classmethod
    def from_entries(cls, entries: Iterable[Entry], chunk: int = 20_000) -> CompactIndex:
        def chunks() -> Iterable[list[Row]]:
            batch: list[Row] = []
            for e in entries:
                batch.append(
                    (
                        e.id,
                        e.pattern,
                        e.list,
                        e.agency,
                        e.category,
                        e.priority,
                        e.reason,
                        e.country,
                        e.valid_from,
                        e.valid_until,
                        e.added_by,
                    )  # fmt: skip
                )
                if len(batch) >= chunk:
                    yield batch
                    batch = []
            yield batch

        return cls.build(chunks())

    # ------------------------------------------------------------------ reading

    @property
    def nbytes(self) -> int:
        arrays = [v for v in vars(self).values() if isinstance(v, np.ndarray)]
        return sum(a.nbytes for a in arrays) + len(self._patterns) + len(self._reasons)

    @property
    def wildcards(self) -> int:
        return self._wild.size

    def pattern(self, row: int) -> str:
        at = self._pattern_at
        return self._patterns[at[row] : at[row + 1]].decode("ascii")

    def entry(self, row: int) -> Entry:
        vf = float(self._valid_from[row])
        vu = float(self._valid_until[row])
        names = self._names
        return Entry(
            id=int(self._ids[row]),
            pattern=self.pattern(row),
            list=names["list"][self._list[row]],
            agency=names["agency"][self._agency[row]],
            category=names["category"][self._category[row]],
            priority=int(self._priority[row]),
            reason=self._reasons[self._reason_at[row] : self._reason_at[row + 1]].decode("utf-8"),
            country=self._countries[self._country[row]],
            valid_from=None if vf == -np.inf else vf,
            valid_until=None if vu == np.inf else vu,
            added_by=names["added_by"][self._added_by[row]],
        )

    def ids(self) -> np.ndarray:
        return self._ids

    def list_names_of_rows(self) -> np.ndarray:
        """Each row's list name (an object array; for counting, not for matching)."""
        return np.array(self._names["list"], dtype=object)[self._list]

    def match(
        self,
        text: str,
        folded: str,
        country: str | None,
        now: float,
        policies: Mapping[str, ListPolicy],
        max_limit: float,
        exclude: frozenset[int] = frozenset(),
        void: Mapping[str, object] | frozenset[str] = frozenset(),
    ) -> list[WatchlistHit]:
        """Hits of `text` (normalised; `folded` its confusion-folded form) in this index.

        `policies` are the lists in force (an entry of another list never hits);
        `max_limit` the largest fuzzy distance any of them allows (0: no fuzzy stage);
        `exclude` ids to skip (entries an overlay has replaced), `void` lists whose
        entries here are all out of date (the list was dropped or replaced since).
        """
        if not self.size:
            return []
        list_names = self._names["list"]
        list_code, country_code = self._list, self._country
        valid_from, valid_until = self._valid_from, self._valid_until
        countries, ids = self._countries, self._ids

        def limit_of(row: int) -> float | None:
            name = list_names[list_code[row]]
            policy = policies.get(name)
            if policy is None or (void and name in void):
                return None
            listed = countries[country_code[row]]
            if listed is not None and country is not None and listed != country:
                return None
            if not valid_from[row] <= now < valid_until[row]:
                return None
            if exclude and int(ids[row]) in exclude:
                return None
            return min(policy.fuzzy_limit, max_limit)

        hits: list[WatchlistHit] = []
        found: set[int] = set()
        keys = self._exact_keys
        h = hash(text)
        i = int(keys.searchsorted(h))
        while i < len(keys) and keys[i] == h:
            row = int(self._exact_rows[i])
            i += 1
            if self.pattern(row) == text and limit_of(row) is not None:
                found.add(row)
                hits.append(WatchlistHit(self.entry(row), "exact", 0.0, text))
        if self._wild.size:
            for row, distance in self._wild.match(text, folded, limit_of):
                hits.append(WatchlistHit(self.entry(row), "wildcard", distance, text))
        fuzzy_length = MIN_FUZZY_LEN <= len(text) <= MAX_PLATE_LEN + 1
        if max_limit > 0 and fuzzy_length and len(self._fuzzy_keys):
            hits.extend(self._fuzzy(text, folded, limit_of, found))
        return hits

    def _fuzzy(
        self, text: str, folded: str, limit_of: Callable[[int], float | None], found: set[int]
    ) -> list[WatchlistHit]:
        query = np.array(deletion_keys(folded), np.uint32)
        keys = self._fuzzy_keys
        lo = keys.searchsorted(query, "left").tolist()
        hi = keys.searchsorted(query, "right").tolist()
        candidates: set[int] = set()
        for a, b in zip(lo, hi, strict=True):
            if b > a:
                candidates.update(self._fuzzy_rows[a:b].tolist())
        hits = []
        for row in candidates - found:
            limit = limit_of(row)
            if not limit:
                continue
            distance = plate_distance(text, self.pattern(row), limit)
            if distance:  # 0 is an exact hit, found above
                hits.append(WatchlistHit(self.entry(row), "fuzzy", distance, text))
        return hits
