"""The console's search routes: investigators ask the nodes, follow the answers, export, open reads.

Only an `investigator` searches (others: 403); a search is its asker's alone (anyone
else: 404, as for none).  `POST /api/search` answers with the search's events as NDJSON,
one object a line, until no node is pending; `GET /api/search/{id}/events` gives the same
as server-sent events (for the page's EventSource), from `?after=N`.  Opening a read's
crop and exporting are audited, with the case.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.collector import csvsafe
from edge.collector.console.accounts import User
from edge.collector.console.requests import client_address as _address
from edge.collector.console.requests import in_thread as _run
from edge.collector.console.requests import json_body as _json_body
from edge.collector.console.streams import ClosingStream
from edge.collector.search import Search, Searches, SearchRefused, event_line, request_from_json
from edge.core.times import utc_now

RECHECK_S = 1.0  # a stream looks at its session this often
KEEPALIVE_S = 15.0
_SEARCH_ID = re.compile(r"^[0-9a-f]{32}$")
_FILE_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
CSV_FIELDS = ("search_id", "case_ref", "legal_basis", "requested_by", "agency", "n", "node",
              "node_agency", "seen_at", "text", "formatted", "country", "confidence", "camera",
              "direction", "vehicle_type", "vehicle_colour", "lat", "lon",
              "source", "watchlists")  # fmt: skip


def _investigator(request: Request) -> User:
    user = request.state.user
    assert user is not None  # the guard let the request through
    if not user.is_investigator:
        raise HTTPException(403, "only an investigator may search the nodes' reads")
    return user


def _searches(request: Request) -> Searches:
    searches: Searches | None = request.app.state.console.searches
    if searches is None:
        raise HTTPException(503, "search is off on this collector (no search signing key, or "
                            "search.enabled false)")  # fmt: skip
    return searches


def _own_search(request: Request) -> tuple[User, Searches, Search]:
    user = _investigator(request)
    searches = _searches(request)
    search_id = request.path_params["search_id"]
    search = searches.get(search_id) if _SEARCH_ID.match(search_id) else None
    if search is None or search.user != user.name or search.agency != user.agency:
        raise HTTPException(404, "no such search")
    return user, searches, search


def _audit(request: Request, user: User, action: str, detail: str) -> Any:
    db = request.app.state.console.db
    address = _address(request)
    return _run(lambda: db.audit(user.name, action, detail, address, agency=user.agency))


def shown(search_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """An event as the console sends it: each read with the URL of its crop."""
    if event.get("event") != "reads":
        return event
    return {**event, "reads": [_with_url(search_id, r) for r in event["reads"]]}


def _with_url(search_id: str, read: dict[str, Any]) -> dict[str, Any]:
    url = f"/api/search/{search_id}/reads/{read['n']}/crop.jpg" if read.get("crop") else None
    return {**read, "crop_url": url}


# ---------------------------------------------------------------- routes


async def begin(request: Request) -> Response:
    """Ask the nodes; the answer is the search's events, NDJSON, until it is settled."""
    user = _investigator(request)
    searches = _searches(request)
    body = await _json_body(request)
    address = _address(request)
    try:
        search_request = request_from_json(body, utc_now())
    except SearchRefused as e:
        await _audit(request, user, "search refused", f"{e}; case {body.get('case_ref')!r}"[:500])
        raise HTTPException(400, str(e)) from None
    try:
        search: Search = await _run(searches.begin, search_request, user.name, user.agency,
                                    address)  # fmt: skip
    except SearchRefused as e:
        raise HTTPException(400, str(e)) from None
    return _stream(request, search, 0, sse=False)


async def events(request: Request) -> Response:
    """The search's events as server-sent events, from the `after`th on (default 0)."""
    _, _, search = _own_search(request)
    raw = request.query_params.get("after") or "0"
    if not raw.isdigit() or len(raw) > 9:
        raise HTTPException(400, "after must be a whole number")
    return _stream(request, search, int(raw), sse=True)


def _stream(request: Request, search: Search, after: int, *, sse: bool) -> Response:
    console = request.app.state.console
    token = request.state.token
    if not console.open_stream(token):
        raise HTTPException(429, f"{console.config.max_streams_per_session} live streams are "
                            "open for this session already; close one")  # fmt: skip
    loop = asyncio.get_running_loop()

    async def lines() -> AsyncIterator[str]:
        n = after
        if sse:
            yield "retry: 2000\n\n"
        checked = quiet = loop.time()
        while True:
            batch, settled = await _run(search.events_after, n, RECHECK_S)
            for event in batch:
                data = shown(search.id, event)
                if sse:
                    yield (f"id: {n}\nevent: {event['event']}\n"
                           f"data: {json.dumps(data, ensure_ascii=False)}\n\n")  # fmt: skip
                else:
                    yield event_line(data)
                n += 1
                quiet = loop.time()
            if settled and (not batch or batch[-1]["event"] == "done"):
                return
            now = loop.time()
            if now - checked >= RECHECK_S:  # signed out, disabled: the stream ends
                if await _run(console.session_user, token) is None:
                    if sse:
                        yield "event: signed-out\ndata: {}\n\n"
                    return
                checked = now
            if sse and now - quiet >= KEEPALIVE_S:
                yield ": still here\n\n"
                quiet = now

    media = "text/event-stream" if sse else "application/x-ndjson"
    return ClosingStream(lines(), lambda: console.close_stream(token), media_type=media,
                   headers={"cache-control": "no-store", "x-accel-buffering": "no",
                            "x-search-id": search.id})  # fmt: skip



async def one(request: Request) -> Response:
    """What the search found so far: its query, each node's state, the reads."""
    _, _, search = _own_search(request)
    out = await _run(search.to_json)
    out["reads"] = [_with_url(search.id, r) for r in out["reads"]]
    return JSONResponse(out)


async def retry(request: Request) -> Response:
    """Ask again the search's offline and slow nodes (those connected now answer)."""
    user, searches, search = _own_search(request)
    asked = await _run(searches.retry, search.id, user.name, _address(request))
    return JSONResponse({"asked": asked})


async def crop(request: Request) -> Response:
    """A read's crop; every one opened is audited, with the case."""
    user, _, search = _own_search(request)
    n = request.path_params["n"]
    if not 0 <= n < len(search.reads) or not search.reads[n].read.crop_jpeg:
        raise HTTPException(404, "no such picture")
    found = search.reads[n]
    r = found.read
    await _audit(request, user, "search read opened",
                 f"search {search.id}: case {search.request.case_ref!r}; read {n}: {r.text} "
                 f"at {found.node}/{r.camera} {r.seen_at.isoformat()}"
                 f"{f' (the collector hit {found.hit_ids[0]})' if found.hit_ids else ''}"
                 )  # fmt: skip
    return Response(r.crop_jpeg, media_type="image/jpeg",
                    headers={"cache-control": "private, no-store"})  # fmt: skip


async def export(request: Request) -> Response:
    """The reads in time order, as CSV or JSON, the case reference in the file and its name."""
    user, _, search = _own_search(request)
    fmt = request.path_params["fmt"]
    if fmt not in ("csv", "json"):
        raise HTTPException(404, "export as .csv or .json")
    sep = request.query_params.get("sep") or ","
    if sep not in csvsafe.SEPARATORS:
        raise HTTPException(400, "sep must be ',' or ';'")
    whole = await _run(search.to_json)
    reads = sorted(whole["reads"], key=lambda r: (r["seen_at"], r["n"]))
    s = whole["search"]
    await _audit(request, user, "search export", f"search {search.id}: case {s['case_ref']!r}; "
                 f"{fmt}, {len(reads)} reads")  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    case = _FILE_SAFE.sub("_", s["case_ref"])[:60].strip("_") or "case"
    headers = {"content-disposition": f'attachment; filename="search-{case}-{stamp}.{fmt}"'}
    if fmt == "json":
        body = {"case_ref": s["case_ref"], "legal_basis": s["legal_basis"],
                "exported_by": user.name, "exported_at": utc_now().isoformat(),
                "search": s, "counts": whole["counts"], "settled": whole["settled"],
                "reads": [{k: v for k, v in r.items() if k != "crop"} for r in reads]}  # fmt: skip
        return Response(json.dumps(body, indent=1, ensure_ascii=False),
                        media_type="application/json", headers=headers)  # fmt: skip
    out = io.StringIO()
    writer = csvsafe.writer(out, sep)
    writer.writerow(CSV_FIELDS)
    for r in reads:
        head = [search.id, s["case_ref"], s["legal_basis"], s["requested_by"], s["agency"],
                r["n"], r["node"], r["agency"]]  # fmt: skip
        writer.writerow([*head, *(r.get(k, "") for k in CSV_FIELDS[8:-1]),
                         " ".join(r.get("watchlists", []))])  # fmt: skip
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


def routes() -> list[Route]:
    """The search's routes (the export's before the search's own: ids have no dot)."""
    return [
        Route("/api/search", begin, methods=["POST"]),
        Route("/api/search/{search_id:str}.{fmt:str}", export),
        Route("/api/search/{search_id:str}", one),
        Route("/api/search/{search_id:str}/events", events),
        Route("/api/search/{search_id:str}/retry", retry, methods=["POST"]),
        Route("/api/search/{search_id:str}/reads/{n:int}/crop.jpg", crop),
    ]
