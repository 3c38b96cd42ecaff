"""Helpers for the console tests: the console's web application in this process (Starlette's
TestClient) on real databases; a real collector with its console and watchlist server on
loopback, real edges (outbox + sender, CURVE keys) to send it hits, and an HTTP client."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import http.cookiejar
import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zmq
from starlette.testclient import TestClient
from starlette.types import ASGIApp

from edge.collector.config import CollectorConfig
from edge.collector.console.accounts import ConsoleDB
from edge.collector.console.app import COOKIE, Console, build_app
from edge.collector.console.config import CameraPlace, ConsoleConfig
from edge.collector.console.server import ConsoleServer
from edge.collector.service import CollectorService
from edge.collector.store import HitStore
from edge.collector.watchlist.cli import make_component as make_watchlists
from edge.collector.watchlist.config import WatchlistsConfig
from edge.core.link_protocol import CameraLocation, HitMessage, HitPlate, WatchlistMatch
from edge.core.status import NodeStatus
from edge.node.outbox import Outbox
from edge.node.sender import HitSender
from helpers.link import Keys, collector_config, free_port, make_keys, wait_for

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "console"
ADMIN = ("ada", "admin password 1", "Ada Admin")
OPERATOR = ("olga", "operator password 1", "Olga Operator")


def make_jpeg(text: str, size: tuple[int, int] = (200, 48)) -> bytes:
    """A real JPEG with `text` on it (so the page shows a picture, not a broken image)."""
    w, h = size
    img = np.full((h, w, 3), 235, np.uint8)
    scale = h / 40
    cv2.putText(img, text, (6, int(h * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20),
                max(1, int(scale * 2)))  # fmt: skip
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return data.tobytes()


def console_hit(
    plate: str,
    *,
    node: str = "edge-a",
    camera: str = "cam-north",
    priority: int = 1,
    kind: str = "exact",
    distance: int = 0,
    watchlist: str = "stolen",
    entry_id: str = "1",
    entry_plate: str | None = None,
    reason: str = "stolen car",
    seen_at: dt.datetime | None = None,
    country: str = "PL",
    location: CameraLocation | None = None,
    pictures: bool = True,
) -> HitMessage:
    formatted = f"{plate[:3]} {plate[3:]}"
    return HitMessage(
        node=node,
        camera=camera,
        seen_at=seen_at or dt.datetime.now(dt.UTC),
        plate=HitPlate(text=plate, raw=formatted, formatted=formatted, country=country,
                       confidence=0.93),
        match=WatchlistMatch(watchlist=watchlist, entry_id=entry_id, kind=kind,
                             entry_plate=entry_plate or plate, priority=priority, reason=reason,
                             distance=distance),
        location=location or CameraLocation(52.2297, 21.0122, "S8 km 12", "to Warsaw"),
        crop_jpeg=make_jpeg(formatted) if pictures else b"",
        scene_jpeg=make_jpeg(f"scene {plate}", (480, 270)) if pictures else b"",
    )  # fmt: skip


class Client:
    """A browser-less client of the console: JSON in and out, cookies kept."""

    def __init__(self, url: str):
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        data = None
        hdrs = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with self._opener.open(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def get(self, path: str) -> tuple[int, Any]:
        status, headers, body = self.request("GET", path)
        ctype = headers.get("content-type", "").split(";")[0]
        if ctype in ("application/json", "application/geo+json"):
            return status, json.loads(body)
        return status, body

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        status, headers, raw = self.request("POST", path, {} if body is None else body, **kw)
        ctype = headers.get("content-type", "")
        return status, json.loads(raw) if ctype.startswith("application/json") else raw

    def sign_in(self, name: str, password: str) -> None:
        status, body = self.post("/api/login", {"name": name, "password": password})
        assert status == 200, body

    @property
    def token(self) -> str | None:
        for c in self.jar:
            if c.name == "anpr_console":
                return c.value
        return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kw: Any) -> None:
        return None  # a redirect is an answer the tests look at


class EventStream:
    """Server-sent events of the console, read on a plain HTTP connection."""

    def __init__(self, url: str, token: str | None, timeout: float = 10.0):
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        headers = {"Accept": "text/event-stream"}
        if token:
            headers["Cookie"] = f"anpr_console={token}"
        self.conn.request("GET", "/api/events", headers=headers)
        self.response = self.conn.getresponse()

    def next_event(self) -> tuple[str, Any]:
        """The next event (kind, data); comments and `retry:` lines are skipped."""
        kind, data = "message", []
        while True:
            line = self.response.fp.readline()
            if not line:
                raise EOFError("the event stream ended")
            text = line.decode().rstrip("\r\n")
            if text == "":
                if data:
                    return kind, json.loads("\n".join(data))
                kind = "message"
                continue
            if text.startswith(":"):
                continue
            name, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)

    def close(self) -> None:
        self.conn.close()


@dataclass
class Stack:
    """A collector with its console and watchlist server, and the edges sending to it."""

    root: Path
    keys: Keys
    ctx: zmq.Context
    config: CollectorConfig
    service: CollectorService
    console: ConsoleServer
    watchlists: Any
    senders: list[HitSender] = field(default_factory=list)
    outboxes: list[Outbox] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.console.url

    def client(self, who: tuple[str, str, str] | None = None) -> Client:
        c = Client(self.url)
        if who is not None:
            c.sign_in(who[0], who[1])
        return c

    def edge(self, node: str = "edge-a", status: dict[str, Any] | None = None) -> Outbox:
        """A running edge `node` (outbox and sender, link up); hits put in its outbox go.
        Its heartbeats carry `status`: a NodeStatus's fields, less the node's name."""
        record = None if status is None else NodeStatus.model_validate({"node": node, **status})
        public, secret = self.keys.edge(node)
        outbox = Outbox(self.root / f"edge-{node}" / "outbox.db")
        sender = HitSender(
            outbox, self.service.endpoint, node_id=node, public_key=public, secret_key=secret,
            server_key=self.keys.server_public, ctx=self.ctx, ack_timeout_s=1.0,
            reconnect_max_s=0.2, heartbeat_s=0.2,
            status=(lambda: record) if record is not None else None,
        )  # fmt: skip
        sender.start()
        self.senders.append(sender)
        self.outboxes.append(outbox)
        wait_for(lambda: sender.stats.link_up, 15, f"edge {node} to connect")
        return outbox

    def stored(self, hit_id: str) -> bool:
        db = sqlite3.connect(f"file:{self.config.db_path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT 1 FROM hits WHERE hit_id = ?", (hit_id,)).fetchone()
            return row is not None
        finally:
            db.close()

    def close(self) -> None:
        for s in self.senders:
            s.stop()
        for o in self.outboxes:
            o.close()
        self.service.stop()


def live_status(*cameras: str) -> dict[str, Any]:
    """A healthy edge's heartbeat status with these cameras live."""
    return {
        "heartbeat_s": 0.2,
        "health": {"ok": True, "problems": []},
        "cameras": {c: {"state": "live", "ok": True, "fps": 12.5, "detail": ""} for c in cameras},
    }


def start_stack(root: Path, console: ConsoleConfig | None = None) -> Stack:
    keys = make_keys(root)
    snapshot, publish = free_port(), free_port()
    console = console or ConsoleConfig(
        port=0,
        cameras=[CameraPlace(node="edge-b", camera="cam-x", lat=54.35, lon=23.35,
                             label="Kalvarija border crossing")],
    )  # fmt: skip
    config = collector_config(root, keys).model_copy(update={
        "console": console,
        "watchlists": WatchlistsConfig(snapshot=f"tcp://127.0.0.1:{snapshot}",
                                       publish=f"tcp://127.0.0.1:{publish}", heartbeat_s=0.2),
    })  # fmt: skip
    ctx = zmq.Context()
    watchlists = make_watchlists(config)
    server = ConsoleServer(config)
    service = CollectorService(config, components=[watchlists, server], ctx=ctx)
    service.start()
    db = ConsoleDB(server.database)
    try:
        for (name, password, display), role in ((ADMIN, "admin"), (OPERATOR, "operator")):
            db.add_user(name, password, role, display)
    finally:
        db.close()
    return Stack(root, keys, ctx, config, service, server, watchlists)


def running_stack(root: Path, console: ConsoleConfig | None = None) -> Iterator[Stack]:
    """For a fixture: `yield from running_stack(tmp_path)`; stopped and closed after."""
    s = start_stack(root, console)
    try:
        yield s
    finally:
        s.close()
        s.ctx.destroy(linger=0)



# ---------------------------------------------------------------- in-process


def make_users(path: Path) -> Path:
    """A console database at `path` holding ADMIN and OPERATOR (argon2 takes its time: a
    test copies this one rather than hashing the passwords again)."""
    db = ConsoleDB(path)
    try:
        for (name, password, display), role in ((ADMIN, "admin"), (OPERATOR, "operator")):
            db.add_user(name, password, role, display)
    finally:
        db.close()
    return path


def _copy_db(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@dataclass
class InProcess:
    """The console's web application run in this process by Starlette's TestClient, on the
    databases `ConsoleServer` opens in a collector's data_dir: no socket, no thread of the
    collector, no live hub.  Hits are put in the hit store as the collector's writer does."""

    config: CollectorConfig
    server: ConsoleServer
    console: Console
    app: ASGIApp
    store: HitStore

    @property
    def url(self) -> str:
        return "http://testserver"  # TestClient's; the Host header of every request

    def client(self, who: tuple[str, str, str] | None = None, **kw: Any) -> TestClient:
        """A client (redirects not followed); with `who`, holding a session of that user
        (made in the database, as signing in would: POST /api/login is tested on its own)."""
        c = TestClient(self.app, follow_redirects=False, **kw)
        if who is not None:
            user = self.console.db.user(who[0])
            assert user is not None, who
            c.cookies.set(COOKIE, self.console.db.new_session(user, "testclient"))
        return c

    def add_hits(self, *hits: HitMessage) -> None:
        new, _ = self.store.commit(hits)
        assert len(new) == len(hits)

    def audit_rows(self) -> list[dict[str, Any]]:
        db = sqlite3.connect(f"file:{self.server.database}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY id")]
        finally:
            db.close()

    def close(self) -> None:
        self.server.stop()
        self.store.close()


@contextlib.contextmanager
def in_process(root: Path, users: Path, console: ConsoleConfig | None = None
               ) -> Iterator[InProcess]:
    """`with in_process(tmp_path, users) as app:` the console in a collector's data_dir
    under `root`, its database a copy of `users` (make_users); closed after."""
    config = CollectorConfig(
        listen="tcp://127.0.0.1:0", data_dir=root / "collector-data", credentials_dir=None,
        allowed_keys_dir=root / "allowed", console=console or ConsoleConfig(port=0),
    )  # fmt: skip
    store = HitStore(config.db_path)  # there before the console, as in the collector
    server = ConsoleServer(config)
    _copy_db(users, server.database)
    try:
        opened = server.open()
    except BaseException:
        store.close()
        raise
    app = InProcess(config, server, opened, build_app(opened), store)
    try:
        yield app
    finally:
        app.close()
