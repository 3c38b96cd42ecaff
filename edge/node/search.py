"""The node's side of the search: find the reads a query asks for, and answer it.

`ReadSearch` searches the outbox's reads (its own read-only connection to the file, so
a search never waits on, nor holds up, the hits and reads being stored): exact by the
text, wildcard (`?` one character, `*` any run) by SQLite's GLOB on the text, fuzzy by
the one-edit neighbourhood of the pattern folded as the watchlist's distance folds it,
each candidate then judged by `plate_distance`.  All three read a covering index
(edge.node.outbox), then fetch the rows kept.  Within [since, until], the cameras asked
for and those the config places in the area; never a read older than the retention,
whether or not the purge has dropped it yet.  The newest `max_rows` are sent, newest
first; `total` says how many matched.

`SearchWorker` is the thread that answers: the sender hands it each query's frames and
sends the answer's chunks it gives back, on the link's socket, between hits.  It refuses
(answers `refused`) a query that is forged, not for this node, expired or replayed,
malformed, or one too many while it is busy; and logs every query.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing

from edge.core.errors import ProtocolError
from edge.core.search import (
    REPLAY_WINDOW_S,
    SearchAnswer,
    SearchQuery,
    SearchRead,
    chunks,
    query_id_of,
    refusal,
    verify_query,
)
from edge.core.times import format_time, parse_iso
from edge.core.watchlist.distance import EDIT_COST, FOLD_MAP, fold, plate_distance

log = logging.getLogger(__name__)

# Every character a folded plate may hold: what A-Z0-9 fold to.
_FOLDED_ALPHABET = sorted({FOLD_MAP.get(c, c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"})
_SQL_VARS = 900  # values bound in one statement at most (SQLite's old default limit: 999)
# Queries waiting for the worker; more are refused as busy. A burst of a dozen (several
# investigators at once) fits: each waits milliseconds, and at 8 a burst of 10 had 1-3
# refused (`python -m benchmarks search-load`).
MAX_WAITING = 32
FORGOTTEN_ANSWER_S = 60.0  # answer chunks the link could not take this long are dropped


@dataclass(frozen=True)
class CameraPlace:
    """Where a camera of this node stands, from its config (`location`)."""

    lat: float | None = None
    lon: float | None = None
    direction: str = ""


def folded_neighbours(folded: str) -> set[str]:
    """Every string one edit (deletion, insertion, substitution, swap of neighbours) from
    `folded`, over the folded alphabet, and `folded` itself."""
    out = {folded}
    n = len(folded)
    for i in range(n):
        out.add(folded[:i] + folded[i + 1 :])
        for c in _FOLDED_ALPHABET:
            out.add(folded[:i] + c + folded[i + 1 :])
        if i + 1 < n:
            out.add(folded[:i] + folded[i + 1] + folded[i] + folded[i + 2 :])
    for i in range(n + 1):
        for c in _FOLDED_ALPHABET:
            out.add(folded[:i] + c + folded[i:])
    return out


def _clean(value: object, limit: int) -> str:
    if not isinstance(value, str):
        return ""
    return "".join(" " if ord(c) < 32 else c for c in value[:limit])


class ReadSearch:
    """Search the reads of the outbox at `path` (opened read-only, its own connection).

    `retention_s` is the node's (`store.retention_h`); `clock` gives UNIX seconds (the
    outbox's clock: `stored` is written with it).  `cameras` maps the node's camera ids to
    their places, for area queries and the reads' positions.
    """

    def __init__(
        self,
        path: Path,
        *,
        retention_s: float,
        cameras: Mapping[str, CameraPlace] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.path = Path(path)
        self.retention_s = float(retention_s)
        self.cameras = dict(cameras or {})
        self._clock = clock
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA query_only=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def retention_h(self) -> float:
        return self.retention_s / 3600

    def _cameras_for(self, q: SearchQuery) -> list[str] | None:
        """The cameras the query is limited to (None: any); [] when none can match."""
        wanted: set[str] | None = set(q.cameras) if q.cameras else None
        if q.area is not None:
            lo_lat, lo_lon, hi_lat, hi_lon = q.area
            inside = {
                cam for cam, p in self.cameras.items()
                if p.lat is not None and p.lon is not None
                and lo_lat <= p.lat <= hi_lat and lo_lon <= p.lon <= hi_lon
            }  # fmt: skip
            wanted = inside if wanted is None else wanted & inside
        return None if wanted is None else sorted(wanted)

    def find(self, q: SearchQuery) -> tuple[list[SearchRead], int]:
        """The newest `q.max_rows` reads matching `q` (newest first) and how many matched."""
        now = self._clock()
        if self.retention_s <= 0:
            return [], 0
        oldest = now - self.retention_s
        since = max(q.since, dt.datetime.fromtimestamp(oldest, dt.UTC))
        if since > q.until:
            return [], 0
        cameras = self._cameras_for(q)
        if cameras == []:
            return [], 0
        where = ["seen_at >= ?", "seen_at <= ?", "stored > ?"]
        args: list[Any] = [format_time(since), format_time(q.until), oldest]
        if cameras is not None:
            where.append(f"camera IN ({','.join('?' * len(cameras))})")
            args.extend(cameras)
        cond = " AND ".join(where)
        with self._lock:
            found = self._candidates(q, cond, args)
            total = len(found)
            found.sort(key=lambda r: (r[1], r[0]), reverse=True)
            keep = [r[0] for r in found[: q.max_rows]]
            rows = self._rows(keep)
        return [r for r in (self._read(row) for row in rows) if r is not None], total

    def _candidates(self, q: SearchQuery, cond: str, args: list[Any]) -> list[tuple[int, str]]:
        """(id, seen_at) of the matching rows, from the covering indexes alone."""
        db = self._db
        if q.mode in ("exact", "wildcard"):
            op = "=" if q.mode == "exact" else "GLOB"  # GLOB's ? and * are the query's
            sql = f"SELECT id, seen_at FROM reads INDEXED BY reads_plate WHERE plate {op} ? AND "
            return db.execute(sql + cond, [q.pattern, *args]).fetchall()
        folded = fold(q.pattern)
        keys = folded_neighbours(folded) if q.max_distance >= EDIT_COST else {folded}
        out: list[tuple[int, str]] = []
        for part in _batches(sorted(keys), _SQL_VARS - len(args)):
            sql = (
                "SELECT id, seen_at, plate FROM reads INDEXED BY reads_folded"
                f" WHERE folded IN ({','.join('?' * len(part))}) AND {cond}"
            )
            for row_id, seen_at, plate in db.execute(sql, [*part, *args]):
                if plate_distance(q.pattern, plate, q.max_distance) is not None:
                    out.append((row_id, seen_at))
        return out

    def _rows(self, ids: Sequence[int]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for part in _batches(ids, _SQL_VARS):
            rows += self._db.execute(
                "SELECT seen_at, camera, plate, confidence, details, crop FROM reads"
                f" WHERE id IN ({','.join('?' * len(part))})",
                list(part),
            ).fetchall()
        rows.sort(key=lambda r: r[0], reverse=True)
        return rows

    def _read(self, row: tuple[Any, ...]) -> SearchRead | None:
        seen_at, camera, plate, confidence, details, crop = row
        try:
            d = json_object(details)
            place = self.cameras.get(camera, CameraPlace())
            crop = bytes(crop or b"")
            return SearchRead(
                text=plate,
                formatted=_clean(d.get("formatted"), 64) or plate,
                country=_clean(d.get("country"), 8),
                confidence=min(1.0, max(0.0, float(confidence or 0.0))),
                seen_at=parse_iso(seen_at),
                camera=camera,
                direction=_clean(d.get("direction"), 64) or place.direction[:64],
                vehicle_type=_clean(d.get("vehicle_type"), 32),
                vehicle_colour=_clean(d.get("vehicle_colour"), 32),
                lat=place.lat,
                lon=place.lon,
                crop_jpeg=crop if len(crop) <= 128 * 1024 and crop[:3] == b"\xff\xd8\xff" else b"",
            )
        except (ProtocolError, ValueError, TypeError) as e:
            log.warning("search: a read of camera %s left out: %s", camera, e)
            return None


def json_object(text: object) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    size = max(1, size)
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _refused_reason(e: ProtocolError) -> str:
    if e.reason in ("forged", "expired"):
        return f"{e.reason}: {e.detail}"
    return f"malformed: {e.detail}"


class SearchWorker:
    """Answer the search queries the sender hands over (`submit`), in a thread of its own.

    `verify_key` is the collector's (`collector.verify`); `node_id` this node's.  The
    answers' frames wait in `answers` for the sender's thread, which alone uses the
    link's socket; `wake_fd` becomes readable when one is there (for its poller).
    `clock` gives UNIX seconds, for the queries' freshness and the replay memory.
    """

    def __init__(
        self,
        search: ReadSearch,
        *,
        node_id: str,
        verify_key: nacl.signing.VerifyKey,
        clock: Callable[[], float] = time.time,
        max_waiting: int = MAX_WAITING,
    ):
        self.search = search
        self.node_id = node_id
        self.verify_key = verify_key
        self._clock = clock
        self._inbox: queue.Queue[list[bytes] | None] = queue.Queue(max_waiting)
        self.answers: queue.SimpleQueue[list[bytes]] = queue.SimpleQueue()
        self._seen: dict[str, float] = {}  # query id -> when taken, for REPLAY_WINDOW_S
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.stats = {"queries": 0, "answered": 0, "refused": 0, "rows": 0}

    @property
    def wake_fd(self) -> int:
        return self._wake_r.fileno()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("search worker already started")
        self._thread = threading.Thread(target=self._run, name=f"search-{self.node_id}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            try:
                self._inbox.put_nowait(None)
            except queue.Full:  # it is busy: it stops after the query it is on
                self._stopping = True
            self._thread.join(timeout)
            self._thread = None
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------ the sender's side

    def submit(self, frames: list[bytes]) -> None:
        """Take a query's frames (from the sender's thread); never blocks."""
        self.stats["queries"] += 1
        try:
            self._inbox.put_nowait(frames)
        except queue.Full:
            self._refuse(query_id_of(frames), f"busy: {self._inbox.maxsize} queries waiting")

    def drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    # ------------------------------------------------------------ the worker's side

    def _reply(self, answer: SearchAnswer) -> None:
        self.answers.put(answer.encode())
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):  # full: the sender is woken already
            pass

    def _refuse(self, query_id: str, reason: str) -> None:
        self.stats["refused"] += 1
        log.warning("search query %s refused: %s", query_id or "(no id)", reason)
        self._reply(refusal(query_id, self.node_id, reason, self.search.retention_h))

    def _run(self) -> None:
        while not self._stopping:
            frames = self._inbox.get()
            if frames is None:
                return
            try:
                self.handle(frames)
            except Exception:
                log.exception("search: a query failed")
                self._refuse(query_id_of(frames), "malformed: the node failed to answer it")

    def _check(self, frames: list[bytes]) -> SearchQuery | str:
        """The query, or why it is refused."""
        try:
            q = verify_query(frames, self.verify_key)
        except ProtocolError as e:
            return _refused_reason(e)
        if self.node_id not in q.nodes:
            return "not for this node"
        now = self._clock()
        try:
            q.check_fresh(dt.datetime.fromtimestamp(now, dt.UTC))
        except ProtocolError as e:
            return _refused_reason(e)
        for qid, taken in list(self._seen.items()):
            if now - taken > REPLAY_WINDOW_S:
                del self._seen[qid]
        if q.query_id in self._seen:
            return "replayed: this query was answered already"
        self._seen[q.query_id] = now
        if not q.case_ref.strip() or not q.legal_basis.strip():
            return "malformed: a query needs a case reference and a legal basis"
        return q

    def handle(self, frames: list[bytes]) -> None:
        """Judge and answer one query (in the worker's thread; public for tests)."""
        checked = self._check(frames)
        if isinstance(checked, str):
            self._refuse(query_id_of(frames), checked)
            return
        q = checked
        started = time.perf_counter()
        reads, total = self.search.find(q)
        took_ms = (time.perf_counter() - started) * 1000
        for part in chunks(q.query_id, self.node_id, reads, total, self.search.retention_h):
            self._reply(part)
        self.stats["answered"] += 1
        self.stats["rows"] += len(reads)
        log.info(
            "search query %s: case %r, basis %r, by %s of %s: %s %s, %d read(s) found, %d sent"
            " (%.0f ms)",
            q.query_id, q.case_ref, q.legal_basis, q.requested_by or "?", q.agency or "?",
            q.mode, _span(q), total, len(reads), took_ms,
        )  # fmt: skip


def _span(q: SearchQuery) -> str:
    text = f"{format_time(q.since)}..{format_time(q.until)}"
    if q.cameras:
        text += f" cameras {','.join(q.cameras)}"
    if q.area is not None:
        text += f" area {q.area}"
    return text
