"""Ask an RTSP camera for its stream description, to say why a stream does not open.

FFmpeg's failure reaches OpenCV as a capture that is not open, nothing more: the 401
that says the password is wrong shows only in a line FFmpeg prints. A DESCRIBE of our
own, with the same credentials (Basic or Digest, RFC 2617 / RFC 7616 with MD5 or
SHA-256), tells a wrong address from a wrong password from a wrong path, in words an
installer can act on. Plain rtsp:// only: rtsps:// cameras are left to FFmpeg.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from edge.core.scrub import scrub_url

DEFAULT_PORT = 554
_MAX_REPLY = 64 * 1024
_CHALLENGE = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


@dataclass(frozen=True)
class ProbeResult:
    """What the camera answered: `ok` when it described a stream; `status` the RTSP
    status code (0: no RTSP answer at all); `reason` a sentence for people."""

    ok: bool
    status: int
    reason: str


def probe(url: str, timeout: float = 5.0) -> ProbeResult | None:
    """DESCRIBE `url` once (twice with credentials, answering the camera's challenge).

    None for URLs this cannot probe (not rtsp://). Never raises for network trouble:
    that is what it reports. Credentials never appear in the result.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "rtsp" or not parts.hostname:
        return None
    host, port = parts.hostname, parts.port or DEFAULT_PORT
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else ""
    netloc = host if ":" not in host else f"[{host}]"
    if parts.port:
        netloc += f":{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            status, headers = _describe(sock, bare, 1, None)
            if status == 401 and user is not None:
                auth = _authorization(headers.get("www-authenticate", []), user, password,
                                      "DESCRIBE", bare)
                if auth is not None:
                    status, headers = _describe(sock, bare, 2, auth)
    except socket.gaierror as exc:
        return ProbeResult(False, 0, f"unknown host {host!r} ({exc.strerror or exc})")
    except ConnectionRefusedError:
        return ProbeResult(False, 0, f"nothing listens at {where} (connection refused): "
                           "check the address and port")
    except TimeoutError:
        return ProbeResult(False, 0, f"no answer from {where} within {timeout:g} s: check "
                           "the address, the network and the firewall")
    except OSError as exc:
        return ProbeResult(False, 0, scrub_url(f"cannot reach {where}: {exc}"))
    except ValueError as exc:  # not an RTSP reply
        return ProbeResult(False, 0, f"{where} does not answer as an RTSP server ({exc})")
    return _verdict(status, user is not None)


def _verdict(status: int, had_credentials: bool) -> ProbeResult:
    if 200 <= status < 300:
        return ProbeResult(True, status, "the camera describes the stream")
    if status == 401:
        if had_credentials:
            return ProbeResult(False, status, "the camera refused the user and password "
                               "(401 Unauthorized)")
        return ProbeResult(False, status, "the camera asks for a user and password "
                           "(401 Unauthorized): give them in the camera's credentials file")
    if status == 403:
        return ProbeResult(False, status, "the camera refused this user (403 Forbidden)")
    if status == 404:
        return ProbeResult(False, status, "the camera has no stream at this path "
                           "(404 Not Found): check the path")
    return ProbeResult(False, status, f"the camera answered RTSP status {status}")


def _describe(sock: socket.socket, url: str, cseq: int,
              auth: str | None) -> tuple[int, dict[str, list[str]]]:
    lines = [f"DESCRIBE {url} RTSP/1.0", f"CSeq: {cseq}", "Accept: application/sdp",
             "User-Agent: anpr-edge probe"]
    if auth:
        lines.append(f"Authorization: {auth}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return _read_reply(sock)


def _read_reply(sock: socket.socket) -> tuple[int, dict[str, list[str]]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ValueError("connection closed before a reply")
        data += chunk
        if len(data) > _MAX_REPLY:
            raise ValueError("reply headers too long")
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("RTSP/") or not fields[1].isdigit():
        raise ValueError(f"status line {status_line[:40]!r}")
    headers: dict[str, list[str]] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    # Read the body (an SDP) off the connection so that a second request starts clean.
    length = int((headers.get("content-length") or ["0"])[0] or 0)
    length = min(max(length, 0), _MAX_REPLY)
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return int(fields[1]), headers


def _authorization(challenges: list[str], user: str, password: str, method: str,
                   uri: str) -> str | None:
    """The Authorization header answering the strongest challenge we can answer."""
    digest = [c for c in challenges if c.lower().startswith("digest ")]
    for challenge in digest:
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _CHALLENGE.finditer(challenge[7:])}
        algorithm = params.get("algorithm", "MD5").upper()
        hasher = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}.get(algorithm)
        if hasher is None or "nonce" not in params:
            continue

        def h(text: str, hasher=hasher) -> str:
            return hasher(text.encode()).hexdigest()

        realm, nonce = params.get("realm", ""), params["nonce"]
        ha1, ha2 = h(f"{user}:{realm}:{password}"), h(f"{method}:{uri}")
        fields = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"',
                  f'uri="{uri}"', f"algorithm={algorithm}"]
        if "auth" in [q.strip() for q in params.get("qop", "").split(",")]:
            cnonce, nc = os.urandom(8).hex(), "00000001"
            response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
            fields += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
        else:
            response = h(f"{ha1}:{nonce}:{ha2}")
        fields.append(f'response="{response}"')
        if "opaque" in params:
            fields.append(f'opaque="{params["opaque"]}"')
        return "Digest " + ", ".join(fields)
    if any(c.lower().startswith("basic") for c in challenges):
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return f"Basic {token}"
    return None
