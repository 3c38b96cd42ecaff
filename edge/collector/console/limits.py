"""Request bodies: a cap on each (refused with 413 before it is read whole) and a time to arrive.

ASGI middleware in front of the console's application.  A body whose Content-Length is
over the cap is refused without reading a byte of it; one sent in chunks is counted as it
comes and refused when the count passes the cap.  A body that has not all come within
`timeout_s` of the request is refused with 408.  Both answers close the connection.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimits:
    """`max_bytes` for every body, except POSTs to a path matching one of `larger`'s patterns."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float,
        larger: Sequence[tuple[str, int]] = (),
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.larger = [(re.compile(p), n) for p, n in larger]

    def cap(self, scope: Scope) -> int:
        if scope.get("method") == "POST":
            for pattern, n in self.larger:
                if pattern.fullmatch(scope["path"]):
                    return n
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap(scope)
        length = _content_length(scope)
        if length == -1:
            await _refuse(400, "Content-Length is not a number", scope, receive, send)
            return
        if length is not None and length > cap:
            await _refuse(413, too_large(cap), scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        received = 0
        done = False

        async def limited() -> Message:
            nonlocal received, done
            if done:  # the body is in: what follows is the disconnect a stream waits for
                return await receive()
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                raise HTTPException(408, f"the request's body did not come within "
                                    f"{self.timeout_s:g} s") from None  # fmt: skip
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise HTTPException(413, too_large(cap))
                done = not message.get("more_body", False)
            else:
                done = True
            return message

        await self.app(scope, limited, send)


def too_large(cap: int) -> str:
    return f"the request's body is larger than {_size(cap)}"


def _size(n: int) -> str:
    if n >= 1024**2 and n % 1024**2 == 0:
        return f"{n // 1024**2} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def _content_length(scope: Scope) -> int | None:
    """The declared length; None when there is none, -1 when it is not a number."""
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else -1
    return None


async def _refuse(status: int, message: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"error": message}, status, headers={"connection": "close"})
    await response(scope, receive, send)
