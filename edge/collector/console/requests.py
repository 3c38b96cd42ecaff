"""What the console's routes take from a request: its JSON body, the client's address, and
a thread to do blocking work in."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def json_body(request: Request) -> dict[str, Any]:
    """The request's body, a JSON object; HTTP 400 saying why when it is not one."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a worker thread (the databases block), awaited by the route."""
    return anyio.to_thread.run_sync(fn, *args)
