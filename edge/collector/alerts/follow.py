"""The alerts follow hits.db as the console does: new rows by rowid, completions by
`hit_changes.seq`, over a read-only connection, from the mark the queue keeps (`Mark`).

The collector's writer only commits (and wakes the follower); what it committed is routed
from hits.db itself, and the mark moves in the same alerts.db transaction as the items it
queued.  So a crash at any point -- after the hits' commit, before or during the enqueue --
loses no alert and queues none twice: after the restart the follower reads again from the
mark.  A new alerts.db starts at the end of hits.db (`end`): the history is not alerted.

`hits` has no AUTOINCREMENT: after the retention deletes the newest rows, SQLite hands
their rowids out again.  Each read first checks that the mark's row still holds the mark's
hit; where it does not, the rows received since the mark's hit are read again (the queue
dedupes those already queued).  A `hit_changes` sequence below the mark's is another
hits.db: its changes are read from the start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sqlite3
from collections.abc import Iterator

from edge.collector.alerts.queue import Mark
from edge.collector.hits import HitReader, StoredHit

log = logging.getLogger(__name__)


def end(reader: HitReader) -> Mark:
    """The end of hits.db now: its last row and its last change (all 0 when it has none)."""
    with reader.pool.connection() as db, _snapshot(db):
        row = db.execute(
            "SELECT rowid, hit_id, received_at FROM hits ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        (change,) = db.execute("SELECT coalesce(max(seq), 0) FROM hit_changes").fetchone()
    if row is None:
        return Mark(change=int(change))
    return Mark(int(row[0]), str(row[1]), str(row[2]), int(change))


def behind(reader: HitReader, mark: Mark) -> int:
    """Rows of hits.db past the mark (for the log at start)."""
    with reader.pool.connection() as db:
        return int(db.execute("SELECT count(*) FROM hits WHERE rowid > ?",
                              (mark.rowid,)).fetchone()[0])  # fmt: skip


def checked(reader: HitReader, mark: Mark) -> Mark:
    """`mark`, or where to read from instead when hits.db changed under it (its row's id
    used again, another database): see the module's doc."""
    with reader.pool.connection() as db, _snapshot(db):
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'hit_changes'").fetchone()
        if mark.change and (seq is None or int(seq[0]) < mark.change):
            log.warning(
                "alerts: hits.db's changes restart below the mark (%d): another "
                "database; its changes are read from the start",
                mark.change,
            )
            mark = dataclasses.replace(mark, change=0)
        if not mark.rowid:
            return mark
        row = db.execute("SELECT hit_id FROM hits WHERE rowid = ?", (mark.rowid,)).fetchone()
        if row is not None and row[0] == mark.hit_id:
            return mark
        # The mark's row is gone (and its rowid maybe handed out again): the rows received
        # since the mark's hit are the new ones, after every row left from before.
        first = db.execute(
            "SELECT rowid FROM hits WHERE received_at >= ? ORDER BY rowid LIMIT 1",
            (mark.received_at,)).fetchone()  # fmt: skip
        before = "rowid < ?" if first is not None else "1"
        args = (first[0],) if first is not None else ()
        prev = db.execute(f"SELECT rowid, hit_id, received_at FROM hits WHERE {before} "
                          "ORDER BY rowid DESC LIMIT 1", args).fetchone()  # fmt: skip
    again = Mark(change=mark.change) if prev is None else Mark(
        int(prev[0]), str(prev[1]), str(prev[2]), mark.change)  # fmt: skip
    log.info(
        "alerts: hit %s (row %d of hits.db) was deleted; following on from row %d, "
        "the hits received since it",
        mark.hit_id,
        mark.rowid,
        again.rowid,
    )
    return again


def read_since(reader: HitReader, mark: Mark, limit: int = 500) -> tuple[list[StoredHit], Mark]:
    """Up to `limit` new rows and up to `limit` changed hits past `mark`, in the order stored,
    and the mark past them."""
    mark = checked(reader, mark)
    rows = reader.after(mark.rowid, limit)
    changes = reader.changed_after(mark.change, limit)
    if rows:
        last = rows[-1]
        mark = dataclasses.replace(mark, rowid=last.rowid, hit_id=last.hit_id,
                                   received_at=last.received_at)  # fmt: skip
    if changes:
        mark = dataclasses.replace(mark, change=changes[-1][0])
    return [*rows, *(h for _, h in changes)], mark


@contextlib.contextmanager
def _snapshot(db: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: what is read in it is of one commit of the writer."""
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("COMMIT")
