"""An immutable index of many watchlist entries in compact numpy arrays.

A million entries as Python objects would take most of a gigabyte; here an entry costs
about 160 bytes: its fixed fields in one packed 48-byte record (repeated strings as
small codes), its pattern and reason side by side in one blob, a slot in an
open-addressing table of 64-bit hashes for exact lookup, and the 32-bit keys of its
confusion-folded one-deletion neighbourhood (`edge.core.watchlist.distance.deletion_keys`)
for fuzzy lookup.  One `struct` unpack reads a record back; `Entry` objects are made
only for hits.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from edge.core.watchlist.distance import (
    FOLD_MAP,
    HASH_BASE,
    HASH_MIX,
    HASH_POW,
    MAX_PLATE_LEN,
    deletion_keys,
    fold,
    plate_distance,
)
from edge.core.watchlist.entry import WILDCARD_ANY, WILDCARD_ONE, Entry, ListPolicy, WatchlistHit
from edge.core.watchlist.wildcard import WildcardIndex

MIN_FUZZY_LEN = 4  # shorter reads and plates match exactly or not at all
_ENTRY_CACHE = 4096
# Named tuples made straight from a tuple, skipping their Python-level __new__.
_new_entry = functools.partial(tuple.__new__, Entry)
_new_hit = functools.partial(tuple.__new__, WatchlistHit)
_U32_MAX = 0xFFFFFFFF

Row = tuple  # (id, pattern, list, agency, category, priority, reason, country,
#              valid_from, valid_until, added_by), the order of `Entry`'s fields

# An entry's fixed fields as stored (in the replica, too): strings as codes into
# per-kind name tables, missing times as -inf/+inf.
STORED = np.dtype(
    [
        ("id", "<i8"),
        ("valid_from", "<f8"),
        ("valid_until", "<f8"),
        ("list", "<u2"),
        ("agency", "<u2"),
        ("category", "<u2"),
        ("added_by", "<u4"),
        ("country", "<u2"),
        ("priority", "u1"),
    ]  # fmt: skip
)
STORED_STRUCT = struct.Struct("<qddHHHIHB")
NAME_KINDS = ("list", "agency", "category", "added_by", "country")
_CODE_LIMIT = {"list": 65535, "agency": 65535, "category": 65535, "added_by": 2**32 - 1,
               "country": 65535}  # fmt: skip
# What the index keeps per entry: the stored fields, then where its texts are.
_RECORD = np.dtype(
    STORED.descr + [("text_at", "<u8"), ("pattern_len", "u1"), ("reason_len", "<u2")]
)
_RECORD_STRUCT = struct.Struct(STORED_STRUCT.format + "QBH")
# The exact-lookup table: open addressing, (Python str hash, row); row -1 is empty.
_SLOT = np.dtype([("key", "<i8"), ("row", "<i4")])
_SLOT_STRUCT = struct.Struct("<qi")
assert _RECORD_STRUCT.size == _RECORD.itemsize and STORED_STRUCT.size == STORED.itemsize


class NameCodes:
    """Small integer codes for the strings entries repeat (list, agency, category, who
    added, country), one table per kind; country code 0 is "none"."""

    def __init__(self, names: dict[str, list] | None = None):
        self.names: dict[str, list] = {k: [] for k in NAME_KINDS}
        self.names["country"] = [None]
        for kind, values in (names or {}).items():
            self.names[kind] = list(values)
        self._codes = {k: {v: i for i, v in enumerate(vs)} for k, vs in self.names.items()}
        self.added: list[tuple[str, int, object]] = []  # (kind, code, value) since asked

    def code(self, kind: str, value: object) -> int:
        codes = self._codes[kind]
        code = codes.get(value)
        if code is None:
            code = len(codes)
            if code > _CODE_LIMIT[kind]:
                raise ValueError(f"more than {_CODE_LIMIT[kind]} distinct values of {kind}")
            codes[value] = code
            self.names[kind].append(value)
            self.added.append((kind, code, value))
        return code

    def stored(self, row: Row) -> bytes:
        """One row's stored record."""
        (eid, _, list_name, agency, category, priority, _, country, vf, vu, added_by) = row
        return STORED_STRUCT.pack(
            eid,
            -math.inf if vf is None else vf,
            math.inf if vu is None else vu,
            self.code("list", list_name),
            self.code("agency", agency),
            self.code("category", category),
            self.code("added_by", added_by),
            self.code("country", country),
            priority,
        )

    def stored_array(self, rows: Sequence[Row]) -> np.ndarray:
        """Many rows' stored records at once."""
        n = len(rows)
        (ids, _, lists, agencies, categories, priorities, _, countries, valid_from,
         valid_until, added_by) = zip(*rows, strict=True)  # fmt: skip
        out = np.zeros(n, STORED)
        out["id"] = ids
        for kind, values in (("list", lists), ("agency", agencies), ("category", categories),
                             ("added_by", added_by), ("country", countries)):  # fmt: skip
            code = self.code
            out[kind] = np.fromiter((code(kind, v) for v in values), np.int64, n)
        out["priority"] = priorities
        vf = np.array(valid_from, np.float64)  # None becomes NaN
        vu = np.array(valid_until, np.float64)
        vf[np.isnan(vf)] = -np.inf
        vu[np.isnan(vu)] = np.inf
        out["valid_from"], out["valid_until"] = vf, vu
        return out


_FOLD_LUT = np.arange(256, dtype=np.uint8)
for _c, _f in FOLD_MAP.items():
    _FOLD_LUT[ord(_c)] = ord(_f)
_POW_ARR = np.array(HASH_POW, dtype=np.uint64)
_U64 = np.uint64


def _mix32(h: np.ndarray) -> np.ndarray:
    """`distance.deletion_keys`'s mixing over a uint64 array."""
    return (h * _U64(HASH_MIX)) >> _U64(32)


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
        key = (prefix[:, i] - prefix[:, i + 1]) * p + full
        parts.append((_mix32(key[ok]) << _U64(32)) | row64[ok])
    return np.concatenate(parts)


class CompactIndex:
    """Entries in packed records, with exact, fuzzy and wildcard lookup.  Build with `build`."""

    def __init__(self) -> None:
        self.size = 0
        self._records = np.zeros(0, _RECORD)
        self._record_bytes = memoryview(b"")
        self._texts = b""  # each entry's pattern, then its reason (one cache line, mostly)
        self._names: dict[str, list] = {"list": [], "agency": [], "category": [], "added_by": []}
        self._countries: list[str | None] = [None]
        self._exact_mask = 0
        self._exact = np.zeros(0, _SLOT)
        self._exact_bytes = memoryview(b"")
        self._fuzzy_keys = np.zeros(0, np.uint32)
        self._fuzzy_rows = np.zeros(0, np.int32)
        self._wild = WildcardIndex(())
        self._entries: dict[int, Entry] = {}

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, chunks: Iterable[Sequence[Row]]) -> CompactIndex:
        """An index of the rows in `chunks` (each a sequence of `Entry`-ordered tuples).

        Rows are taken as valid (the replica and `Entry` checked them).
        """
        codes = NameCodes()

        def stored() -> Iterator[tuple[np.ndarray, Sequence[str], Sequence[str]]]:
            for chunk in chunks:
                if chunk:
                    yield codes.stored_array(chunk), [r[1] for r in chunk], [r[6] for r in chunk]

        return cls.build_stored(stored(), codes.names)

    @classmethod
    def build_stored(
        cls,
        chunks: Iterable[tuple[np.ndarray, Sequence[str], Sequence[str]]],
        names: Mapping[str, list],
    ) -> CompactIndex:
        """An index of stored records (`STORED`), each chunk with its patterns and reasons,
        whose codes refer to `names`.  Feed chunks of some ten thousand: each chunk's
        Python objects are freed once converted."""
        self = cls()
        records: list[np.ndarray] = []
        texts: list[bytes] = []
        exact_keys: list[np.ndarray] = []
        exact_rows: list[np.ndarray] = []
        fuzzy: list[np.ndarray] = []
        wild: list[tuple[int, str]] = []
        offset = text_at = 0
        for stored, pats, reasons_ in chunks:
            n = len(stored)
            if not n:
                continue
            rec = np.zeros(n, _RECORD)
            rec.view(np.uint8).reshape(n, -1)[:, : STORED.itemsize] = stored.view(np.uint8).reshape(
                n, -1
            )
            blob = "".join(pats).encode("ascii")
            lengths = np.fromiter(map(len, pats), np.int64, n)
            rec["pattern_len"] = lengths
            joined = "".join(reasons_)
            if joined.isascii():
                reason_lengths = np.fromiter(map(len, reasons_), np.int64, n)
            else:
                reason_lengths = np.fromiter((len(r.encode()) for r in reasons_), np.int64, n)
            rec["reason_len"] = reason_lengths
            sizes = lengths + reason_lengths
            rec["text_at"][1:] = np.cumsum(sizes[:-1])
            rec["text_at"] += text_at
            text_at += int(sizes.sum())
            interleaved: list[str] = [""] * (2 * n)
            interleaved[::2], interleaved[1::2] = pats, reasons_
            texts.append("".join(interleaved).encode())
            records.append(rec)
            rows = np.arange(offset, offset + n, dtype=np.int64)
            flat = np.frombuffer(blob, np.uint8)
            starred = np.zeros(len(flat) + 1, np.int64)
            np.cumsum((flat == ord(WILDCARD_ONE)) | (flat == ord(WILDCARD_ANY)), out=starred[1:])
            ends = np.cumsum(lengths)
            wild_mask = (starred[ends] - starred[ends - lengths]) > 0
            exact = ~wild_mask
            exact_keys.append(np.fromiter(map(hash, pats), np.int64, n)[exact])
            exact_rows.append(rows[exact])
            for i in np.flatnonzero(wild_mask).tolist():
                wild.append((offset + i, pats[i]))
            keyed = exact & (lengths >= MIN_FUZZY_LEN)
            if keyed.all():
                fuzzy.append(_fuzzy_keys(blob, lengths, rows))
            elif keyed.any():
                sub = [p for p, f in zip(pats, keyed.tolist(), strict=True) if f]
                fuzzy.append(_fuzzy_keys("".join(sub).encode("ascii"), lengths[keyed], rows[keyed]))
            offset += n
        self.size = offset
        self._names = {k: list(names.get(k, ())) for k in NAME_KINDS if k != "country"}
        self._countries = list(names.get("country", [None]))
        if not offset:
            return self
        self._records = np.concatenate(records)
        del records
        self._record_bytes = self._records.data.cast("B")
        self._texts = b"".join(texts)
        self._build_exact(np.concatenate(exact_keys), np.concatenate(exact_rows))
        if fuzzy:
            combined = np.concatenate(fuzzy)
            del fuzzy
            combined.sort()
            self._fuzzy_keys = (combined >> _U64(32)).astype(np.uint32)
            self._fuzzy_rows = (combined & _U64(0xFFFFFFFF)).astype(np.int32)
            del combined
        self._wild = WildcardIndex(wild)
        return self

    def _build_exact(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """The open-addressing table: a key's home slot is `key & mask`; keys sharing
        one go to the next free slots (placed sorted by home, so a cumulative maximum
        finds each one's slot), and a lookup reads on from home to the first empty."""
        slots = 1 << max(1, (2 * len(keys) - 1).bit_length())  # at most half full
        self._exact_mask = slots - 1
        home = keys & self._exact_mask
        order = np.argsort(home, kind="stable")
        home = home[order]
        step = np.arange(len(home), dtype=np.int64)
        at = step + np.maximum.accumulate(home - step) if len(home) else home
        table = np.zeros(max(slots, int(at[-1]) + 2 if len(at) else slots), _SLOT)
        table["row"] = -1
        table["key"][at] = keys[order]
        table["row"][at] = rows[order]
        self._exact = table
        self._exact_bytes = table.data.cast("B")

    @classmethod
    def from_entries(cls, entries: Iterable[Entry], chunk: int = 20_000) -> CompactIndex:
        def chunks() -> Iterable[list[Row]]:
            batch: list[Row] = []
            for e in entries:
                batch.append(tuple(e))
                if len(batch) >= chunk:
                    yield batch
                    batch = []
            yield batch

        return cls.build(chunks())

    # ------------------------------------------------------------------ reading

    @property
    def nbytes(self) -> int:
        arrays = [v for v in vars(self).values() if isinstance(v, np.ndarray)]
        return sum(a.nbytes for a in arrays) + len(self._texts)

    @property
    def wildcards(self) -> int:
        return self._wild.size

    def wildcards_examined(self, text: str, fuzzy: bool = True) -> int:
        """Patterns with '*' a read of `text` checks one by one: the work it costs here."""
        return self._wild.examined(text, fold(text), fuzzy)

    def _record(self, row: int) -> tuple:
        return _RECORD_STRUCT.unpack_from(self._record_bytes, row * _RECORD.itemsize)

    def pattern(self, row: int) -> str:
        r = self._record(row)
        return self._texts[r[9] : r[9] + r[10]].decode("ascii")

    def entry(self, row: int, record: tuple | None = None) -> Entry:
        """The entry at `row` (whose record the caller may have read already); the same
        plate is read again and again, so entries made are kept (a bounded cache, safe
        without a lock: dict calls are atomic)."""
        cached = self._entries.get(row)
        if cached is not None:
            return cached
        (eid, vf, vu, list_code, agency, category, added_by, country, priority, text_at,
         pattern_len, reason_len) = record or self._record(row)  # fmt: skip
        reason_at = text_at + pattern_len
        names = self._names
        made = _new_entry((
            eid,
            self._texts[text_at:reason_at].decode("ascii"),
            names["list"][list_code],
            names["agency"][agency],
            names["category"][category],
            priority,
            self._texts[reason_at : reason_at + reason_len].decode("utf-8"),
            self._countries[country],
            None if vf == -math.inf else vf,
            None if vu == math.inf else vu,
            names["added_by"][added_by],
        ))  # fmt: skip
        if len(self._entries) >= _ENTRY_CACHE:
            self._entries.clear()
        self._entries[row] = made
        return made

    def ids(self) -> np.ndarray:
        return self._records["id"]

    def list_names_of_rows(self) -> np.ndarray:
        """Each row's list name (an object array; for counting, not for matching)."""
        return np.array(self._names["list"], dtype=object)[self._records["list"]]

    def limits(
        self, policies: Mapping[str, ListPolicy], void: Iterable[str] = ()
    ) -> list[float | None]:
        """For each list of this index, by code: the fuzzy distance its entries may hit
        at (0 for exact lists), or None where they must not hit at all (a list not in
        `policies`, or in `void`: dropped or replaced since this index was built)."""
        void = set(void)
        out: list[float | None] = []
        for name in self._names["list"]:
            policy = policies.get(name)
            out.append(None if policy is None or name in void else policy.fuzzy_limit)
        return out

    def match(
        self,
        text: str,
        folded: str,
        country: str | None,
        now: float,
        limits: Sequence[float | None],
        fuzzy: bool,
        exclude: frozenset[int] = frozenset(),
    ) -> list[WatchlistHit]:
        """Hits of `text` (normalised; `folded` its confusion-folded form) in this index.

        `limits` come from `limits()`; with `fuzzy` False only exact and wildcard hits
        are looked for, and confusions never hit.  `exclude` ids to skip (entries an
        overlay has replaced).
        """
        if not self.size:
            return []
        unpack, buf, size = _RECORD_STRUCT.unpack_from, self._record_bytes, _RECORD.itemsize
        countries = self._countries

        def limit_of(row: int, r: tuple | None = None) -> float | None:
            r = r or unpack(buf, row * size)
            limit = limits[r[3]]
            if limit is None or not r[1] <= now < r[2]:
                return None
            listed = countries[r[7]]
            if listed is not None and country is not None and listed != country:
                return None
            if exclude and r[0] in exclude:
                return None
            return limit if fuzzy else 0.0

        hits: list[WatchlistHit] = []
        found: set[int] = set()
        h = hash(text)
        slot = (h & self._exact_mask) * _SLOT.itemsize
        slot_at, table = _SLOT_STRUCT.unpack_from, self._exact_bytes
        encoded = b""
        while slot < len(table):
            key, row = slot_at(table, slot)
            if row < 0:
                break
            slot += _SLOT.itemsize
            if key != h:
                continue
            r = unpack(buf, row * size)  # one read of the record serves every check
            encoded = encoded or text.encode("ascii")
            if self._texts[r[9] : r[9] + r[10]] == encoded and limit_of(row, r) is not None:
                found.add(row)
                hits.append(_new_hit((self.entry(row, r), "exact", 0.0, text)))
        if self._wild.size:
            confusions = fuzzy and any(limits)
            for row, distance in self._wild.match(text, folded, limit_of, confusions):
                hits.append(_new_hit((self.entry(row), "wildcard", distance, text)))
        fuzzy_length = MIN_FUZZY_LEN <= len(text) <= MAX_PLATE_LEN + 1
        if fuzzy and fuzzy_length and len(self._fuzzy_keys) and any(limits):
            hits.extend(self._fuzzy(text, folded, limit_of, found))
        return hits

    def _fuzzy(
        self, text: str, folded: str, limit_of: Callable[[int], float | None], found: set[int]
    ) -> list[WatchlistHit]:
        wanted = list(dict.fromkeys(deletion_keys(folded)))
        n = len(wanted)
        keys, rows = self._fuzzy_keys, self._fuzzy_rows
        # One search for where each key's run starts and where the next key's would.
        bounds = wanted + [k + 1 if k < _U32_MAX else k for k in wanted]
        at = keys.searchsorted(np.array(bounds, np.uint32)).tolist()
        candidates: set[int] = set()
        for i in range(n):
            a, b = at[i], at[n + i] if wanted[i] < _U32_MAX else len(keys)
            if b > a:
                candidates.update(rows[a:b].tolist())
        hits = []
        for row in candidates - found:
            limit = limit_of(row)
            if not limit:
                continue
            distance = plate_distance(text, self.pattern(row), limit)
            if distance:  # 0 is an exact hit, found above
                hits.append(_new_hit((self.entry(row), "fuzzy", distance, text)))
        return hits
