"""The console's web application (Starlette): pages, the JSON API, live hits as server-sent events.

Nothing but the sign-in page and its script and style is served without a session;
every other path answers 401 (the API) or sends the browser to sign in (pages).
Requests that change something must be JSON (a cross-site form cannot send that)
and come from the page's own origin; the session cookie is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.console.accounts import ConsoleDB, User
from edge.console.config import ConsoleConfig
from edge.console.data import HIT_FIELDS, ConsoleData, QueryError, Search
from edge.console.live import LiveHub
from edge.watchlist.entry import FieldError, parse_entry
from edge.watchlist.files import FORMATS, WatchlistFileError, parse_entries
from edge.watchlist.master import WatchlistStore

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
COOKIE = "anpr_console"
# Served without a session: the sign-in page and what it needs.
PUBLIC = frozenset({"/login", "/api/login", "/static/login.js", "/static/console.css"})
KEEPALIVE_S = 15.0
# Sign-in: this many failures for a name (or, more, from one address: a control room
# behind one proxy shares it) within the window lock it out for a minute.
MAX_FAILURES = {"user": 5, "addr": 20}
FAILURE_WINDOW_S = 600.0
LOCKOUT_S = 60.0


@dataclass
class Console:
    """What the web application works with."""

    config: ConsoleConfig
    db: ConsoleDB
    data: ConsoleData
    hub: LiveHub
    watchlists_db: Path
    region: Path = STATIC / "region.geojson"
    failures: dict[str, deque[float]] = field(default_factory=dict)

    @property
    def idle_s(self) -> float:
        return self.config.session_idle_minutes * 60

    @property
    def max_s(self) -> float:
        return self.config.session_max_hours * 3600

    def session_user(self, token: str | None) -> User | None:
        return self.db.session_user(token, self.idle_s, self.max_s) if token else None

    # Sign-in throttling: in memory (a restart forgets, which is fine for a lock of a minute).
    def locked(self, keys: Sequence[str], now: float) -> float:
        """Seconds until `keys` may try again (0: now)."""
        wait = 0.0
        for key in keys:
            times = self.failures.get(key)
            if not times:
                continue
            while times and now - times[0] > FAILURE_WINDOW_S:
                times.popleft()
            if len(times) >= MAX_FAILURES[key.split(":", 1)[0]]:
                wait = max(wait, times[-1] + LOCKOUT_S - now)
        return max(0.0, wait)

    def failed(self, keys: Sequence[str], now: float) -> None:
        if len(self.failures) > 10_000:
            self.failures.clear()
        for key in keys:
            limit = MAX_FAILURES[key.split(":", 1)[0]]
            self.failures.setdefault(key, deque(maxlen=limit * 2)).append(now)


# ---------------------------------------------------------------- the guard


class Guard:
    """ASGI middleware: the session check, the same-origin check, and security headers."""

    def __init__(self, app: ASGIApp, console: Console):
        self.app = app
        self.console = console
        img = "'self' data:"
        if console.config.tile_origin:
            img += f" {console.config.tile_origin}"
        self.headers = [
            (b"content-security-policy",
             (f"default-src 'self'; img-src {img}; script-src 'self'; style-src 'self'; "
              "connect-src 'self'; media-src 'self'; object-src 'none'; base-uri 'none'; "
              "form-action 'self'; frame-ancestors 'none'").encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
        ]  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(self.headers)
                if path.startswith("/api/") and not any(k == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        token = request.cookies.get(COOKIE)
        user = await anyio.to_thread.run_sync(self.console.session_user, token) if token else None
        scope.setdefault("state", {})["user"] = user
        scope["state"]["token"] = token
        if request.method not in ("GET", "HEAD") and not _same_origin(request):
            response: Response = JSONResponse(
                {"error": "requests that change something must come from the console's page "
                 "as JSON"}, 403)  # fmt: skip
        elif user is None and path not in PUBLIC:
            if path.startswith(("/api/", "/static/")):
                response = JSONResponse({"error": "sign in first"}, 401)
            else:
                response = RedirectResponse("/login", 303)
        else:
            await self.app(scope, receive, send_with_headers)
            return
        await response(scope, receive, send_with_headers)


def _same_origin(request: Request) -> bool:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return False
    origin = request.headers.get("origin")
    if origin is None:  # not a browser, or a same-origin request of an old one
        return True
    host = request.headers.get("host", "")
    forwarded = request.headers.get("x-forwarded-host")
    return origin.split("://", 1)[-1] in {host, forwarded}


def _user(request: Request) -> User:
    user = request.state.user
    assert user is not None  # the guard let the request through
    return user


def _admin(request: Request) -> User:
    user = _user(request)
    if not user.is_admin:
        raise HTTPException(403, "only an admin may do that")
    return user


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str, limit: int = 1000) -> str:
    value = body.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise HTTPException(400, f"{key} must be text")
    value = str(value)
    if len(value) > limit:
        raise HTTPException(400, f"{key} longer than {limit} characters")
    return value


def _run(fn: Callable[..., Any], *args: Any) -> Any:
    return anyio.to_thread.run_sync(fn, *args)


# ---------------------------------------------------------------- pages and sign-in


async def login_page(request: Request) -> Response:
    if request.state.user is not None:
        return RedirectResponse("/", 303)
    return FileResponse(STATIC / "login.html", headers={"cache-control": "no-store"})


async def index_page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})


async def login(request: Request) -> Response:
    console: Console = request.app.state.console
    body = await _json_body(request)
    name, password = _text(body, "name", 64).strip(), _text(body, "password", 1024)
    address = _address(request) or "?"
    keys = [f"user:{name.lower()}", f"addr:{address}"]
    now = time.monotonic()
    wait = console.locked(keys, now)
    if wait > 0:
        await _run(console.db.audit, name or "?", "sign-in refused", "too many failures", address)
        return JSONResponse({"error": f"too many failed sign-ins; try again in {wait:.0f} s"},
                            429, headers={"retry-after": str(int(wait) + 1)})  # fmt: skip
    user = await _run(console.db.authenticate, name, password)
    if user is None:
        console.failed(keys, now)
        await _run(console.db.audit, name or "?", "sign-in failed", "", address)
        return JSONResponse({"error": "wrong name or password"}, 401)
    console.failures.pop(keys[0], None)
    token = await _run(console.db.new_session, user, address)
    await _run(console.db.audit, user.name, "sign-in", "", address)
    response = JSONResponse({"user": user.to_json()})
    secure = console.config.cookie_secure
    if secure is None:
        secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, token, max_age=int(console.max_s), httponly=True,
                        samesite="strict", secure=secure, path="/")  # fmt: skip
    return response


async def logout(request: Request) -> Response:
    console: Console = request.app.state.console
    user = _user(request)
    await _run(console.db.end_session, request.state.token)
    await _run(console.db.audit, user.name, "sign-out", "", _address(request))
    response = JSONResponse({"ok": True})
    response.delete_cookie(COOKIE, path="/")
    return response


async def me(request: Request) -> Response:
    console: Console = request.app.state.console
    cfg = console.config
    return JSONResponse({
        "user": _user(request).to_json(),
        "map": {"tile_url": cfg.tile_url, "attribution": cfg.tile_attribution},
        "live_hours": cfg.live_hours,
        "session_idle_minutes": cfg.session_idle_minutes,
    })  # fmt: skip


# ---------------------------------------------------------------- hits


def _with_acks(console: Console, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    acks = console.db.acks_for([h["hit_id"] for h in hits])
    for h in hits:
        h["acks"] = [a.to_json() for a in acks.get(h["hit_id"], [])]
    return hits


async def live(request: Request) -> Response:
    """The live board: hits of the last live_hours, with who acknowledged them."""
    console: Console = request.app.state.console

    def load() -> dict[str, Any]:
        last = console.data.last_rowid()
        hits = console.data.recent(console.config.live_hours)
        return {"hits": _with_acks(console, hits), "last_rowid": last}

    return JSONResponse(await _run(load))


def _search(request: Request, limit: int) -> Search:
    q = request.query_params
    try:
        want = int(q.get("limit") or limit)
    except ValueError:
        raise HTTPException(400, "limit must be a number") from None
    return Search(plate=q.get("plate", ""), since=q.get("since", ""), until=q.get("until", ""),
                  camera=q.get("camera", ""), watchlist=q.get("watchlist", ""),
                  limit=max(1, min(want, limit)))  # fmt: skip


async def search(request: Request) -> Response:
    console: Console = request.app.state.console
    s = _search(request, 1000)
    try:
        hits = await _run(console.data.search, s)
    except QueryError as e:
        raise HTTPException(400, str(e)) from None
    return JSONResponse({"hits": await _run(_with_acks, console, hits), "limit": s.limit})


async def export(request: Request) -> Response:
    console: Console = request.app.state.console
    fmt = request.path_params["fmt"]
    if fmt not in ("csv", "json"):
        raise HTTPException(404, "export as .csv or .json")
    s = _search(request, console.config.max_export_rows)
    user = _user(request)
    try:
        hits = await _run(console.data.search, s)
    except QueryError as e:
        raise HTTPException(400, str(e)) from None
    hits = await _run(_with_acks, console, hits)
    asked = {k: v for k, v in request.query_params.items() if v}
    await _run(console.db.audit, user.name, "export",
               f"{fmt}, {len(hits)} hits, {json.dumps(asked)}", _address(request))  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    headers = {"content-disposition": f'attachment; filename="hits-{stamp}.{fmt}"'}
    if fmt == "json":
        body = json.dumps(hits, indent=1, ensure_ascii=False)
        return Response(body, media_type="application/json", headers=headers)
    return Response(to_csv(hits), media_type="text/csv; charset=utf-8", headers=headers)


CSV_FIELDS = (*HIT_FIELDS, "acknowledged_by", "acknowledged_at", "ack_note")


def to_csv(hits: list[dict[str, Any]]) -> str:
    """Hits as CSV, the latest acknowledgement of each in the last columns.

    Text that a spreadsheet would take for a formula (=, +, -, @ first) is quoted
    with a leading apostrophe: a reason typed at the edge is not to run on a desk.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS)
    for h in hits:
        last = h["acks"][-1] if h.get("acks") else {}
        row = [h.get(k) for k in HIT_FIELDS]
        row += [last.get("display_name", ""), last.get("at", ""), last.get("note", "")]
        writer.writerow(_cell(v) for v in row)
    return out.getvalue()


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


async def one_hit(request: Request) -> Response:
    console: Console = request.app.state.console
    hit = await _run(console.data.hit, request.path_params["hit_id"])
    if hit is None:
        raise HTTPException(404, "no such hit")
    return JSONResponse((await _run(_with_acks, console, [hit]))[0])


async def picture(request: Request) -> Response:
    console: Console = request.app.state.console
    kind = request.path_params["kind"]
    if kind not in ("crop", "scene"):
        raise HTTPException(404, "no such picture")
    data = await _run(console.data.image, request.path_params["hit_id"], kind)
    if data is None:
        raise HTTPException(404, "no such picture")
    return Response(data, media_type="image/jpeg",
                    headers={"cache-control": "private, max-age=86400"})  # fmt: skip


async def acknowledge(request: Request) -> Response:
    console: Console = request.app.state.console
    user = _user(request)
    hit_id = request.path_params["hit_id"]
    body = await _json_body(request)
    note = _text(body, "note", 1000)
    hit = await _run(console.data.hit, hit_id)
    if hit is None:
        raise HTTPException(404, "no such hit")
    ack = await _run(console.db.acknowledge, hit_id, user, note, _address(request))
    console.hub.publish("ack", ack.to_json())
    return JSONResponse(ack.to_json())


async def events(request: Request) -> Response:
    """Server-sent events: `hit` for each new hit, `ack` for each acknowledgement."""
    console: Console = request.app.state.console
    token = request.state.token
    sub = console.hub.subscribe()

    async def stream() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(sub.get(), KEEPALIVE_S)
                except TimeoutError:
                    if await _run(console.session_user, token) is None:
                        yield "event: signed-out\ndata: {}\n\n"
                        return
                    yield ": still here\n\n"
                    continue
                if event is None:  # the console is stopping, or this reader fell behind
                    return
                kind, data = event
                if kind == "hit":
                    data = (await _run(_with_acks, console, [data]))[0]
                yield f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
        finally:
            console.hub.unsubscribe(sub)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"cache-control": "no-store",
                                      "x-accel-buffering": "no"})  # fmt: skip


# ---------------------------------------------------------------- cameras, map


async def cameras(request: Request) -> Response:
    console: Console = request.app.state.console
    cams = await _run(console.data.cameras, console.config.late_after_s)
    return JSONResponse({"cameras": cams})


async def region(request: Request) -> Response:
    console: Console = request.app.state.console
    return FileResponse(console.region, media_type="application/geo+json")


# ---------------------------------------------------------------- watchlists


async def lists(request: Request) -> Response:
    console: Console = request.app.state.console
    return JSONResponse({"lists": await _run(console.data.lists)})


async def entries(request: Request) -> Response:
    console: Console = request.app.state.console
    q = request.query_params
    try:
        after = int(q.get("after") or 0)
        rows = await _run(console.data.entries, request.path_params["name"],
                          q.get("plate", ""), after, 200)  # fmt: skip
    except (ValueError, QueryError) as e:
        raise HTTPException(400, str(e)) from None
    return JSONResponse({"entries": rows})


def _with_store(console: Console, fn: Callable[[WatchlistStore], Any]) -> Any:
    store = WatchlistStore(console.watchlists_db)
    try:
        return fn(store)
    finally:
        store.close()


async def import_list(request: Request) -> Response:
    console: Console = request.app.state.console
    user = _admin(request)
    name = request.path_params["name"]
    body = await _json_body(request)
    text = _text(body, "text", 64 * 1024**2)
    fmt = _text(body, "format", 8) or "csv"
    if fmt not in FORMATS:
        raise HTTPException(400, f"format must be one of {', '.join(FORMATS)}")
    filename = _text(body, "filename", 200) or "upload"
    replace = bool(body.get("replace"))
    defaults = {"added_by": user.name}
    if _text(body, "agency", 100):
        defaults["agency"] = _text(body, "agency", 100)
    try:
        parsed = parse_entries(filename, text, fmt, name, defaults)
    except WatchlistFileError as e:
        problems = [{"line": line, "field": fld, "message": msg}
                    for line, fld, msg in e.problems[:50]]  # fmt: skip
        return JSONResponse({"error": f"{filename}: nothing imported", "problems": problems,
                             "more": max(0, len(e.problems) - 50)}, 400)  # fmt: skip
    except (FieldError, ValueError) as e:
        raise HTTPException(400, str(e)) from None
    result = await _run(_with_store, console,
                        lambda s: s.import_entries(name, parsed, replace_all=replace))  # fmt: skip
    detail = (f"list {name} from {filename}: {result.added} added, {result.changed} changed, "
              f"{result.unchanged} unchanged, {result.removed} removed")  # fmt: skip
    await _run(console.db.audit, user.name, "watchlist import", detail, _address(request))
    return JSONResponse({"list": name, "added": result.added, "changed": result.changed,
                         "unchanged": result.unchanged, "removed": result.removed})  # fmt: skip


async def add_entry(request: Request) -> Response:
    console: Console = request.app.state.console
    user = _admin(request)
    name = request.path_params["name"]
    body = await _json_body(request)
    raw = {k: _text(body, k, 500) for k in (
        "plate", "country", "category", "priority", "reason", "valid_from", "valid_until",
        "agency")}  # fmt: skip
    raw["added_by"] = user.name
    try:
        entry = parse_entry({k: v for k, v in raw.items() if v != ""}, list_name=name)
    except FieldError as e:
        raise HTTPException(400, str(e)) from None
    added = await _run(_with_store, console, lambda s: s.add(entry, create=True))
    await _run(console.db.audit, user.name, "watchlist add",
               f"entry {added.id}: {added.pattern} on {added.list} ({added.agency}, "
               f"priority {added.priority}): {added.reason}", _address(request))  # fmt: skip
    return JSONResponse({"id": added.id, "plate": added.pattern, "list": added.list})


async def expire_entry(request: Request) -> Response:
    console: Console = request.app.state.console
    user = _admin(request)
    entry_id = request.path_params["entry_id"]
    try:
        changed = await _run(_with_store, console, lambda s: s.expire([entry_id]))
    except KeyError:
        raise HTTPException(404, "no such entry") from None
    e = changed[0]
    await _run(console.db.audit, user.name, "watchlist expire",
               f"entry {e.id}: {e.pattern} on {e.list}", _address(request))  # fmt: skip
    return JSONResponse({"id": e.id, "valid_until": e.valid_until})


# ---------------------------------------------------------------- audit


async def audit(request: Request) -> Response:
    console: Console = request.app.state.console
    _admin(request)
    before = request.query_params.get("before")
    try:
        rows = await _run(console.db.audit_trail, int(before) if before else None)
    except ValueError:
        raise HTTPException(400, "before must be a number") from None
    return JSONResponse({"audit": rows})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": exc.detail}, exc.status_code)
    return PlainTextResponse(str(exc.detail), exc.status_code)


def build_app(console: Console) -> ASGIApp:
    routes = [
        Route("/", index_page),
        Route("/login", login_page),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/logout", logout, methods=["POST"]),
        Route("/api/me", me),
        Route("/api/live", live),
        Route("/api/events", events),
        Route("/api/hits", search),
        Route("/api/hits.{fmt:str}", export),
        Route("/api/hits/{hit_id:str}", one_hit),
        Route("/api/hits/{hit_id:str}/{kind:str}.jpg", picture),
        Route("/api/hits/{hit_id:str}/ack", acknowledge, methods=["POST"]),
        Route("/api/cameras", cameras),
        Route("/api/region", region),
        Route("/api/watchlists", lists),
        Route("/api/watchlists/{name:str}/entries", entries),
        Route("/api/watchlists/{name:str}/entries", add_entry, methods=["POST"]),
        Route("/api/watchlists/{name:str}/import", import_list, methods=["POST"]),
        Route("/api/entries/{entry_id:int}/expire", expire_entry, methods=["POST"]),
        Route("/api/audit", audit),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.console = console
    return Guard(app, console)
