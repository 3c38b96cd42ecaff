"""Real receivers of alerts on loopback: an HTTPS webhook receiver that checks signatures,
an SMTP server (aiosmtpd), and a self-signed certificate made with the openssl CLI."""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.collector.alerts.webhook import verify_signature
from helpers.link import free_port

SECRET = "a-shared-hmac-key-0123456789"


@dataclass(frozen=True)
class Cert:
    cert: Path  # PEM, self-signed for localhost and 127.0.0.1: its own CA
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def make_cert(directory: Path, name: str = "receiver") -> Cert:
    """A self-signed certificate for localhost / 127.0.0.1 (openssl, a P-256 key: fast)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make a test certificate")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key), "-out",
         str(cert), "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return Cert(cert, key)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signed: bool  # the signature checked out with SECRET
    status: int  # what the receiver answered

    @property
    def doc(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver: answers `statuses` in turn (then 200), records every request."""

    url: str
    server: http.server.ThreadingHTTPServer
    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, n: int, timeout: float = 10.0) -> list[Received]:
        """The first `n` requests, once there are (AssertionError after `timeout`)."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise AssertionError(f"{len(self.requests)} requests, not {n}, in {timeout} s")
            return list(self.requests[:n])

    def delivered(self) -> list[Received]:
        with self.cond:
            return [r for r in self.requests if 200 <= r.status < 300]


def start_receiver(cert: Cert | None, statuses: list[int] | None = None, *,
                   key: str = SECRET, port: int = 0) -> Receiver:  # fmt: skip
    """An HTTPS receiver (plain HTTP when `cert` is None) on 127.0.0.1:`port` (0: chosen)."""
    holder: dict[str, Receiver] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            rec = holder["r"]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signed = verify_signature(key.encode(), body, self.headers.get("X-ANPR-Timestamp", ""),
                                      self.headers.get("X-ANPR-Signature", ""),
                                      tolerance_s=10**10)  # fmt: skip
            with rec.cond:
                status = rec.statuses.pop(0) if rec.statuses else 200
                status = status if signed else 401
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            with rec.cond:
                rec.requests.append(Received(self.path, dict(self.headers.items()), body,
                                             signed, status))  # fmt: skip
                rec.cond.notify_all()

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    if cert is not None:
        server.socket = cert.server_context().wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    scheme = "https" if cert is not None else "http"
    rec = Receiver(f"{scheme}://127.0.0.1:{port}/anpr/hits", server, list(statuses or []))
    holder["r"] = rec
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return rec


def stop_receiver(rec: Receiver) -> None:
    rec.server.shutdown()
    rec.server.server_close()


class Mailbox:
    """What an aiosmtpd server received: messages, as envelopes, waited on."""

    def __init__(self, refuse: int | None = None) -> None:
        self.envelopes: list[Any] = []
        self.cond = threading.Condition()
        self.refuse = refuse  # answer RCPT with this code (e.g. 550)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: Any) -> str:  # fmt: skip
        if self.refuse:
            return f"{self.refuse} no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.cond:
            self.envelopes.append(envelope)
            self.cond.notify_all()
        return "250 Message accepted"

    def wait(self, n: int, timeout: float = 10.0) -> list[Any]:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.envelopes) >= n, timeout):
                raise AssertionError(f"{len(self.envelopes)} mails, not {n}, in {timeout} s")
            return list(self.envelopes[:n])


@contextlib.contextmanager
def smtp_server(controller_cls: Any, mailbox: Mailbox, cert: Cert | None = None,
                **options: Any) -> Iterator[int]:  # fmt: skip
    """Run aiosmtpd's `Controller` on 127.0.0.1 (STARTTLS required when `cert`; `options`
    go to it, e.g. an `authenticator`); yields its port.  (The class is passed in: aiosmtpd
    is optional, its tests skip without it.)"""
    kw: dict[str, Any] = dict(options)
    if cert is not None:
        kw |= {"tls_context": cert.server_context(), "require_starttls": True}
    port = free_port()
    controller = controller_cls(mailbox, hostname="127.0.0.1", port=port, **kw)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
