"""Helpers for the search tests: a minimal node (a DEALER with CURVE, as the edge's sender,
that checks each query with edge.core.search.verify_query and answers from an SQLite table
of reads), a collector with its search, and the reads to fill the nodes with."""

from __future__ import annotations

import datetime as dt
import fnmatch
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing
import zmq
from zmq.utils.monitor import recv_monitor_message

from edge.collector.search import Searches, make_searches
from edge.collector.service import CollectorService
from edge.core.errors import ProtocolError
from edge.core.keys import generate_signing_keypair, load_verify_key, make_curve_client
from edge.core.link_protocol import Heartbeat
from edge.core.search import (
    TAG_SEARCH,
    SearchQuery,
    SearchRead,
    chunks,
    query_id_of,
    refusal,
    verify_query,
)
from edge.core.status import NodeStatus
from edge.core.times import format_time, parse_iso
from helpers.link import Keys

_SCHEMA = """CREATE TABLE IF NOT EXISTS reads (
    text TEXT NOT NULL, seen_at TEXT NOT NULL, camera TEXT NOT NULL, direction TEXT NOT NULL,
    confidence REAL NOT NULL, crop BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS reads_by_text ON reads(text, seen_at);
CREATE INDEX IF NOT EXISTS reads_by_time ON reads(seen_at)"""


def heartbeat(node: str) -> list[bytes]:
    status = NodeStatus.model_validate({"node": node, "health": {"ok": True}})
    return Heartbeat(node, status.model_dump(mode="json")).encode()


@dataclass
class MiniNode:
    """A node that answers searches from its `reads` table (exact and wildcard; a read
    older than `retention_h` is never returned); `slow` holds its answers until set."""

    name: str
    endpoint: str
    server_public: bytes
    keys: tuple[bytes, bytes]
    verify_key: nacl.signing.VerifyKey
    db_path: Path
    retention_h: float = 24.0
    place: tuple[float, float] = (54.69, 25.28)
    # a camera's own place (None: the node does not know it), else `place`
    places: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    hold: threading.Event = field(default_factory=threading.Event)  # set: answer now
    queries: list[str] = field(default_factory=list)  # ids taken
    refused: list[str] = field(default_factory=list)  # why, each query refused
    auth_failures: int = 0  # connections the collector refused this node's key on

    def __post_init__(self) -> None:
        self.hold.set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        db = sqlite3.connect(self.db_path)
        db.executescript(_SCHEMA)
        db.close()

    def add_reads(self, rows: list[tuple[str, dt.datetime, str, str, float, bytes]]) -> None:
        db = sqlite3.connect(self.db_path)
        with db:
            db.executemany("INSERT INTO reads VALUES (?, ?, ?, ?, ?, ?)",
                           [(t, format_time(w), c, d, conf, crop)
                            for t, w, c, d, conf, crop in rows])  # fmt: skip
        db.close()

    def start(self, ctx: zmq.Context) -> None:
        self._ctx = ctx
        self._thread = threading.Thread(target=self._run, name=f"mini-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.hold.set()
        if self._thread is not None:
            self._thread.join(10)

    def search(self, q: SearchQuery, now: dt.datetime) -> list[SearchRead]:
        from_ = max(q.since, now - dt.timedelta(hours=self.retention_h))
        db = sqlite3.connect(self.db_path)
        try:
            rows = db.execute(
                "SELECT text, seen_at, camera, direction, confidence, crop FROM reads"
                " WHERE seen_at >= ? AND seen_at <= ? ORDER BY seen_at",
                (format_time(from_), format_time(q.until)),
            ).fetchall()
        finally:
            db.close()
        pattern = q.pattern.replace("?", "[A-Z0-9]")
        out = []
        for text, seen, camera, direction, conf, crop in rows:
            if q.cameras and camera not in q.cameras:
                continue
            if q.mode == "exact" and text != q.pattern:
                continue
            if q.mode == "wildcard" and not fnmatch.fnmatchcase(text, pattern):
                continue
            at = self.places.get(camera, self.place)
            out.append(SearchRead(text=text, formatted=text, country="LT", confidence=conf,
                                  seen_at=parse_iso(seen), camera=camera, direction=direction,
                                  vehicle_type="car", vehicle_colour="blue",
                                  lat=at[0] if at else None, lon=at[1] if at else None,
                                  crop_jpeg=crop))  # fmt: skip
        return out[: q.max_rows]

    def _run(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        make_curve_client(sock, *self.keys, self.server_public)
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                          | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        sock.connect(self.endpoint)
        retry_at = None
        try:
            while not self._stop.is_set():
                if retry_at is not None and time.monotonic() >= retry_at:
                    # ZeroMQ gives up on a connection whose key was refused (this node's
                    # key reached the allow-list after the collector last read it); the
                    # edge's sender connects again, and so does this one
                    sock.disconnect(self.endpoint)
                    sock.connect(self.endpoint)
                    retry_at = None
                ready = dict(poller.poll(50))
                if monitor in ready:
                    event = recv_monitor_message(monitor)["event"]
                    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                        sock.send_multipart(heartbeat(self.name))  # heard: it can be asked
                    else:
                        self.auth_failures += 1
                        retry_at = time.monotonic() + 0.1
                if sock not in ready:
                    continue
                frames = sock.recv_multipart()
                if frames[0] != TAG_SEARCH:
                    continue  # an ack
                now = dt.datetime.now(dt.UTC)
                try:
                    q = verify_query(frames, self.verify_key)
                    if self.name not in q.nodes:
                        raise ProtocolError("invalid", "not for this node")
                except ProtocolError as e:
                    self.refused.append(f"{e.reason}: {e.detail}")
                    answers = [refusal(query_id_of(frames), self.name, e.reason,
                                       self.retention_h)]  # fmt: skip
                else:
                    self.queries.append(q.query_id)
                    found = self.search(q, now)
                    answers = chunks(q.query_id, self.name, found, len(found), self.retention_h)
                    self.hold.wait()
                for a in answers:
                    sock.send_multipart(a.encode())
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)


def signing_keys(keys: Keys) -> tuple[nacl.signing.SigningKey, nacl.signing.VerifyKey]:
    """The collector's search signing pair, beside its CURVE pair."""
    return generate_signing_keypair(keys.collector_dir, "collector")


def mini_node(root: Path, keys: Keys, service: CollectorService, name: str,
              **kw: object) -> MiniNode:  # fmt: skip
    return MiniNode(name, service.endpoint, keys.server_public, keys.edge(name),
                    load_verify_key(keys.collector_dir, "collector"), root / f"{name}.db",
                    **kw)  # type: ignore[arg-type]  # fmt: skip


def attach(service: CollectorService, audit: object = None) -> Searches:
    searches = make_searches(service, service.config, service.agreements.current,
                             audit)  # type: ignore[arg-type]  # fmt: skip
    assert searches is not None
    return searches
