"""`anpr-collector search PLATE --since 2d --case REF --basis TEXT`: the search, as JSON lines.

It asks the running collector through its console's API (`POST /api/search`), signed in
as an investigator: the same role, scope and audit trail as in the browser, and nothing
to secure besides (no second way in).  Each line printed is one event of the search
(`search`, `node`, `reads`, `done`), as the console streams it.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from edge.collector.config import add_config_options, load_config
from edge.collector.console.cli import read_password
from edge.collector.console.config import ConsoleConfig
from edge.core.search import MODES


class SearchFailed(Exception):
    """The console refused, or could not be reached (the message says which)."""


def _console_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    config = load_config(args.config)
    cfg = config.console or ConsoleConfig()
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(cfg.host, cfg.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{cfg.port}"


def _area(text: str) -> list[float]:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 4:
        raise argparse.ArgumentTypeError("--area is MIN_LAT,MIN_LON,MAX_LAT,MAX_LON")
    return parts


class _Console:
    def __init__(self, url: str):
        self.url = url
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def post(self, path: str, body: dict[str, Any], timeout: float = 60) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     method="POST",
                                     headers={"content-type": "application/json"})  # fmt: skip
        try:
            return self._opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            try:
                why = json.loads(e.read()).get("error") or e.reason
            except (ValueError, AttributeError):
                why = e.reason
            raise SearchFailed(f"{path}: {e.code} {why}") from None
        except (urllib.error.URLError, OSError) as e:
            raise SearchFailed(f"cannot reach the console at {self.url}: "
                               f"{getattr(e, 'reason', e)}") from None  # fmt: skip


def _cmd_search(args: argparse.Namespace) -> int:
    url = _console_url(args)
    password = read_password(args.password_stdin, args.user)
    console = _Console(url)
    body: dict[str, Any] = {
        "plate": args.plate, "since": args.since, "until": args.until or "",
        "case_ref": args.case, "legal_basis": args.basis, "mode": args.mode or "",
        "max_distance": args.distance, "cameras": args.camera or [], "nodes": args.node or [],
        "area": args.area, "retry_offline": args.retry_offline, "max_rows": args.max_rows,
    }  # fmt: skip
    try:
        console.post("/api/login", {"name": args.user, "password": password}).close()
        try:
            with console.post("/api/search", body, timeout=args.timeout) as resp:
                for line in resp:
                    sys.stdout.write(line.decode("utf-8"))
                    sys.stdout.flush()
        finally:
            console.post("/api/logout", {}).close()
    except SearchFailed as e:
        print(f"anpr-collector search: {e}", file=sys.stderr)
        return 2
    return 0


def add_search_command(sub: Any) -> None:
    sp = sub.add_parser("search", help="search the nodes' reads for a plate (an investigator's, "
                        "through the running collector's console); JSON lines")  # fmt: skip
    add_config_options(sp, None)
    sp.add_argument("plate", help="a plate, or a pattern with ? (one character) and * (any)")
    sp.add_argument("--since", required=True, help="2d, 6h, 30m, or an ISO 8601 time")
    sp.add_argument("--until", help="as --since (default: now)")
    sp.add_argument("--case", required=True, help="the case reference (mandatory)")
    sp.add_argument("--basis", required=True, help="the legal basis (mandatory)")
    sp.add_argument("--mode", choices=MODES, help="default: wildcard if the plate has ? or *")
    sp.add_argument("--distance", type=float, default=0.0,
                    help="fuzzy: the watchlist distance at most")
    sp.add_argument("--camera", action="append", help="only this camera (repeatable)")
    sp.add_argument("--node", action="append", help="only this node (repeatable)")
    sp.add_argument("--area", type=_area, help="MIN_LAT,MIN_LON,MAX_LAT,MAX_LON")
    sp.add_argument("--retry-offline", action="store_true",
                    help="ask offline and slow nodes again when they return")
    sp.add_argument("--max-rows", type=int, default=1000, help="reads per node, at most")
    sp.add_argument("--user", required=True, help="the investigator's console user")
    sp.add_argument("--password-stdin", action="store_true",
                    help="read the password from standard input (else: asked)")
    sp.add_argument("--url", help="the console's URL (default: from the config's console:)")
    sp.add_argument("--timeout", type=float, default=120.0, help="seconds to wait, at most")
    sp.set_defaults(func=_cmd_search)
