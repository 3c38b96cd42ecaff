"""The console's web application (Starlette): pages, the JSON API, live hits as server-sent events.

Nothing but the sign-in page and its script and style is served without a session;
every other path answers 401 (the API) or sends the browser to sign in (pages).
Requests that change something must be JSON (a cross-site form cannot send that)
and come from the page's own origin; the session cookie is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
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
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.collector import csvsafe
from edge.collector.agencies import DEFAULT_AGENCY
from edge.collector.console.accounts import ConsoleDB, User
from edge.collector.console.config import ConsoleConfig
from edge.collector.console.data import HIT_FIELDS, ConsoleData, QueryError, Search
from edge.collector.console.i18n import LANGUAGES, check_language
from edge.collector.console.limits import BodyLimits
from edge.collector.console.live import LiveHub
from edge.collector.console.requests import client_address as _address
from edge.collector.console.requests import in_thread as _run
from edge.collector.console.requests import json_body as _json_body
from edge.collector.console.search_api import routes as search_routes
from edge.collector.console.streams import ClosingStream
from edge.collector.console.throttle import AuditRow, HashGate, RefusalLog, SignInThrottle
from edge.collector.console.upload import FileRefused, Upload, UploadError, read_upload, text_field
from edge.collector.hits import HitScope
from edge.collector.search import Searches
from edge.collector.watchlist.files import WatchlistFileError
from edge.collector.watchlist.master import ListOwnerError, WatchlistStore
from edge.core.watchlist.entry import FieldError, parse_entry

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# Leaflet and the map's layers, built from npm by `make console-map` (console-assets/).
VENDOR = STATIC / "vendor"
MAP_LAYERS = ("countries", "borders", "towns")
NOT_BUILT = ("the console's map was not built: run `make console-map` on the collector "
             "(it needs node and npm)")  # fmt: skip
COOKIE = "anpr_console"
# Served without a session: the sign-in page and what it needs (its words among them).
PUBLIC = frozenset({"/login", "/api/login", "/static/login.js", "/static/console.css",
                    "/static/i18n.js", *(f"/static/i18n/{lang}.json" for lang in LANGUAGES)})
KEEPALIVE_S = 15.0
RECHECK_S = 1.0  # an open event stream looks at its session this often (revocation)
MAX_ID = 2**63 - 1  # ids SQLite can hold


def _no_grant(*_: str) -> bool:
    return False


def _no_agencies() -> dict[str, dict[str, str]]:
    return {}


@dataclass
class Console:
    """What the web application works with.

    What a user sees is their agency's (`User.agency`): hits its cameras read, hits on its
    lists, and the cameras (and their hits) an agreement grants it (`sees_camera(viewer,
    owner, node, camera)`); lists it owns, and the partners' lists an agreement shares
    with it (`sees_list(viewer, owner, list)`).  A hidden hit is "no such hit" (404).
    """

    config: ConsoleConfig
    db: ConsoleDB
    data: ConsoleData
    hub: LiveHub
    watchlists_db: Path
    region: Path | None = None  # the config's outline instead of the built countries
    throttle: SignInThrottle = field(default_factory=SignInThrottle)
    refusals: RefusalLog = field(default_factory=RefusalLog)
    hashing: HashGate = field(init=False)
    streams: dict[str, int] = field(default_factory=dict)  # open event streams per session
    # The collector's first agency: whose rows from before agencies (agency "") are.
    default_agency: str = DEFAULT_AGENCY
    agency_of_node: Callable[[str], str | None] = field(default=lambda node: DEFAULT_AGENCY)
    # What agreements grant (the lead wires `Agreements`): none by default.
    sees_camera: Callable[[str, str, str, str], bool] = field(default=_no_grant)
    sees_list: Callable[[str, str, str], bool] = field(default=_no_grant)
    # The agencies' names and countries as the agreements' agencies.yaml says: id ->
    # {"name", "country"} (the page shows the names); none by default.
    agencies: Callable[[], dict[str, dict[str, str]]] = field(default=_no_agencies)
    # The search of the nodes' reads (edge.collector.search); None: off (its routes 503).
    searches: Searches | None = None

    def __post_init__(self) -> None:
        self.hashing = HashGate(self.config.login_concurrency, self.config.login_queue)
        self._streams_lock = threading.Lock()

    @property
    def idle_s(self) -> float:
        return self.config.session_idle_minutes * 60

    @property
    def max_s(self) -> float:
        return self.config.session_max_hours * 3600

    def session_user(self, token: str | None) -> User | None:
        return self.db.session_user(token, self.idle_s, self.max_s) if token else None

    def scope(self, user: User) -> HitScope:
        """The hits `user` may see (a HitScope), with the agreements as they are now."""
        viewer = user.agency
        try:
            cameras = self.data.camera_owners()
        except (FileNotFoundError, sqlite3.OperationalError):
            cameras = []  # no hits database (yet)
        granted = tuple(
            (stored, node, camera) for stored, node, camera in cameras
            if (stored or self.default_agency) != viewer
            and self.sees_camera(viewer, stored or self.default_agency, node, camera)
        )  # fmt: skip
        return HitScope(viewer, viewer == self.default_agency, granted)

    def camera_agency(self, stored: str | None, node: str) -> str:
        """A camera's agency: as stored ("": the default's), or for a camera only the
        config names, its node's."""
        if stored is None:
            return self.agency_of_node(node) or ""
        return stored or self.default_agency

    def sees_camera_of(self, user: User, stored: str | None, node: str, camera: str) -> bool:
        owner = self.camera_agency(stored, node)
        return owner == user.agency or self.sees_camera(user.agency, owner, node, camera)

    def sees_list_of(self, user: User, name: str, owner: str) -> bool:
        """Whether `user` may see list `name` of `owner` (and its entries)."""
        return owner == user.agency or self.sees_list(user.agency, owner, name)

    def write_audit(self, rows: list[AuditRow]) -> None:
        for user, action, detail, address in rows:
            self.db.audit(user, action, detail, address)

    def flush_refusals(self, everything: bool = True) -> None:
        """Append the counts of refused sign-ins (of ended windows, or all) to the audit."""
        self.write_audit(self.refusals.drain() if everything else self.refusals.due())

    def open_stream(self, token: str) -> bool:
        """Count a new event stream of session `token`; False when it has its share open."""
        with self._streams_lock:
            n = self.streams.get(token, 0)
            if n >= self.config.max_streams_per_session:
                return False
            self.streams[token] = n + 1
            return True

    def close_stream(self, token: str) -> None:
        with self._streams_lock:
            n = self.streams.pop(token, 0) - 1
            if n > 0:
                self.streams[token] = n


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


def _text(body: dict[str, Any], key: str, limit: int = 1000) -> str:
    try:
        return text_field(body, key, limit)
    except UploadError as e:
        raise HTTPException(400, str(e)) from None


async def _audit(request: Request, user: User, action: str, detail: str) -> None:
    """An audit row of what `user` did, naming their agency."""
    console: Console = request.app.state.console
    address = _address(request)
    await _run(lambda: console.db.audit(user.name, action, detail, address, agency=user.agency))


async def _scope(request: Request) -> HitScope:
    console: Console = request.app.state.console
    scope: HitScope = await _run(console.scope, _user(request))
    return scope


async def _append(console: Console, rows: list[AuditRow]) -> None:
    if rows:
        await _run(console.write_audit, rows)


# ---------------------------------------------------------------- pages and sign-in


async def login_page(request: Request) -> Response:
    if request.state.user is not None:
        return RedirectResponse("/", 303)
    return FileResponse(STATIC / "login.html", headers={"cache-control": "no-store"})


async def index_page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})


async def login(request: Request) -> Response:
    """Sign in.  The attempt is counted before the password is checked (so guesses sent at
    once get no more checks than guesses sent in turn), and checked only when a place to
    hash is free; refusals are summed in the audit trail, not written one by one."""
    console: Console = request.app.state.console
    body = await _json_body(request)
    name, password = _text(body, "name", 64).strip(), _text(body, "password", 1024)
    address = _address(request) or "?"
    await _append(console, console.refusals.due())
    verdict = console.throttle.begin(name, address)
    if verdict.attempt is None:
        await _append(console, console.refusals.note(name or "?", address, verdict.reason))
        wait = verdict.wait_s
        return JSONResponse({"error": f"{verdict.reason} to sign in; try again in "
                             f"{max(1, round(wait))} s"}, 429,
                            headers={"retry-after": str(int(wait) + 1)})  # fmt: skip
    attempt = verdict.attempt
    if not console.hashing.try_enter():
        console.throttle.cancel(attempt)
        await _append(console, console.refusals.note(name or "?", address, "busy"))
        return JSONResponse({"error": "too many sign-ins at once; try again in a moment"}, 503,
                            headers={"retry-after": "1"})  # fmt: skip
    started = False

    def check() -> User | None:
        nonlocal started
        started = True  # from here the hashing thread frees its place itself
        return console.hashing.run(console.db.authenticate, name, password)

    try:
        user = await _run(check)
    except BaseException:
        if not started:
            console.hashing.leave()
        console.throttle.cancel(attempt)
        raise
    if user is None:
        console.throttle.failed(attempt)
        named = await _run(console.db.user, name) if name else None
        await _run(lambda: console.db.audit(name or "?", "sign-in failed", "", address,
                                            agency=named.agency if named else ""))
        return JSONResponse({"error": "wrong name or password"}, 401)
    console.throttle.succeeded(attempt)
    token = await _run(console.db.new_session, user, address)
    await _run(lambda: console.db.audit(user.name, "sign-in", "", address, agency=user.agency))
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
    await _audit(request, user, "sign-out", "")
    response = JSONResponse({"ok": True})
    response.delete_cookie(COOKIE, path="/")
    return response


async def me(request: Request) -> Response:
    console: Console = request.app.state.console
    cfg = console.config
    return JSONResponse({
        "user": _user(request).to_json(),
        "map": {"tile_url": cfg.tile_url, "attribution": cfg.tile_attribution,
                "built": (VENDOR / "built.json").is_file()},
        "languages": list(LANGUAGES),
        "live_hours": cfg.live_hours,
        "session_idle_minutes": cfg.session_idle_minutes,
        "max_import_bytes": cfg.max_import_bytes,
        "agencies": console.agencies(),
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
    scope = await _scope(request)

    def load() -> dict[str, Any]:
        last = console.data.last_rowid()
        hits = console.data.recent(console.config.live_hours, scope=scope)
        return {"hits": _with_acks(console, hits), "last_rowid": last}

    return JSONResponse(await _run(load))


def _int_param(request: Request, key: str, default: int, low: int = 0, high: int = MAX_ID) -> int:
    """A whole-number query parameter in [low, high], or a 400 that says what is wrong."""
    value = request.query_params.get(key) or ""
    if not value:
        return default
    text = value.strip()
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise HTTPException(400, f"{key} must be a whole number from {low} to {high}")
    n = int(text)
    if not low <= n <= high:
        raise HTTPException(400, f"{key} must be a whole number from {low} to {high}")
    return n


def _search(request: Request, limit: int) -> Search:
    q = request.query_params
    want = _int_param(request, "limit", limit, low=1, high=10**9)  # more: as many as may be
    return Search(plate=q.get("plate", ""), since=q.get("since", ""), until=q.get("until", ""),
                  camera=q.get("camera", ""), watchlist=q.get("watchlist", ""),
                  limit=max(1, min(want, limit)))  # fmt: skip


async def search(request: Request) -> Response:
    console: Console = request.app.state.console
    s = _search(request, 1000)
    scope = await _scope(request)
    try:
        hits = await _run(console.data.search, s, scope)
    except QueryError as e:
        raise HTTPException(400, str(e)) from None
    return JSONResponse({"hits": await _run(_with_acks, console, hits), "limit": s.limit})


async def export(request: Request) -> Response:
    console: Console = request.app.state.console
    fmt = request.path_params["fmt"]
    if fmt not in ("csv", "json"):
        raise HTTPException(404, "export as .csv or .json")
    sep = request.query_params.get("sep") or ","
    if sep not in csvsafe.SEPARATORS:
        raise HTTPException(400, "sep must be ',' or ';'")
    s = _search(request, console.config.max_export_rows)
    user = _user(request)
    scope = await _scope(request)
    try:
        hits = await _run(console.data.search, s, scope)
    except QueryError as e:
        raise HTTPException(400, str(e)) from None
    hits = await _run(_with_acks, console, hits)
    asked = {k: v for k, v in request.query_params.items() if v}
    await _audit(request, user, "export", f"{fmt}, {len(hits)} hits, {json.dumps(asked)}")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    headers = {"content-disposition": f'attachment; filename="hits-{stamp}.{fmt}"'}
    if fmt == "json":
        body = json.dumps(hits, indent=1, ensure_ascii=False)
        return Response(body, media_type="application/json", headers=headers)
    return Response(to_csv(hits, sep), media_type="text/csv; charset=utf-8", headers=headers)


CSV_FIELDS = (*HIT_FIELDS, "acknowledged_by", "acknowledged_at", "ack_note")


def to_csv(hits: list[dict[str, Any]], sep: str = ",") -> str:
    """Hits as CSV (`sep` ',' or ';'), the latest acknowledgement of each in the last columns.

    Every cell is quoted and text a spreadsheet would take for a formula is defused
    (edge.collector.csvsafe): a reason typed at the edge is not to run on a desk.
    """
    out = io.StringIO()
    writer = csvsafe.writer(out, sep)
    writer.writerow(CSV_FIELDS)
    for h in hits:
        last = h["acks"][-1] if h.get("acks") else {}
        row = [h.get(k) for k in HIT_FIELDS]
        row += [last.get("display_name", ""), last.get("at", ""), last.get("note", "")]
        writer.writerow(row)
    return out.getvalue()


async def one_hit(request: Request) -> Response:
    console: Console = request.app.state.console
    hit = await _run(console.data.hit, request.path_params["hit_id"], await _scope(request))
    if hit is None:
        raise HTTPException(404, "no such hit")
    return JSONResponse((await _run(_with_acks, console, [hit]))[0])


async def picture(request: Request) -> Response:
    console: Console = request.app.state.console
    kind = request.path_params["kind"]
    if kind not in ("crop", "scene"):
        raise HTTPException(404, "no such picture")
    hit_id = request.path_params["hit_id"]
    if await _run(console.data.hit, hit_id, await _scope(request)) is None:
        raise HTTPException(404, "no such picture")  # as for a hit that has none
    data = await _run(console.data.image, hit_id, kind)
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
    hit = await _run(console.data.hit, hit_id, await _scope(request))
    if hit is None:
        raise HTTPException(404, "no such hit")
    ack = await _run(console.db.acknowledge, hit_id, user, note, _address(request))
    console.hub.publish("ack", ack.to_json())
    return JSONResponse(ack.to_json())


async def events(request: Request) -> Response:
    """Server-sent events: `hit` for each new hit, `ack` for each acknowledgement.

    The stream looks at its session every RECHECK_S and ends with `signed-out` once it is
    over (signed out, user disabled, password changed, expired), wherever that was done.
    A session may hold max_streams_per_session streams at once."""
    console: Console = request.app.state.console
    token = request.state.token
    scope = await _scope(request)
    if not console.open_stream(token):
        raise HTTPException(429, f"{console.config.max_streams_per_session} live streams are "
                            "open for this session already; close one")  # fmt: skip
    try:
        sub = console.hub.subscribe()
    except BaseException:
        console.close_stream(token)
        raise
    loop = asyncio.get_running_loop()

    async def stream() -> AsyncIterator[str]:
        nonlocal scope
        yield "retry: 2000\n\n"
        checked = quiet = loop.time()
        while True:
            now = loop.time()
            if now - checked >= RECHECK_S:
                user = await _run(console.session_user, token)
                if user is None:
                    yield "event: signed-out\ndata: {}\n\n"
                    return
                scope = await _run(console.scope, user)  # agreements change, and cameras
                checked = now = loop.time()
            if now - quiet >= KEEPALIVE_S:
                yield ": still here\n\n"
                quiet = now
            try:
                event = await asyncio.wait_for(sub.get(), max(0.01, checked + RECHECK_S - now))
            except TimeoutError:
                continue
            if event is None:  # the console is stopping, or this reader fell behind
                return
            kind, data = event
            if kind == "hit":
                if not scope.allows(data["camera_agency"], data["list_agency"], data["node"],
                                    data["camera"]):  # fmt: skip
                    continue
                data = (await _run(_with_acks, console, [dict(data)]))[0]
            elif kind == "ack" and "hit_id" in data and await _run(
                    console.data.hit, data["hit_id"], scope) is None:  # fmt: skip
                continue  # of a hit this user does not see
            yield f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
            quiet = loop.time()

    def done() -> None:
        console.hub.unsubscribe(sub)
        console.close_stream(token)

    return ClosingStream(stream(), done, media_type="text/event-stream",
                   headers={"cache-control": "no-store", "x-accel-buffering": "no"})



# ---------------------------------------------------------------- cameras, map


async def cameras(request: Request) -> Response:
    console: Console = request.app.state.console
    user = _user(request)

    def load() -> list[dict[str, Any]]:
        cams = console.data.cameras(console.config.late_after_s)
        shown = []
        for c in cams:
            if console.sees_camera_of(user, c["agency"], c["node"], c["camera"]):
                shown.append({**c, "agency": console.camera_agency(c["agency"], c["node"])})
        for c in console.data.partner_cameras():  # granted to an agency, as it is now
            receiver = c.pop("receiver")
            if receiver == user.agency and console.sees_camera(
                    user.agency, c["agency"], c["node"], c["camera"]):
                shown.append(c)
        return shown

    return JSONResponse({"cameras": await _run(load)})


async def region(request: Request) -> Response:
    """The countries' outlines: the config's `region`, or Natural Earth's as built."""
    console: Console = request.app.state.console
    return _map_file(console.region or VENDOR / "map" / "countries.geojson")


async def map_layer(request: Request) -> Response:
    """One of the map's layers (MAP_LAYERS) as built; 503 saying how when it was not."""
    console: Console = request.app.state.console
    layer = request.path_params["layer"]
    if layer not in MAP_LAYERS:
        raise HTTPException(404, f"the map's layers are {', '.join(MAP_LAYERS)}")
    if layer == "countries" and console.region is not None:
        return _map_file(console.region)
    return _map_file(VENDOR / "map" / f"{layer}.geojson")


def _map_file(path: Path) -> Response:
    if not path.is_file():
        raise HTTPException(503, NOT_BUILT)
    return FileResponse(path, media_type="application/geo+json",
                        headers={"cache-control": "private, max-age=3600"})  # fmt: skip


async def set_language(request: Request) -> Response:
    """The language the user reads the console in, remembered ("": the browser's)."""
    console: Console = request.app.state.console
    user = _user(request)
    language = _text(await _json_body(request), "language", 8)
    try:
        check_language(language)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
    await _run(console.db.set_language, user.name, language)
    return JSONResponse({"language": language})


# ---------------------------------------------------------------- watchlists


async def lists(request: Request) -> Response:
    console: Console = request.app.state.console
    user = _user(request)
    shown = [i for i in await _run(console.data.lists)
             if console.sees_list_of(user, i["name"], i["agency"])]  # fmt: skip
    return JSONResponse({"lists": shown})


def _list_owner(console: Console, name: str) -> str | None:
    """The agency owning list `name`; None when there is no such (active) list."""
    for i in console.data.lists():
        if i["name"] == name:
            return str(i["agency"])
    return None


async def entries(request: Request) -> Response:
    console: Console = request.app.state.console
    q = request.query_params
    after = _int_param(request, "after", 0)
    name = request.path_params["name"]
    owner = await _run(_list_owner, console, name)
    if owner is not None and not console.sees_list_of(_user(request), name, owner):
        raise HTTPException(404, "no such list")  # as for one that is not there
    try:
        rows = await _run(console.data.entries, name, q.get("plate", ""), after, 200)
    except (ValueError, QueryError) as e:
        raise HTTPException(400, str(e)) from None
    return JSONResponse({"entries": rows})


def _with_store(console: Console, fn: Callable[[WatchlistStore], Any]) -> Any:
    store = WatchlistStore(console.watchlists_db, default_agency=console.default_agency)
    try:
        return fn(store)
    except ListOwnerError as e:  # another agency's list, or a name that says so
        raise HTTPException(403, f"{e}: an admin changes only the lists of their agency") from None
    finally:
        store.close()


async def _own_list(request: Request, user: User, name: str) -> None:
    """403 unless list `name` is new or `user`'s agency's (before any upload is read)."""
    console: Console = request.app.state.console
    owner = await _run(_list_owner, console, name)
    if owner is not None and owner != user.agency:
        raise HTTPException(403, f"list {name} is {owner}'s: an admin changes only the lists "
                            f"of their agency ({user.agency})")  # fmt: skip


async def import_list(request: Request) -> Response:
    console: Console = request.app.state.console
    user = _admin(request)
    name = request.path_params["name"]
    await _own_list(request, user, name)
    raw = await request.body()
    try:
        # In a worker thread: a big file takes seconds to read; the console goes on answering.
        upload: Upload = await _run(read_upload, raw, name, user.name)
    except WatchlistFileError as e:
        problems = [{"line": line, "field": fld, "message": msg}
                    for line, fld, msg in e.problems[:50]]  # fmt: skip
        return JSONResponse({"error": f"{e.path}: nothing imported", "problems": problems,
                             "more": max(0, len(e.problems) - 50)}, 400)  # fmt: skip
    except FileRefused as e:
        return JSONResponse({"error": f"{e.filename}: nothing imported: {e.message}",
                             "problems": [{"line": e.line, "field": None, "message": e.message}],
                             "more": 0}, 400)  # fmt: skip
    except (FieldError, ValueError) as e:  # UploadError among them
        raise HTTPException(400, str(e)) from None
    filename = upload.filename
    try:
        result = await _run(_with_store, console, lambda s: s.import_entries(
            name, upload.entries, replace_all=upload.replace, agency=user.agency))  # fmt: skip
    except ValueError as e:  # a list name the store does not take
        raise HTTPException(400, str(e)) from None
    detail = (f"list {name} from {filename}: {result.added} added, {result.changed} changed, "
              f"{result.unchanged} unchanged, {result.removed} removed")  # fmt: skip
    await _audit(request, user, "watchlist import", detail)
    return JSONResponse({"list": name, "added": result.added, "changed": result.changed,
                         "unchanged": result.unchanged, "removed": result.removed})  # fmt: skip


async def add_entry(request: Request) -> Response:
    console: Console = request.app.state.console
    user = _admin(request)
    name = request.path_params["name"]
    await _own_list(request, user, name)
    body = await _json_body(request)
    raw = {k: _text(body, k, 500) for k in (
        "plate", "country", "category", "priority", "reason", "valid_from", "valid_until",
        "agency")}  # fmt: skip
    raw["added_by"] = user.name
    try:
        entry = parse_entry({k: v for k, v in raw.items() if v != ""}, list_name=name)
    except FieldError as e:
        raise HTTPException(400, str(e)) from None
    added = await _run(_with_store, console,
                       lambda s: s.add(entry, create=True, agency=user.agency))  # fmt: skip
    await _audit(request, user, "watchlist add",
                 f"entry {added.id}: {added.pattern} on {added.list} ({added.agency}, "
                 f"priority {added.priority}): {added.reason}")  # fmt: skip
    return JSONResponse({"id": added.id, "plate": added.pattern, "list": added.list})


async def expire_entry(request: Request) -> Response:
    console: Console = request.app.state.console
    user = _admin(request)
    entry_id = request.path_params["entry_id"]
    if entry_id > MAX_ID:
        raise HTTPException(404, "no such entry")

    def expire(store: WatchlistStore) -> Any:
        found = store.get(entry_id)
        if found is None:
            raise KeyError(entry_id)
        owner = store.owner(found.list)
        if owner != user.agency:
            raise HTTPException(403, f"entry {entry_id} is on list {found.list}, {owner}'s: an "
                                "admin changes only the lists of their agency")  # fmt: skip
        return store.expire([entry_id])

    try:
        changed = await _run(_with_store, console, expire)
    except KeyError:
        raise HTTPException(404, "no such entry") from None
    e = changed[0]
    await _audit(request, user, "watchlist expire", f"entry {e.id}: {e.pattern} on {e.list}")
    return JSONResponse({"id": e.id, "valid_until": e.valid_until})


# ---------------------------------------------------------------- audit


async def audit(request: Request) -> Response:
    console: Console = request.app.state.console
    user = _admin(request)
    before = _int_param(request, "before", MAX_ID)
    await _run(console.flush_refusals, False)  # counts of refusals whose window has ended
    # An admin sees what the actors of their agency did (the default agency's admins also
    # what no agency did: the CLI's, refused sign-ins of unknown names).
    rows = await _run(lambda: console.db.audit_trail(before, agency=user.agency))
    return JSONResponse({"audit": rows})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    # A body refused part way (too big, too slow) is not read on: the connection ends.
    headers = {"connection": "close"} if exc.status_code in (408, 413) else None
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=headers)
    return PlainTextResponse(str(exc.detail), exc.status_code, headers=headers)


def build_app(console: Console) -> ASGIApp:
    routes = [
        Route("/", index_page),
        Route("/login", login_page),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/logout", logout, methods=["POST"]),
        Route("/api/me", me),
        Route("/api/me/language", set_language, methods=["POST"]),
        Route("/api/live", live),
        Route("/api/events", events),
        Route("/api/hits", search),
        Route("/api/hits.{fmt:str}", export),
        Route("/api/hits/{hit_id:str}", one_hit),
        Route("/api/hits/{hit_id:str}/{kind:str}.jpg", picture),
        Route("/api/hits/{hit_id:str}/ack", acknowledge, methods=["POST"]),
        Route("/api/cameras", cameras),
        Route("/api/region", region),
        Route("/api/map/{layer:str}.geojson", map_layer),
        Route("/api/watchlists", lists),
        Route("/api/watchlists/{name:str}/entries", entries),
        Route("/api/watchlists/{name:str}/entries", add_entry, methods=["POST"]),
        Route("/api/watchlists/{name:str}/import", import_list, methods=["POST"]),
        Route("/api/entries/{entry_id:int}/expire", expire_entry, methods=["POST"]),
        Route("/api/audit", audit),
        *search_routes(),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.console = console
    cfg = console.config
    limited = BodyLimits(app, cfg.max_body_bytes, cfg.body_timeout_s,
                         larger=[(r"/api/watchlists/[^/]+/import", cfg.max_import_bytes)])
    return Guard(limited, console)
