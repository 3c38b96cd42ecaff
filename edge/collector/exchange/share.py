"""Lists and hits shared under the agreements: the sender's side and the receiver's.

Sender (`ListSender`): for each partner and each of our lists the grants give it, a
snapshot (begin, the entries granted, end) and then the list's changes in order, read
from the master store's change log; a withdrawal when the grant ends or the list is
dropped.  Its state (per partner and list: our message number, the master's change
number sent up to) is written in the same transaction as the outbox rows it causes.

Receiver (`ListReceiver`): a partner's list is held as `<owner>.<list>` in our master
store (and so reaches our edges), only while our own copy of the agreements grants it,
entry by entry for grants by category; dropped when the grant ends.  Hits
(`HitForwarder`, `HitReceiver`): a hit on a partner's list goes back to the owner if the
grants say so; a partner's hit on our list is committed, with the partner as agency.

Both sides are idempotent: list messages carry (epoch, seq), hits their ids.  Calls
into the stores are kept in the small functions at the top, for the agency columns.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge.collector.exchange.grants import Grants, entry_granted, may_hold_list
from edge.collector.exchange.messages import (
    ListChange,
    encode_hit_parts,
    encode_list_change,
    hit_msg_id,
)
from edge.collector.exchange.outbox import Outbox
from edge.collector.exchange.server_config import inbox_subject
from edge.collector.watchlist.master import ListInfo, WatchlistStore
from edge.core.errors import ProtocolError
from edge.core.link_protocol import HitMessage
from edge.core.watchlist.entry import Entry, ListPolicy
from edge.core.watchlist.index import Row
from edge.core.watchlist.protocol import row_from_wire

log = logging.getLogger(__name__)

SNAPSHOT_BATCH = 1000
_CATEGORY = 4  # a Row's fields: id, pattern, list, agency, category, ...

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchange_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shared (
    partner TEXT NOT NULL, list TEXT NOT NULL, seq INTEGER NOT NULL,
    master_seq INTEGER NOT NULL, active INTEGER NOT NULL, PRIMARY KEY (partner, list));
CREATE TABLE IF NOT EXISTS copies (
    owner TEXT NOT NULL, list TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (owner, list));
CREATE TABLE IF NOT EXISTS copy_entries (
    owner TEXT NOT NULL, list TEXT NOT NULL, remote_id INTEGER NOT NULL,
    pattern TEXT NOT NULL, country TEXT, fresh INTEGER NOT NULL,
    PRIMARY KEY (owner, list, remote_id));
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, subject TEXT NOT NULL,
    msg_id TEXT NOT NULL, reason TEXT NOT NULL, body BLOB NOT NULL);
"""


def setup_schema(outbox: Outbox) -> None:
    with outbox.transaction() as db:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)


# ------------------------------------------------------------------ the stores, as called


OwnLists = Callable[[WatchlistStore, Grants, str], dict[str, ListInfo]]


def own_lists(store: WatchlistStore, grants: Grants, me: str) -> dict[str, ListInfo]:
    """Our own active lists: those `me` owns (`ListInfo.agency`), never a partner's copy."""
    known = set(grants.agencies)
    return {name: info for name, info in store.lists().items()
            if info.active and info.agency == me and name.split(".", 1)[0] not in known}


def held_list_active(store: WatchlistStore, name: str) -> bool:
    info = store.lists([name]).get(name)
    return info is not None and info.active


def import_copy(store: WatchlistStore, name: str, entries: Sequence[Entry], owner: str) -> None:
    """Upsert a partner's entries into our copy `name`, which `owner` owns."""
    store.import_entries(name, entries, create=True, agency=owner)


def set_copy_policy(store: WatchlistStore, policy: ListPolicy, owner: str) -> None:
    store.set_policy(policy, agency=owner)


def drop_copy(store: WatchlistStore, name: str) -> None:
    if held_list_active(store, name):
        store.drop_list(name)


# ------------------------------------------------------------------ sender


@dataclass
class _Shared:
    seq: int
    master_seq: int
    active: bool


class ListSender:
    """Queues, for each partner, what it must get of our lists."""

    def __init__(self, me: str, store: WatchlistStore, outbox: Outbox,
                 lists_of: OwnLists = own_lists):
        self.me, self.store, self.outbox, self.lists_of = me, store, outbox, lists_of
        with outbox.transaction() as db:
            row = db.execute("SELECT value FROM exchange_meta WHERE key = 'epoch'").fetchone()
            if row is None:
                db.execute("INSERT INTO exchange_meta VALUES ('epoch', ?)",
                           (secrets.token_hex(8),))
        self.epoch: str = outbox.db.execute(
            "SELECT value FROM exchange_meta WHERE key = 'epoch'").fetchone()[0]

    def _state(self, db: sqlite3.Connection, partner: str, name: str) -> _Shared | None:
        row = db.execute("SELECT seq, master_seq, active FROM shared WHERE partner = ? AND "
                         "list = ?", (partner, name)).fetchone()
        return None if row is None else _Shared(row[0], row[1], bool(row[2]))

    def sync(self, grants: Grants) -> int:
        """Queue what has changed since the last call; the number of messages queued."""
        lists = self.lists_of(self.store, grants, self.me)
        active = self.outbox.db.execute(
            "SELECT partner, list FROM shared WHERE active").fetchall()
        pairs = {(p, n) for p in grants.partners(self.me) for n in lists}
        pairs |= {(p, n) for p, n in active}
        queued = 0
        for partner, name in sorted(pairs):
            granted = name in lists and may_hold_list(grants, self.me, name, partner)
            with self.outbox.transaction() as db:
                state = self._state(db, partner, name)
                if granted and (state is None or not state.active):
                    queued += self._snapshot(db, grants, partner, name, state)
                elif granted and state is not None:
                    queued += self._catch_up(db, grants, partner, name, state)
                elif state is not None and state.active:
                    queued += self._send(db, partner, state, ListChange(
                        self.me, name, self.epoch, state.seq + 1, "withdrawn"))
                    self._save(db, partner, name, state, active=False)
                    log.info("exchange: list %s withdrawn from %s", name, partner)
        return queued

    def _send(self, db: sqlite3.Connection, partner: str, state: _Shared,
              change: ListChange) -> int:
        self.outbox.add(db, partner, inbox_subject(partner, self.me, "list"), change.msg_id,
                        encode_list_change(change))
        state.seq = change.seq
        return 1

    def _save(self, db: sqlite3.Connection, partner: str, name: str, state: _Shared,
              active: bool) -> None:
        db.execute("INSERT OR REPLACE INTO shared VALUES (?, ?, ?, ?, ?)",
                   (partner, name, state.seq, state.master_seq, int(active)))

    def _granted_rows(self, grants: Grants, partner: str, name: str,
                      rows: Iterable[Row]) -> tuple[list[Row], list[int]]:
        keep, drop = [], []
        for r in rows:
            if entry_granted(grants, self.me, name, partner, str(r[_CATEGORY])):
                keep.append(r)
            else:
                drop.append(int(r[0]))
        return keep, drop

    def _snapshot(self, db: sqlite3.Connection, grants: Grants, partner: str, name: str,
                  state: _Shared | None) -> int:
        state = state or _Shared(0, 0, False)
        with self.store.reading():
            info = self.store.lists([name])[name]
            rows: list[Row] = []
            after = 0
            while True:
                chunk = self.store.snapshot_chunk(name, after, SNAPSHOT_BATCH)
                if not chunk:
                    break
                rows += [row_from_wire(name, item) for item in chunk]
                after = int(chunk[-1][0])  # type: ignore[call-overload]
        keep, _ = self._granted_rows(grants, partner, name, rows)
        n = self._send(db, partner, state, ListChange(self.me, name, self.epoch, state.seq + 1,
                                                      "snapshot-begin", policy=info.policy))
        for i in range(0, len(keep), SNAPSHOT_BATCH):
            n += self._send(db, partner, state, ListChange(
                self.me, name, self.epoch, state.seq + 1, "upsert",
                rows=tuple(keep[i : i + SNAPSHOT_BATCH])))
        n += self._send(db, partner, state,
                        ListChange(self.me, name, self.epoch, state.seq + 1, "snapshot-end"))
        state.master_seq = info.seq
        self._save(db, partner, name, state, active=True)
        log.info("exchange: list %s (%d entries of %d) sent to %s", name, len(keep), len(rows),
                 partner)
        return n

    def _catch_up(self, db: sqlite3.Connection, grants: Grants, partner: str, name: str,
                  state: _Shared) -> int:
        if not self.store.can_catch_up(name, state.master_seq):
            log.info("exchange: list %s: the log no longer reaches %s's copy; a new snapshot",
                     name, partner)
            return self._snapshot(db, grants, partner, name, state)
        n = 0
        for _, raw in self.store.list_changes_with_ids(name, state.master_seq, 500):
            body = json.loads(raw)
            op, state.master_seq = body["op"], body["seq"]
            base = (self.me, name, self.epoch)
            if op == "policy":
                policy = ListPolicy.from_json(body["policy"])
                n += self._send(db, partner, state,
                                ListChange(*base, state.seq + 1, "policy", policy=policy))
            elif op == "upsert":
                rows = [row_from_wire(name, item) for item in body["entries"]]
                keep, drop = self._granted_rows(grants, partner, name, rows)
                if keep:
                    n += self._send(db, partner, state, ListChange(
                        *base, state.seq + 1, "upsert", rows=tuple(keep)))
                if drop:  # an entry whose category is no longer granted
                    n += self._send(db, partner, state, ListChange(
                        *base, state.seq + 1, "remove", ids=tuple(drop)))
            elif op == "delete":
                n += self._send(db, partner, state, ListChange(
                    *base, state.seq + 1, "remove", ids=tuple(body["ids"])))
            elif op == "drop":
                n += self._send(db, partner, state, ListChange(*base, state.seq + 1, "withdrawn"))
                self._save(db, partner, name, state, active=False)
                return n
        self._save(db, partner, name, state, active=True)
        return n


# ------------------------------------------------------------------ receiver


class ListGap(Exception):
    """A list change came before changes it follows (a redelivery after a nak overtook
    them): not applied; it comes again, after them."""


class ListReceiver:
    """Applies partners' list changes to our copies, as far as our agreements grant them."""

    def __init__(self, me: str, store: WatchlistStore, outbox: Outbox):
        self.me, self.store, self.outbox = me, store, outbox

    def apply(self, sender: str, c: ListChange, grants: Grants, *, accept_gap: bool = False
              ) -> str:
        """Apply `c` from `sender`; what was done ("applied", "duplicate", "not granted").

        ListGap where changes before `c` have not come (yet), unless `accept_gap` (they
        never came back: applied, and the copy may lack what they said, logged)."""
        if c.owner != sender:
            raise ProtocolError("invalid", f"{sender} sent a change to {c.owner}'s list")
        db = self.outbox.db
        row = db.execute("SELECT epoch, seq FROM copies WHERE owner = ? AND list = ?",
                         (c.owner, c.list)).fetchone()
        if row is not None and row[0] == c.epoch and c.seq <= row[1]:
            return "duplicate"
        if row is not None and row[0] == c.epoch and c.seq > row[1] + 1:
            if not accept_gap:
                raise ListGap(f"{c.qualified}: change {c.seq} before {row[1] + 1}..{c.seq - 1}")
            log.error("exchange: %s: changes %d..%d never came; applying %d (the copy may "
                      "lack them until the next snapshot)", c.qualified, row[1] + 1, c.seq - 1,
                      c.seq)
        if c.op == "withdrawn" or not may_hold_list(grants, c.owner, c.list, self.me):
            self.drop(c.owner, c.list)
            if c.op == "withdrawn":
                log.info("exchange: %s withdrawn by %s", c.qualified, sender)
                return "applied"
            log.warning("exchange: %s from %s is not granted to us: not held", c.qualified,
                        sender)
            return "not granted"
        getattr(self, "_" + c.op.replace("-", "_"))(c, grants)
        with self.outbox.transaction() as tx:
            tx.execute("INSERT OR REPLACE INTO copies VALUES (?, ?, ?, ?)",
                       (c.owner, c.list, c.epoch, c.seq))
        return "applied"

    def _policy_of(self, c: ListChange) -> ListPolicy:
        assert c.policy is not None
        return dataclasses.replace(c.policy, name=c.qualified)

    def _snapshot_begin(self, c: ListChange, grants: Grants) -> None:
        set_copy_policy(self.store, self._policy_of(c), c.owner)
        with self.outbox.transaction() as tx:
            tx.execute("UPDATE copy_entries SET fresh = 0 WHERE owner = ? AND list = ?",
                       (c.owner, c.list))

    def _policy(self, c: ListChange, grants: Grants) -> None:
        set_copy_policy(self.store, self._policy_of(c), c.owner)

    def _upsert(self, c: ListChange, grants: Grants) -> None:
        rows = [r for r in c.rows
                if entry_granted(grants, c.owner, c.list, self.me, str(r[_CATEGORY]))]
        entries = [Entry(*r)._replace(list=c.qualified) for r in rows]
        if entries:
            import_copy(self.store, c.qualified, entries, c.owner)
        with self.outbox.transaction() as tx:
            tx.executemany("INSERT OR REPLACE INTO copy_entries VALUES (?, ?, ?, ?, ?, 1)",
                           [(c.owner, c.list, e.id, e.pattern, e.country) for e in entries])

    def _keys(self, c: ListChange, ids: Iterable[int]) -> set[tuple[str, str | None]]:
        out = set()
        for i in ids:
            row = self.outbox.db.execute(
                "SELECT pattern, country FROM copy_entries WHERE owner = ? AND list = ? AND "
                "remote_id = ?", (c.owner, c.list, i)).fetchone()
            if row is not None:
                out.add((row[0], row[1]))
        return out

    def _expire(self, c: ListChange, grants: Grants) -> None:
        local = [e.id for key in self._keys(c, c.ids)
                 for e in self.store.find(c.qualified, key[0], key[1])]
        if local:
            self.store.expire(local, c.at)

    def _remove_keys(self, c: ListChange, keys: set[tuple[str, str | None]]) -> None:
        if keys and held_list_active(self.store, c.qualified):
            kept = [e for e in self.store.entries(c.qualified)
                    if (e.pattern, e.country) not in keys]
            self.store.import_entries(c.qualified, kept, replace_all=True)

    def _remove(self, c: ListChange, grants: Grants) -> None:
        self._remove_keys(c, self._keys(c, c.ids))
        with self.outbox.transaction() as tx:
            tx.executemany("DELETE FROM copy_entries WHERE owner = ? AND list = ? AND "
                           "remote_id = ?", [(c.owner, c.list, i) for i in c.ids])

    def _snapshot_end(self, c: ListChange, grants: Grants) -> None:
        stale = self.outbox.db.execute(
            "SELECT remote_id FROM copy_entries WHERE owner = ? AND list = ? AND fresh = 0",
            (c.owner, c.list)).fetchall()
        self._remove(dataclasses.replace(c, ids=tuple(r[0] for r in stale)), grants)

    def drop(self, owner: str, name: str) -> None:
        drop_copy(self.store, f"{owner}.{name}")
        with self.outbox.transaction() as tx:
            tx.execute("DELETE FROM copies WHERE owner = ? AND list = ?", (owner, name))
            tx.execute("DELETE FROM copy_entries WHERE owner = ? AND list = ?", (owner, name))

    def check_grants(self, grants: Grants) -> list[str]:
        """Drop the copies our agreements no longer grant (revoked, expired); their names."""
        gone = []
        for owner, name in self.outbox.db.execute("SELECT owner, list FROM copies").fetchall():
            if not may_hold_list(grants, owner, name, self.me):
                self.drop(owner, name)
                gone.append(f"{owner}.{name}")
                log.warning("exchange: %s.%s no longer granted: our copy is dropped", owner, name)
        return gone


# ------------------------------------------------------------------ hits


class HitSink(Protocol):
    """Commits a partner's hits to our HitStore (through the collector's writer thread) and
    returns once they are durable: `HitStore.commit(hits, agency=agency)`."""

    def __call__(self, hits: Sequence[HitMessage], agency: str) -> None: ...


class HitForwarder:
    """Queues, for a list's owner, the hits our cameras made on its list, where granted."""

    def __init__(self, me: str, outbox: Outbox):
        self.me, self.outbox = me, outbox

    def forward(self, hits: Iterable[HitMessage], grants: Grants) -> int:
        known = set(grants.agencies)
        items = []
        for h in hits:
            owner, _, name = h.match.watchlist.partition(".")
            if not name or owner == self.me or owner not in known:
                continue
            if not grants.hits_back(owner, name, self.me):
                continue
            items.append((owner, inbox_subject(owner, self.me, "hit"), hit_msg_id(h),
                          encode_hit_parts(h)))
        if not items:
            return 0
        with self.outbox.transaction() as db:
            return self.outbox.add_many(db, items)


class HitReceiver:
    """Commits hits a partner's cameras made on our lists, where our agreements say so."""

    def __init__(self, me: str, sink: HitSink):
        self.me, self.sink = me, sink

    def apply(self, sender: str, hit: HitMessage, grants: Grants) -> str:
        ours = self.accept(sender, hit, grants)
        if ours is None:
            return "not granted"
        self.sink([ours], sender)
        return "applied"

    def accept(self, sender: str, hit: HitMessage, grants: Grants) -> HitMessage | None:
        """`hit` as we store it (on our own list's name), None where no grant sends it back
        to us; `ProtocolError` if it is not on our list.  The consumer commits those of a
        batch together (`sink`)."""
        owner, _, name = hit.match.watchlist.partition(".")
        if owner != self.me or not name:
            raise ProtocolError("invalid", f"hit {hit.hit_id} from {sender} is not on our list "
                                           f"({hit.match.watchlist!r})", hit.hit_id)
        if not grants.hits_back(self.me, name, sender):
            log.warning("exchange: hit %s from %s on %s: no grant sends those hits back to us",
                        hit.hit_id, sender, name)
            return None
        return on_list(hit, name)


def on_list(hit: HitMessage, name: str) -> HitMessage:
    """`hit` with its match on list `name`, a part of the list name it was checked with
    (not empty, no longer, no other characters): copied without checking the hit again,
    which `dataclasses.replace` would, its texts character by character."""
    match = copy.copy(hit.match)
    object.__setattr__(match, "watchlist", name)
    out = copy.copy(hit)
    object.__setattr__(out, "match", match)
    return out
