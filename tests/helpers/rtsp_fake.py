"""A camera's RTSP front door on loopback: answers DESCRIBE, asks for Basic or Digest
credentials, and serves no media (the probe and check-config need no more)."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import socketserver
import threading

_FIELD = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')
SDP = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=fake\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"


class FakeRtspServer:
    def __init__(self, *, user: str | None = None, password: str = "",
                 scheme: str = "basic", paths: tuple[str, ...] = ("/main",)) -> None:
        self.user, self.password, self.scheme, self.paths = user, password, scheme, paths
        self.nonce = "abc123nonce"
        self.authorizations: list[str] = []
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str, userinfo: str | None = None) -> str:
        who = f"{userinfo}@" if userinfo else ""
        return f"rtsp://{who}127.0.0.1:{self.port}{path}"

    def __enter__(self) -> FakeRtspServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- one connection --------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(5)
        data = b""
        while True:
            try:
                chunk = sock.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            data += chunk
            while b"\r\n\r\n" in data:
                head, _, data = data.partition(b"\r\n\r\n")
                sock.sendall(self._answer(head.decode("latin-1")))

    def _answer(self, head: str) -> bytes:
        request, *lines = head.split("\r\n")
        method, url, _ = (request.split(" ") + ["", ""])[:3]
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        cseq = headers.get("cseq", "0")
        if method == "OPTIONS":
            return self._reply(cseq, "200 OK", "Public: OPTIONS, DESCRIBE")
        if method != "DESCRIBE":
            return self._reply(cseq, "405 Method Not Allowed")
        if self.user is not None:
            auth = headers.get("authorization")
            if auth:
                self.authorizations.append(auth)
            if not auth or not self._authorized(auth, method, url):
                challenge = ("Basic realm=\"cam\"" if self.scheme == "basic" else
                             f'Digest realm="cam", nonce="{self.nonce}", qop="auth"')
                return self._reply(cseq, "401 Unauthorized", f"WWW-Authenticate: {challenge}")
        path = "/" + url.split("://", 1)[-1].split("/", 1)[-1] if "/" in url.split("://", 1)[
            -1] else "/"
        if path not in self.paths:
            return self._reply(cseq, "404 Not Found")
        return self._reply(cseq, "200 OK", "Content-Type: application/sdp", SDP)

    def _authorized(self, auth: str, method: str, url: str) -> bool:
        kind, _, rest = auth.partition(" ")
        if kind.lower() == "basic":
            return base64.b64decode(rest).decode() == f"{self.user}:{self.password}"
        fields = {m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _FIELD.finditer(rest)}

        def h(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = h(f"{self.user}:cam:{self.password}")
        ha2 = h(f"{method}:{fields.get('uri', '')}")
        want = h(f"{ha1}:{self.nonce}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}")
        return fields.get("username") == self.user and fields.get("response") == want

    @staticmethod
    def _reply(cseq: str, status: str, header: str = "", body: bytes = b"") -> bytes:
        lines = [f"RTSP/1.0 {status}", f"CSeq: {cseq}"]
        if header:
            lines.append(header)
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
