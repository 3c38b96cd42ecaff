"""Match reads against every list on the edge: one big immutable index plus a small overlay.

The base index is built from the replica (seconds for a million entries); updates from
the centre go to a small overlay index rebuilt on each batch of changes, which shadows
the base entries it replaces or deletes.  `match` reads the current state through one
attribute and takes no lock, so a swap never stalls a match; writers serialise on a lock
of their own.  When the overlay grows large, `rebase` swaps in a freshly built base.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from edge.core.plates import normalise
from edge.core.watchlist.distance import fold
from edge.core.watchlist.entry import Entry, ListPolicy, WatchlistHit
from edge.core.watchlist.index import CompactIndex


@dataclass(frozen=True)
class _State:
    base: CompactIndex
    overlay: CompactIndex
    # id -> (change number, entry or None when deleted) for every change since the base
    changes: Mapping[int, tuple[int, Entry | None]]
    shadow: frozenset[int]  # base ids replaced or deleted since the base was built
    void: Mapping[str, int]  # list -> change number: its base entries are all out of date
    policies: Mapping[str, ListPolicy]
    base_limits: list[float | None]  # per list code of the base: see CompactIndex.limits
    overlay_limits: list[float | None]
    version: int  # changes applied so far


class Matcher:
    """Finds the watchlist entries a plate read hits.  Safe to use from many threads."""

    def __init__(
        self,
        entries: Iterable[Entry] = (),
        lists: Iterable[ListPolicy] = (),
        *,
        base: CompactIndex | None = None,
    ):
        self._lock = threading.Lock()
        base = base if base is not None else CompactIndex.from_entries(entries)
        self._state = self._build(base, {}, {}, {p.name: p for p in lists}, 0)

    # ------------------------------------------------------------------ reading

    def match(
        self,
        text: str,
        country: str | None = None,
        now: float | None = None,
        *,
        fuzzy: bool = True,
    ) -> list[WatchlistHit]:
        """Entries `text` hits, best first: closest match, then most urgent.

        `text` is normalised with `edge.core.plates.normalise` (a read's normalised text
        passes through unchanged).  `country` (ISO alpha-2) rules out entries of another
        country; entries without one, or a read without one, match any.  `now` (UNIX
        seconds, default the clock) decides which entries are in force.  With `fuzzy`
        False only exact and wildcard hits are looked for.
        """
        state = self._state
        text = normalise(text)
        if not text:
            return []
        if now is None:
            now = time.time()
        if country is not None:
            country = country.upper() or None
        folded = fold(text)
        hits = state.base.match(text, folded, country, now, state.base_limits, fuzzy, state.shadow)
        if state.overlay.size:
            hits += state.overlay.match(text, folded, country, now, state.overlay_limits, fuzzy)
        if len(hits) > 1:
            hits.sort(key=WatchlistHit.sort_key)
        return hits

    def count(self) -> int:
        """Entries held (expired ones included until the next rebuild); O(n)."""
        state = self._state
        base = state.base
        if not base.size:
            return state.overlay.size
        stale = np.isin(base.ids(), np.fromiter(state.shadow, np.int64, len(state.shadow)))
        if state.void:
            stale |= np.isin(base.list_names_of_rows(), list(state.void))
        return base.size - int(stale.sum()) + state.overlay.size

    @property
    def overlay_size(self) -> int:
        """Changes held in the overlay since the base was built."""
        return len(self._state.changes)

    @property
    def version(self) -> int:
        return self._state.version

    @property
    def lists(self) -> Mapping[str, ListPolicy]:
        return self._state.policies

    @property
    def nbytes(self) -> int:
        state = self._state
        return state.base.nbytes + state.overlay.nbytes

    # ------------------------------------------------------------------ writing

    def apply(
        self,
        upserts: Iterable[Entry] = (),
        deletes: Iterable[int] = (),
        lists: Mapping[str, ListPolicy] | None = None,
        void: Iterable[str] = (),
    ) -> int:
        """Apply one batch of changes; returns the new version number.

        First every entry of the lists in `void` is forgotten (the list was dropped, or
        its full snapshot follows in `upserts`), then `upserts` are added or replace the
        entry with their id, and `deletes` ids removed.  `lists`, when given, is the
        complete new set of lists in force.
        """
        with self._lock:
            state = self._state
            version = state.version + 1
            changes = dict(state.changes)
            void = set(void)
            voided = dict(state.void)
            if void:
                for name in void:
                    voided[name] = version
                for key, (_, e) in state.changes.items():
                    if e is not None and e.list in void:
                        changes[key] = (version, None)
            for entry in upserts:
                changes[entry.id] = (version, entry)
            for entry_id in deletes:
                changes[entry_id] = (version, None)
            policies = state.policies if lists is None else dict(lists)
            self._state = self._build(state.base, changes, voided, policies, version)
            return version

    def rebase(self, base: CompactIndex, version: int) -> None:
        """Swap in `base`, built from data that includes every change up to `version`."""
        with self._lock:
            state = self._state
            changes = {k: v for k, v in state.changes.items() if v[0] > version}
            void = {k: v for k, v in state.void.items() if v > version}
            self._state = self._build(base, changes, void, state.policies, state.version)

    @staticmethod
    def _build(
        base: CompactIndex,
        changes: dict[int, tuple[int, Entry | None]],
        void: dict[str, int],
        policies: Mapping[str, ListPolicy],
        version: int,
    ) -> _State:
        live = [e for _, e in changes.values() if e is not None and e.list in policies]
        overlay = CompactIndex.from_entries(live) if live else CompactIndex()
        return _State(
            base=base,
            overlay=overlay,
            changes=changes,
            shadow=frozenset(changes),
            void=void,
            policies=policies,
            base_limits=base.limits(policies, void),
            overlay_limits=overlay.limits(policies),
            version=version,
        )
