"""Cameras whose place and health a partner sees: what we send of ours, what we hold of theirs.

Sender (`CameraSender`): for each partner and each of our cameras a grant's `cameras:`
globs name (`sees_camera(partner, me, node, camera)`), a report of the camera (its place
as the node's heartbeat says, its health as our console judges it) when the grant
starts, again as soon as its health, state, place or problems change (but at most once
per `min_gap_s`, so that a flapping camera costs a message a second, not one a frame),
and at least every `refresh_s` (by which the partner knows it is still heard); a
withdrawal when the grant ends or the camera is forgotten.  Reports of one partner go
together in one message per pass, at most `MAX_CAMERAS_PER_MESSAGE` each.  What was sent
(per partner and camera: when, what, whether active) is written in the same transaction
as the outbox rows, so a crash neither loses a withdrawal nor sends one twice.

Receiver (`CameraReceiver`): a partner's cameras are kept in the exchange's own database
(`partner_cameras` in exchange.db), apart from our cameras in hits.db: they are not
ours (retention, `forget_nodes`, the node judgement never touch them), they change
with the agreements, which the exchange follows, and the writer of hits.db stays free
for hits.  Only what our own copy of the agreements grants is kept; a grant revoked or
expired drops them here even if the owner's withdrawal cannot reach us.  Messages are
numbered (epoch, seq) per owner: an older one than a camera's last is ignored.

The console reads them (`read_partner_cameras`): shown to the agency they were granted
to, as the owner's, and stale when not heard for `STALE_AFTER` times their `refresh_s`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from edge.collector.exchange.messages import (
    MAX_CAMERAS_PER_MESSAGE,
    MAX_PROBLEM_LINES,
    CameraReport,
    CameraReports,
    encode_camera_reports,
)
from edge.collector.exchange.outbox import Outbox
from edge.collector.exchange.server_config import inbox_subject
from edge.collector.nodes import NodeHealth, UnreadableStatus, judge_node, read_status
from edge.core.errors import ProtocolError
from edge.core.status import CameraStatus, NodeStatus
from edge.core.times import parse_iso

log = logging.getLogger(__name__)

REFRESH_S = 30.0
MIN_GAP_S = 1.0
POLL_S = 1.0
STALE_AFTER = 3.0  # times the owner's refresh_s
# Camera messages sent are dropped from the outbox after this: each is superseded within
# refresh_s, and the receiver orders them by (epoch, seq), not by the outbox's memory.
KEEP_SENT_S = 600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchange_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS camera_shares (
    partner TEXT NOT NULL, node TEXT NOT NULL, camera TEXT NOT NULL, sent_at REAL NOT NULL,
    said TEXT NOT NULL, active INTEGER NOT NULL, PRIMARY KEY (partner, node, camera));
CREATE TABLE IF NOT EXISTS partner_cameras (
    owner TEXT NOT NULL, node TEXT NOT NULL, camera TEXT NOT NULL, receiver TEXT NOT NULL,
    epoch TEXT NOT NULL, seq INTEGER NOT NULL, received_at REAL NOT NULL,
    refresh_s REAL NOT NULL, report TEXT NOT NULL, active INTEGER NOT NULL,
    PRIMARY KEY (owner, node, camera));
"""

Key = tuple[str, str]  # (node, camera)


class CameraGrants(Protocol):
    """What the camera exchange asks of the agreements (`Agreements`' method names)."""

    def partners(self, agency: str, at: dt.datetime | None = None) -> set[str]: ...

    def sees_camera(self, viewer: str, owner: str, node: str, camera: str = "",
                    at: dt.datetime | None = None) -> bool: ...


@dataclass(frozen=True)
class CameraShareSettings:
    """Where our cameras are read from, and how often they are sent."""

    hits_path: Path  # our collector's hits.db: its cameras, nodes and their last status
    poll_s: float = POLL_S  # how often hits.db is read for changes
    refresh_s: float = REFRESH_S  # each granted camera is sent at least this often
    min_gap_s: float = MIN_GAP_S  # and a change of its state at most this often


def setup_schema(outbox: Outbox) -> None:
    with outbox.transaction() as db:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)


# ------------------------------------------------------------------ our cameras, as judged


class OwnCameras:
    """Our agency's cameras from hits.db (read-only), each as a `CameraReport`."""

    def __init__(self, me: str, hits_path: Path):
        self.me, self.path = me, Path(hits_path)
        self._db: sqlite3.Connection | None = None
        self._statuses: dict[str, tuple[str, NodeStatus | None]] = {}  # node: (raw, read)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection | None:
        if self._db is None:
            if not self.path.exists():
                return None  # the collector has not made it yet
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
            self._db.row_factory = sqlite3.Row
        return self._db

    def read(self, now: dt.datetime) -> dict[Key, CameraReport]:
        """Our cameras (those whose `agency` is ours: never a partner's nor one from
        before agencies, whose owner is not known), judged at `now`."""
        db = self._conn()
        if db is None:
            return {}
        try:
            nodes = {r["node"]: dict(r) for r in db.execute(
                "SELECT node, last_seen, status FROM nodes WHERE agency = ?", (self.me,))}
            cams = db.execute("SELECT node, camera, last_seen, last_hit_at FROM cameras "
                              "WHERE agency = ? ORDER BY node, camera", (self.me,)).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return {}  # made, not yet set up
            raise
        judged = {name: self._judge(name, n, now) for name, n in nodes.items()}
        out = {}
        for c in cams:
            judgement = judged.get(c["node"]) or NodeHealth("late", ("never heard",))
            status = judgement.status
            state = status.cameras.get(c["camera"]) if status is not None else None
            out[(c["node"], c["camera"])] = _report(c, judgement, state)
        return out

    def _judge(self, node: str, n: dict[str, Any], now: dt.datetime) -> NodeHealth:
        raw = n["status"] or ""
        cached = self._statuses.get(node)
        if cached is None or cached[0] != raw:  # a status is read once, not every pass
            try:
                cached = (raw, read_status(raw))
            except UnreadableStatus:
                cached = (raw, None)
            self._statuses[node] = cached
        return judge_node({**n, "status": cached[1]}, now)


def _time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return parse_iso(value).replace(microsecond=0)
    except ValueError:
        return None


def _report(c: sqlite3.Row, judgement: NodeHealth, state: CameraStatus | None) -> CameraReport:
    """The camera as a partner sees it: our verdict (as our console's), the camera's own
    problems, and of its node's only that there are some (they are the node's business)."""
    own = [str(p) for p in judgement.problems if p.camera == c["camera"]]
    if state is not None and not state.ok and not own:
        own = [f"camera {c['camera']}: {state.state.value}"
               + (f" ({state.detail})" if state.detail else "")]
    node_wide = any(p.camera is None for p in judgement.problems) or (
        judgement.verdict != "late" and bool(judgement.notes))
    health: Literal["live", "late", "unhealthy"]
    if judgement.verdict == "late":
        health, problems = "late", [n for n in judgement.notes if "heard" in n][:1]
    elif own or node_wide:
        health, problems = "unhealthy", own + (["its node reports a problem"] if node_wide else [])
    else:
        health, problems = "live", []
    return CameraReport(
        node=c["node"], camera=c["camera"],
        place=state.place if state is not None else None,
        health=health, state=state.state if state is not None else None,
        problems=tuple(p[:500] for p in problems[:MAX_PROBLEM_LINES]),
        fps=min(state.fps, 1000.0) if state is not None else None,
        since=state.since if state is not None else None,
        last_seen=_time(c["last_seen"]), last_hit_at=_time(c["last_hit_at"]),
    )  # fmt: skip


def _said(r: CameraReport) -> str:
    """What of a report is sent at once when it changes (the rest waits for the refresh)."""
    return json.dumps([r.health, r.state, r.problems,
                       None if r.place is None else r.place.model_dump(mode="json")])


# ------------------------------------------------------------------ sender


@dataclass
class _Sent:
    sent_at: float
    said: str
    active: bool


class CameraSender:
    """Queues, for each partner, the reports of our cameras its grants show it."""

    def __init__(self, me: str, outbox: Outbox, settings: CameraShareSettings):
        self.me, self.outbox, self.settings = me, outbox, settings
        with outbox.transaction() as db:
            db.execute("INSERT OR IGNORE INTO exchange_meta VALUES ('camera-epoch', ?)",
                       (secrets.token_hex(8),))
        meta = dict(outbox.db.execute("SELECT key, value FROM exchange_meta").fetchall())
        self.epoch: str = meta["camera-epoch"]
        self._purged_at = -float("inf")

    def _next_seq(self, db: sqlite3.Connection, partner: str) -> int:
        key = f"camera-seq:{partner}"
        row = db.execute("SELECT value FROM exchange_meta WHERE key = ?", (key,)).fetchone()
        seq = (int(row[0]) if row else 0) + 1
        db.execute("INSERT OR REPLACE INTO exchange_meta VALUES (?, ?)", (key, str(seq)))
        return seq

    def sync(self, grants: CameraGrants, cameras: Mapping[Key, CameraReport],
             now: float) -> int:
        """Queue what is due at `now` (wall seconds); the number of messages queued."""
        s = self.settings
        sent: dict[str, dict[Key, _Sent]] = {}
        for p, node, camera, at, said, active in self.outbox.db.execute(
                "SELECT partner, node, camera, sent_at, said, active FROM camera_shares"):
            sent.setdefault(p, {})[(node, camera)] = _Sent(at, said, bool(active))
        partners = grants.partners(self.me)
        queued = 0
        for partner in sorted(partners | {p for p, c in sent.items()
                                          if any(x.active for x in c.values())}):
            had = sent.get(partner, {})
            due: list[CameraReport] = []
            granted: set[Key] = set()
            if partner in partners:
                for key, report in cameras.items():
                    if not grants.sees_camera(partner, self.me, *key):
                        continue
                    granted.add(key)
                    last = had.get(key)
                    age = now - last.sent_at if last is not None else 0.0
                    if (last is None or not last.active or age >= s.refresh_s or age < 0
                            or (last.said != _said(report) and age >= s.min_gap_s)):
                        due.append(report)
            gone = sorted(k for k, x in had.items() if x.active and k not in granted)
            if due or gone:
                queued += self._queue(partner, due, gone, now)
        if now - self._purged_at > KEEP_SENT_S / 10 or now < self._purged_at:
            self._purged_at = now
            self.purge_sent(now - KEEP_SENT_S)
        return queued

    def purge_sent(self, before: float) -> int:
        """Forget the ids of the camera messages the partners' streams stored before
        `before` (sent messages leave the outbox at once; their ids stay a day for the
        dedupe, and a refresh of every camera every 30 s would make many)."""
        with self.outbox.transaction() as db:  # msg ids cam:...: a range of them
            return db.execute("DELETE FROM outbox_sent WHERE msg_id >= 'cam:' AND msg_id < 'cam;' "
                              "AND sent_at < ?", (before,)).rowcount

    def _queue(self, partner: str, due: list[CameraReport], gone: list[Key],
               now: float) -> int:
        n = 0
        subject = inbox_subject(partner, self.me, "camera")
        step = MAX_CAMERAS_PER_MESSAGE
        with self.outbox.transaction() as db:
            for i in range(0, max(len(due), len(gone)), step):
                m = CameraReports(owner=self.me, epoch=self.epoch, seq=self._next_seq(db, partner),
                                  refresh_s=self.settings.refresh_s,
                                  cameras=tuple(due[i : i + step]),
                                  withdrawn=tuple(gone[i : i + step]))  # fmt: skip
                self.outbox.add(db, partner, subject, m.msg_id, encode_camera_reports(m))
                n += 1
            db.executemany("INSERT OR REPLACE INTO camera_shares VALUES (?, ?, ?, ?, ?, 1)",
                           [(partner, r.node, r.camera, now, _said(r)) for r in due])
            db.executemany("UPDATE camera_shares SET active = 0, sent_at = ? WHERE partner = ? "
                           "AND node = ? AND camera = ?", [(now, partner, *k) for k in gone])
        if gone:
            log.info("exchange: %d cameras withdrawn from %s", len(gone), partner)
        return n


# ------------------------------------------------------------------ receiver


class CameraReceiver:
    """Holds partners' cameras, as far as our agreements grant them to us."""

    def __init__(self, me: str, outbox: Outbox, clock: Callable[[], float] = time.time):
        self.me, self.outbox, self.clock = me, outbox, clock

    def apply(self, sender: str, m: CameraReports, grants: CameraGrants) -> str:
        """Apply `m` from `sender`: "applied", "duplicate" (older than what we hold) or
        "not granted" (nothing of it is ours to see)."""
        if m.owner != sender:
            raise ProtocolError("invalid", f"{sender} sent {m.owner}'s cameras")
        now = self.clock()
        applied = refused = 0
        with self.outbox.transaction() as db:
            for r in m.cameras:
                if not grants.sees_camera(self.me, m.owner, r.node, r.camera):
                    refused += 1
                    db.execute("DELETE FROM partner_cameras WHERE owner = ? AND node = ? "
                               "AND camera = ?", (m.owner, r.node, r.camera))
                    continue
                if self._newer(db, m, r.node, r.camera):
                    self._put(db, m, r.node, r.camera, now, r.model_dump_json(), active=True)
                    applied += 1
            for node, camera in m.withdrawn:
                if self._newer(db, m, node, camera):
                    self._put(db, m, node, camera, now, "", active=False)
                    applied += 1
        if refused:
            log.warning("exchange: %d cameras from %s are not granted to us: not held",
                        refused, sender)
        if applied or not (m.cameras or m.withdrawn):
            return "applied"
        return "not granted" if refused else "duplicate"

    def _newer(self, db: sqlite3.Connection, m: CameraReports, node: str, camera: str) -> bool:
        row = db.execute("SELECT epoch, seq FROM partner_cameras WHERE owner = ? AND node = ? "
                         "AND camera = ?", (m.owner, node, camera)).fetchone()
        return row is None or row[0] != m.epoch or m.seq > row[1]

    def _put(self, db: sqlite3.Connection, m: CameraReports, node: str, camera: str,
             now: float, report: str, active: bool) -> None:
        db.execute("INSERT OR REPLACE INTO partner_cameras VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (m.owner, node, camera, self.me, m.epoch, m.seq, now, m.refresh_s, report,
                    int(active)))

    def check_grants(self, grants: CameraGrants) -> int:
        """Forget the cameras our agreements no longer show us (revoked, expired)."""
        rows = self.outbox.db.execute(
            "SELECT owner, node, camera FROM partner_cameras").fetchall()
        gone = [r for r in rows if not grants.sees_camera(self.me, *r)]
        if gone:
            with self.outbox.transaction() as db:
                db.executemany("DELETE FROM partner_cameras WHERE owner = ? AND node = ? AND "
                               "camera = ?", gone)
            log.warning("exchange: %d partner cameras no longer granted: forgotten", len(gone))
        return len(gone)


# ------------------------------------------------------------------ both, for the exchange


class CameraShare:
    """The exchange's camera part, on its store worker: `sync` on each pass of the sync
    loop, `apply` for each camera message; without settings it only receives."""

    def __init__(self, me: str, outbox: Outbox, settings: CameraShareSettings | None,
                 clock: Callable[[], float] = time.time):
        setup_schema(outbox)
        self.settings, self.clock = settings, clock
        self.receiver = CameraReceiver(me, outbox, clock)
        self.sender = None if settings is None else CameraSender(me, outbox, settings)
        self.own = None if settings is None else OwnCameras(me, settings.hits_path)
        self._last = -float("inf")

    def close(self) -> None:
        if self.own is not None:
            self.own.close()

    def apply(self, sender: str, m: CameraReports, grants: CameraGrants) -> str:
        return self.receiver.apply(sender, m, grants)

    def sync(self, grants: CameraGrants, force: bool = False) -> int:
        """Forget what is no longer granted to us, and queue what is due of ours (every
        `poll_s`, or at once when `force`d); the number of messages queued."""
        self.receiver.check_grants(grants)
        if self.sender is None or self.own is None or self.settings is None:
            return 0
        mono = time.monotonic()
        if not force and mono - self._last < self.settings.poll_s:
            return 0
        self._last = mono
        now = self.clock()
        try:
            cameras = self.own.read(dt.datetime.fromtimestamp(now, dt.UTC))
        except sqlite3.Error as e:  # hits.db busy or broken: the next pass tries again
            log.warning("exchange: cannot read our cameras (%s); again shortly", e)
            self.own.close()
            return 0
        return self.sender.sync(grants, cameras, now)


# ------------------------------------------------------------------ for the console


def read_partner_cameras(db: sqlite3.Connection, now: float | None = None,
                         stale_after: float = STALE_AFTER) -> list[dict[str, Any]]:
    """Partners' cameras held (exchange.db), as the console's camera records, each with
    `receiver` (the agency they were granted to), `partner` True and `stale`."""
    now = time.time() if now is None else now
    try:
        rows = db.execute(
            "SELECT owner, node, camera, receiver, received_at, refresh_s, report FROM "
            "partner_cameras WHERE active ORDER BY owner, node, camera").fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []  # no exchange here (yet)
        raise
    out = []
    for owner, node, camera, receiver, received_at, refresh_s, raw in rows:
        try:
            r = CameraReport.model_validate_json(raw)
        except ValidationError:  # checked when received: a row we did not write
            log.warning("exchange.db: partner camera %s %s/%s unreadable", owner, node, camera)
            continue
        age = max(0.0, now - received_at)
        stale = age > stale_after * refresh_s
        problems = list(r.problems)
        if stale:
            problems.insert(0, f"not heard from {owner} for {age:.0f} s")
        place = r.place
        out.append({
            "node": node, "camera": camera, "id": f"{node}/{camera}", "agency": owner,
            "partner": True, "receiver": receiver, "stale": stale,
            "health": "late" if stale else r.health, "problems": problems,
            "state": r.state.value if r.state is not None else None, "fps": r.fps,
            "last_seen": _iso(r.last_seen), "last_hit_at": _iso(r.last_hit_at),
            "node_last_seen": None,
            "heard_at": _iso(dt.datetime.fromtimestamp(received_at, dt.UTC).replace(
                microsecond=0)),
            "lat": place.lat if place else None, "lon": place.lon if place else None,
            "road": place.road if place else "", "direction": place.direction if place else "",
            "label": "",
        })  # fmt: skip
    return out


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat(timespec="seconds")

