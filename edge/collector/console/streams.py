"""A streaming response that says when it ends, for the console's event streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class ClosingStream(StreamingResponse):
    """A streaming response that calls `done` however it ends (even if it never began):
    the console counts each open stream against a user's and the server's limits."""

    def __init__(self, content: AsyncIterator[str], done: Callable[[], None], **kw: Any):
        super().__init__(content, **kw)
        self._done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._done()
