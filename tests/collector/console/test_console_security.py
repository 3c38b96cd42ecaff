"""The console under attack, against a real collector on loopback: bursts of guesses, a
thousand idle sockets, bodies too big or too slow, streams of a user who is gone."""

from __future__ import annotations

import http.client
import json
import selectors
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from helpers.console import ADMIN, OPERATOR, Client, EventStream, running_stack
from helpers.link import wait_for

from edge.collector.console.accounts import ConsoleDB
from edge.collector.console.config import ConsoleConfig
from edge.collector.console.connections import LINGER_BYTES
from edge.collector.console.throttle import RefusalLog

# Short time-outs and small caps, so that what they do shows in a second.
LIMITS = ConsoleConfig(port=0, header_timeout_s=1.0, keep_alive_s=1, body_timeout_s=1.0,
                       max_import_bytes=256 * 1024, max_connections=400)  # fmt: skip


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    yield from running_stack(tmp_path_factory.mktemp("limited"), LIMITS)


# ---------------------------------------------------------------- helpers


class HeldHasher:
    """The console's own hasher, with each check counted and (but for `right`) held until
    `release` is set: a burst of sign-ins then stays in flight as long as the test wants."""

    def __init__(self, real: Any, right: str | None = None):
        self.real, self.right = real, right
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.calls = self.active = self.peak = 0

    def verify(self, digest: str, password: str) -> bool:
        with self.lock:
            self.calls += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if password != self.right:
                self.release.wait(30)
            return self.real.verify(digest, password)
        finally:
            with self.lock:
                self.active -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def held(stack):
    db = stack.console.console.db
    real = db._hasher
    h = HeldHasher(real, right=OPERATOR[1])
    db._hasher = h
    yield h
    h.release.set()
    db._hasher = real


def _login(url: str, name: str, password: str, address: str | None = None) -> tuple[int, Any]:
    headers = {"X-Forwarded-For": address} if address else None  # the proxy on loopback says
    return Client(url).post("/api/login", {"name": name, "password": password}, headers=headers)


def _audit(stack) -> list[dict]:
    db = sqlite3.connect(f"file:{stack.console.database}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY id")]
    finally:
        db.close()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _connect(url: str) -> socket.socket:
    return socket.create_connection(_address(url), timeout=10)


def _wait_closed(socks: list[socket.socket], timeout: float) -> dict[socket.socket, float]:
    """When the server closed each of `socks` (EOF or reset), waiting up to `timeout`."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed: dict[socket.socket, float] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(closed) < len(socks):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    if s.recv(65536):
                        continue  # an answer; the close comes after
                except (ConnectionResetError, BlockingIOError):
                    pass
                closed[s] = time.monotonic()
                sel.unregister(s)
    finally:
        sel.close()
    return closed


def _response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    sock.setblocking(True)
    sock.settimeout(10)
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    body = resp.read()
    ctype = resp.getheader("content-type", "")
    return resp.status, dict(resp.getheaders()), json.loads(body) if "json" in ctype else body


# ---------------------------------------------------------------- sign-in


def test_a_burst_of_guesses_gets_five_checks_and_the_right_one_in_it_none(stack, held):
    with ThreadPoolExecutor(40) as pool:
        guesses = [pool.submit(_login, stack.url, "olga", f"guess number {i}") for i in range(40)]
        # Five are admitted (counted before they are checked) and held; the rest refused now.
        wait_for(lambda: sum(f.done() for f in guesses) == 35, 15, "35 guesses refused at once")
        assert {f.result()[0] for f in guesses if f.done()} == {429}
        status, body = _login(stack.url, "olga", OPERATOR[1])  # the right one, in the burst
        assert status == 429, body
        held.release.set()
        results = sorted(f.result()[0] for f in guesses)
    assert results == [401] * 5 + [429] * 35
    assert held.calls == 5  # guesses checked: no more than had they come one by one
    status, body = _login(stack.url, "olga", OPERATOR[1])
    assert status == 429 and "too many failures" in body["error"]


def test_password_checks_run_a_few_at_a_time_and_the_rest_are_turned_away(stack, held):
    with ThreadPoolExecutor(40) as pool:
        tries = [pool.submit(_login, stack.url, f"user{i}", "not a password", f"10.1.0.{i}")
                 for i in range(40)]  # fmt: skip
        # 2 hash, 8 wait their turn, 30 are answered at once without a hash.
        wait_for(lambda: sum(f.done() for f in tries) == 30, 15, "30 answered at once")
        wait_for(lambda: held.active == 2, 10, "two checks running")
        done = [f.result() for f in tries if f.done()]
        assert {s for s, _ in done} == {503} and "try again" in done[0][1]["error"]
        assert held.peak == 2
        held.release.set()
        results = sorted(f.result()[0] for f in tries)
    assert results == [401] * 10 + [503] * 30
    assert held.peak == 2 and held.calls == 10
    assert _login(stack.url, *ADMIN[:2])[0] == 200  # and then it is all as before


def test_an_attackers_guesses_lock_only_the_attackers_address(stack):
    for _ in range(5):
        assert _login(stack.url, "olga", "a wrong guess", "203.0.113.66")[0] == 401
    assert _login(stack.url, "olga", OPERATOR[1], "203.0.113.66")[0] == 429
    status, body = _login(stack.url, "olga", OPERATOR[1], "10.20.0.7")  # her own desk
    assert status == 200, body
    rows = [r for r in _audit(stack) if r["action"].startswith("sign-in")]
    assert [(r["action"], r["address"]) for r in rows][-2:] == [
        ("sign-in refused", "203.0.113.66"), ("sign-in", "10.20.0.7")]  # fmt: skip


def test_refused_sign_ins_are_summed_in_the_audit(stack):
    clock = [1000.0]
    stack.console.console.refusals = RefusalLog(60.0, clock=lambda: clock[0])
    for _ in range(5):
        _login(stack.url, "olga", "a wrong guess", "203.0.113.66")
    for _ in range(60):
        assert _login(stack.url, "olga", "another guess", "203.0.113.66")[0] == 429
    refused = [r for r in _audit(stack) if r["action"] == "sign-in refused"]
    assert len(refused) == 1 and refused[0]["detail"] == "too many failures"
    clock[0] += 61  # the window is over: its count goes in, as one row
    trail = stack.client(ADMIN).get("/api/audit")[1]["audit"]
    (summed,) = [r for r in trail if "more refused" in r["detail"]]
    assert summed["detail"].startswith("too many failures: 59 more refused since ")
    assert summed["user"] == "olga" and summed["address"] == "203.0.113.66"
    assert len([r for r in _audit(stack) if r["action"] == "sign-in refused"]) == 2


# ---------------------------------------------------------------- connections


def test_idle_and_half_sent_connections_are_closed_and_the_console_answers_meanwhile(limited):
    opened = time.monotonic()
    idle = [_connect(limited.url) for _ in range(100)]
    half = [_connect(limited.url) for _ in range(100)]
    for s in half:
        s.sendall(b"GET /api/me HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    try:
        operator = limited.client(OPERATOR)  # while all 200 are open
        assert operator.get("/api/me")[0] == 200
        closed = _wait_closed(idle + half, 10)
        assert len(closed) == 200, f"{200 - len(closed)} connections still open"
        latest = max(closed.values()) - opened
        assert latest < LIMITS.header_timeout_s + 4, f"the last closed after {latest:.1f} s"
    finally:
        for s in idle + half:
            s.close()


def test_a_head_sent_a_byte_at_a_time_is_cut_off(limited):
    head = b"GET /api/me HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"a" * 200 + b"\r\n\r\n"
    s = _connect(limited.url)
    started = time.monotonic()
    sent = 0
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    try:
        while sent < len(head):
            try:
                s.sendall(head[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            if sel.select(0.1):  # the server spoke: it closed the connection
                break
        took = time.monotonic() - started
        assert sent < len(head), "the whole head went through, a byte at a time"
        assert _wait_closed([s], 5), "still open"
        assert took < LIMITS.header_timeout_s + 3
    finally:
        sel.close()
        s.close()


@pytest.fixture
def crowded(tmp_path):
    cfg = LIMITS.model_copy(update={"max_connections": 20, "header_timeout_s": 30.0})
    yield from running_stack(tmp_path, cfg)


def test_connections_past_the_ceiling_are_closed_at_once(crowded):
    socks = [_connect(crowded.url) for _ in range(30)]
    try:
        closed = _wait_closed(socks, 3)
        assert len(closed) == 10  # the ten past the ceiling, at once ...
        still = [s for s in socks if s not in closed]
        assert _wait_closed(still, 0.5) == {}  # ... the others wait for their time-out
    finally:
        for s in socks:
            s.close()
    # Once they are gone, the console answers again.
    wait_for(lambda: Client(crowded.url).get("/login")[0] == 200, 10, "the console to answer")


def test_a_kept_alive_connection_is_closed_when_idle(limited):
    conn = http.client.HTTPConnection(*_address(limited.url), timeout=10)
    conn.request("GET", "/login")
    assert conn.getresponse().read() and conn.sock is not None
    assert _wait_closed([conn.sock], LIMITS.keep_alive_s + 4), "the idle connection stayed"
    conn.close()


def test_a_huge_body_is_refused_before_it_is_read(limited):
    s = _connect(limited.url)
    try:
        s.sendall(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 300000000\r\n\r\n" + b"{" * 1024)  # fmt: skip
        status, headers, body = _response(s)
        assert status == 413 and "larger than 64 KiB" in body["error"]
        assert headers.get("connection") == "close"
    finally:
        s.close()


def test_a_body_sent_in_chunks_is_cut_at_the_cap(limited):
    s = _connect(limited.url)
    s.sendall(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"  # 64 KiB each, without end
    sent = [0]
    total = 16 * LINGER_BYTES  # more than the server drops while it lingers

    def write() -> None:
        try:
            while sent[0] < total:
                s.sendall(chunk)
                sent[0] += 0x10000
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: what the test wants

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 413
        assert "larger than 64 KiB" in json.loads(resp.read())["error"]
        writer.join(10)
        assert sent[0] < 4 * LINGER_BYTES, f"the server read {sent[0]} bytes of a refused body"
    finally:
        s.close()


def test_a_body_that_does_not_come_is_given_up(limited):
    s = _connect(limited.url)
    try:
        s.sendall(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"name\": ")  # fmt: skip
        status, headers, body = _response(s)
        assert status == 408 and "did not come within 1 s" in body["error"]
    finally:
        s.close()


def test_an_import_may_be_bigger_than_other_requests_but_not_without_end(limited):
    admin = limited.client(ADMIN)
    rows = "".join(f"AB{i:05d},PL,stolen_vehicle,2,case {i:05d}\n" for i in range(3000))
    text = "plate,country,category,priority,reason\n" + rows
    assert 64 * 1024 < len(text) < 256 * 1024
    status, body = admin.post("/api/watchlists/big/import", {"text": text, "agency": "PL"})
    assert status == 200 and body["added"] == 3000, body
    status, body = admin.post("/api/watchlists/big/import", {"text": text * 3, "agency": "PL"})
    assert status == 413 and "larger than 256 KiB" in body["error"]
    status, body = admin.post("/api/watchlists/big/entries", {"plate": "AB1", "x": "y" * 70_000})
    assert status == 413  # not an import: the small cap


def test_a_session_holds_only_a_few_event_streams(stack):
    operator = stack.client(OPERATOR)
    streams = [EventStream(stack.url, operator.token) for _ in range(4)]
    try:
        assert [s.response.status for s in streams] == [200] * 4
        fifth = EventStream(stack.url, operator.token)
        assert fifth.response.status == 429
        assert "4 live streams" in json.loads(fifth.response.read())["error"]
        fifth.close()
        other = EventStream(stack.url, stack.client(ADMIN).token)  # another session's own
        assert other.response.status == 200
        other.close()
        streams.pop().close()
        again = wait_for(lambda: _open_stream(stack.url, operator.token), 10, "a free place")
        streams.append(again)
    finally:
        for s in streams:
            s.close()
    wait_for(lambda: stack.console.console.streams == {}, 10, "every stream to be let go")


def _open_stream(url: str, token: str | None) -> EventStream | None:
    s = EventStream(url, token)
    if s.response.status == 200:
        return s
    s.close()
    return None


# ---------------------------------------------------------------- revocation


def _disable_by_cli(stack) -> None:
    from edge.collector.cli import main

    assert main(["user", "disable", "olga", "--db", str(stack.console.database)]) == 0


def _new_password(stack) -> None:
    db = ConsoleDB(stack.console.database)
    try:
        db.set_password("olga", "a brand new password")
    finally:
        db.close()


def _expire(stack) -> None:
    max_s = stack.console.config.session_max_hours * 3600
    db = sqlite3.connect(stack.console.database)
    try:
        db.execute("UPDATE sessions SET created_at = created_at - ? WHERE user = 'olga'",
                   (max_s + 1,))  # fmt: skip
        db.commit()
    finally:
        db.close()


@pytest.mark.parametrize("end", [_disable_by_cli, _new_password, _expire],
                         ids=["disabled", "new-password", "expired"])  # fmt: skip
def test_an_open_stream_ends_within_seconds_of_its_session(stack, end):
    operator = stack.client(OPERATOR)
    stream = EventStream(stack.url, operator.token, timeout=5.0)
    busy = threading.Event()

    def chatter() -> None:  # events keep coming: the stream must still look at its session
        while not busy.wait(0.05):
            stack.console.console.hub.publish("ack", {"id": 0, "note": "noise"})

    noise = threading.Thread(target=chatter, daemon=True)
    noise.start()
    try:
        wait_for(lambda: stack.console.console.hub.subscribers == 1, 10, "the stream")
        assert stream.next_event()[0] == "ack"
        end(stack)
        ended = time.monotonic()
        kinds = []
        while True:  # a read past 5 s raises TimeoutError: the stream went on too long
            try:
                kind, _ = stream.next_event()
            except EOFError:
                break
            kinds.append(kind)
            if kind == "signed-out":
                break
            assert time.monotonic() - ended < 5, "still delivering after 5 s"
        assert kinds[-1:] == ["signed-out"]
        assert time.monotonic() - ended < 5
    finally:
        busy.set()
        noise.join(5)
        stream.close()
