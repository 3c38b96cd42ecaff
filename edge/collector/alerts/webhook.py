"""Webhooks: each alert an HTTPS POST of JSON, signed with HMAC-SHA256, to an agency's system.

What the receiver gets (and how to check it, `verify_signature` below, stdlib only):

    POST /their/path HTTP/1.1
    Content-Type: application/json
    X-ANPR-Timestamp: 1767225600                 (Unix seconds of this attempt)
    X-ANPR-Delivery: 3f2a...                     (the same on every retry: dedupe on it)
    X-ANPR-Signature: sha256=<hex HMAC-SHA256(key, "<timestamp>." + body)>

    {"event": "hit", "delivery": "3f2a...", "hit_id": ..., "revision": 0, ...}

The key is the route's `secret_file` (shared with the receiver out of band).  The
timestamp is signed with the body, so a receiver that refuses old timestamps (5 minutes,
say) refuses replays.  `revision` 1 is the same hit completed by the pass's final read:
update the record of `hit_id`.  Answers: 2xx delivered; 408, 429 and 5xx, a timeout or a
broken connection are retried with back-off; any other status (4xx, 3xx: redirects are not
followed) is a fault of ours or of the route's setup and is dead-lettered at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge.collector.alerts.config import WebhookRoute
from edge.collector.alerts.queue import Item, Result

SIGNATURE_HEADER = "X-ANPR-Signature"
TIMESTAMP_HEADER = "X-ANPR-Timestamp"
DELIVERY_HEADER = "X-ANPR-Delivery"
_RETRY_STATUS = {408, 429}
_MAX_ANSWER = 64 * 1024  # of a receiver's answer, read (then the connection closed)


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """The X-ANPR-Signature value of `body` sent at `timestamp`."""
    mac = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    key: bytes,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether `signature` (X-ANPR-Signature) is ours over `body` sent at `timestamp`
    (X-ANPR-Timestamp), and the timestamp is within `tolerance_s` of `now`.

    For receivers to copy: it needs only hashlib, hmac and time.  Pass the body exactly as
    received (bytes), before any JSON parsing."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    if not signature.startswith("sha256="):
        return False
    expected = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature[len("sha256="):])


def body_of(item: Item, *, include_crop: bool = False) -> bytes:
    """The JSON body sent for `item` (compact, UTF-8)."""
    doc: dict[str, Any] = {"event": "hit", "delivery": item.delivery, **item.summary.to_json()}
    if include_crop and item.crop:
        doc["crop_jpeg_base64"] = base64.b64encode(item.crop).decode("ascii")
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class WebhookSender:
    """Sends a route's alerts.  `key` is the HMAC key (read from the credentials directory
    at start); `ca_file` a CA to trust instead of the system's; `clock` gives the
    timestamp (Unix seconds)."""

    def __init__(
        self,
        route: WebhookRoute,
        key: bytes,
        *,
        ca_file: Path | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.route = route
        self._key = key
        self.clock = clock
        parts = urlsplit(route.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # Made once: it reads the CA file, and verifies host names as browsers do.
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def __repr__(self) -> str:  # never the key
        return f"WebhookSender({self.route.name}, {self.route.url})"

    def send(self, item: Item) -> Result:
        body = body_of(item, include_crop=self.route.include_crop)
        timestamp = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "anpr-collector-alerts/1",
            TIMESTAMP_HEADER: timestamp,
            DELIVERY_HEADER: item.delivery,
            SIGNATURE_HEADER: sign(self._key, timestamp, body),
        }
        timeout = self.route.timeout_s
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=self._tls)  # fmt: skip
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            answer = conn.getresponse()
            status = answer.status
            text = answer.read(_MAX_ANSWER)[:200].decode("utf-8", "replace")
        except ssl.SSLCertVerificationError as e:
            # Not retried in a hot loop, but retried: a certificate may be renewed.
            return Result("retry", f"TLS certificate not trusted: {e.verify_message}")
        except (OSError, http.client.HTTPException) as e:  # timeouts are OSErrors
            return Result("retry", f"{type(e).__name__}: {e}")
        finally:
            conn.close()
        said = f"HTTP {status}" + (f": {text.strip()}" if text.strip() else "")
        if 200 <= status < 300:
            return Result("delivered", said)
        if status in _RETRY_STATUS or status >= 500:
            return Result("retry", said)
        return Result("failed", said)
