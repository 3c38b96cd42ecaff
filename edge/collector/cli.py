"""`anpr-collector`: run the collector, follow and list hits, see nodes, make keys."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.collector.agreements import Agreements
from edge.collector.agreements_cli import add_agreement_commands
from edge.collector.config import CollectorConfig, ConfigError, add_config_options, load_config
from edge.collector.console.accounts import ConsoleDB
from edge.collector.console.cli import add_user_commands
from edge.collector.console.search_cli import add_search_command
from edge.collector.console.server import make_component as make_console
from edge.collector.exchange.cli import add_exchange_commands
from edge.collector.exchange.search_relay import attach_relay
from edge.collector.hits import HitQuery, HitReader, StoredHit
from edge.collector.nodes import judge_node
from edge.collector.search import Audit, Searches, make_searches
from edge.collector.service import CollectorService
from edge.collector.sharing import AgreementsService
from edge.collector.store import HitStore
from edge.collector.watchlist.cli import add_watchlist_commands
from edge.collector.watchlist.cli import make_component as make_watchlists
from edge.core.keys import generate_keypair, generate_signing_keypair
from edge.core.status import CameraState, CameraStatus
from edge.core.times import TimeOutOfRange, parse_iso, utc_now

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """'90s', '30m', '2h', '7d', '1w' ago, or an ISO 8601 date/time (UTC if no zone given)."""
    now = now or utc_now()
    m = _RELATIVE.match(text.strip())
    if m:
        return now - dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        return parse_iso(text.strip())
    except TimeOutOfRange as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO 8601 time"
        ) from None


def format_hit(h: StoredHit) -> str:
    """One line for an operator: priority, plate, list and reason, camera, time."""
    plate = h.plate_formatted or h.plate_text or "?"
    if h.country:
        plate = f"{plate} ({h.country})"
    listed = h.watchlist or "?"
    why = h.reason or f"entry {h.entry_id}"
    kind = h.match_kind or "exact"
    if kind != "exact":
        why = f"{why} [{kind}]"
    where = f"{h.node}/{h.camera}"
    if h.road:
        where += f" {h.road}"
    if h.direction:
        where += f" {h.direction}"
    return f"P{h.priority:<3} {plate:<16} {listed}: {why}  {where}  {h.seen_at}"


def _config(args: argparse.Namespace) -> CollectorConfig:
    return load_config(args.config)


def _db_path(args: argparse.Namespace) -> Path:
    if getattr(args, "db", None):
        return Path(args.db)
    return _config(args).db_path


def _cmd_run(args: argparse.Namespace) -> int:

    config = _config(args)
    agreements = AgreementsService(config.agreements_dir, audit=_system_audit(config))
    service = CollectorService(config, agreements=agreements)
    # Before the console, which serves it; only with a console (the one way to ask).
    audit = _console_audit(config)
    searches = make_searches(service, config, agreements.current, audit) if audit else None
    if searches is not None:  # partners' nodes, through their collectors
        attach_relay(searches, service, config, agreements.current, audit)
    service.components.extend(_components(config, agreements, searches))
    service.run_forever()
    return 0


def _console_audit(config: CollectorConfig) -> Audit | None:
    """The console's audit trail, opened when first written; None without a console."""
    if config.console is None or not config.console.enabled:
        return None
    path = config.console.database_path(config.data_dir)
    db: list[ConsoleDB] = []
    lock = threading.Lock()

    def audit(user: str, action: str, detail: str = "", address: str | None = None, *,
              agency: str = "") -> None:  # fmt: skip
        with lock:
            if not db:
                db.append(ConsoleDB(path, default_agency=config.default_agency))
        db[0].audit(user, action, detail, address, agency=agency)

    return audit


def _system_audit(config: CollectorConfig) -> Callable[[str, str], None] | None:
    """What the collector itself does (agreements taking effect) into the console's audit
    trail, as user `system`; None without a console (the log has it)."""
    if config.console is None:
        return None
    path = config.console.database_path(config.data_dir)
    db: list[ConsoleDB] = []

    def audit(action: str, detail: str) -> None:
        if not db:
            db.append(ConsoleDB(path, default_agency=config.default_agency))
        db[0].audit("system", action, detail)

    return audit


def _components(config: CollectorConfig, agreements: AgreementsService | None = None,
                searches: Searches | None = None) -> list[Any]:
    """Parts other modules add to the collector process (watchlist distribution, console)."""

    console = make_console(config, agreements.current if agreements else None, searches)
    watchlists = make_watchlists(config)
    return [c for c in (watchlists, console) if c is not None]


def _open_store(path: Path) -> HitStore:
    """The hit store at `path`, read-only (the collector writes it)."""
    return HitStore(path, readonly=True)


def _open_reader(path: Path, wait: bool = False, interval: float = 1.0) -> HitReader:
    """A reader of the hits at `path`; with `wait`, once the collector has set them up."""
    reader = HitReader(path)
    said = False
    while True:
        try:
            reader.check()
            return reader
        except FileNotFoundError:
            if not wait:
                reader.close()
                raise
            if not said:
                print(f"waiting for the collector's database {path} ...", file=sys.stderr,
                      flush=True)  # fmt: skip
                said = True
            time.sleep(interval)


def _cmd_tail(args: argparse.Namespace) -> int:
    path = _db_path(args)
    try:
        reader = _open_reader(path)
        last = max(reader.last_rowid() - args.last, 0)
    except FileNotFoundError:
        # Not there yet: every hit it will hold arrives after this tail started.
        reader = _open_reader(path, wait=True, interval=args.interval)
        last = 0
    try:
        while True:
            rows = reader.after(last)
            for h in rows:
                print(json.dumps(h.to_json()) if args.json else format_hit(h), flush=True)
                last = h.rowid
            if not rows:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0
    finally:
        reader.close()


def _cmd_hits(args: argparse.Namespace) -> int:
    reader = _open_reader(_db_path(args))
    query = HitQuery(since=args.since, until=args.until, plate=args.plate or None,
                     node=args.node or None)  # fmt: skip
    try:
        rows = reader.search(query, args.limit, newest_first=False)
    finally:
        reader.close()
    for h in rows:
        print(json.dumps(h.to_json(rowid=False)) if args.json else format_hit(h))
    if not args.json:
        print(f"{len(rows)} hits", file=sys.stderr)
    return 0


def _cmd_nodes(args: argparse.Namespace) -> int:
    store = _open_store(_db_path(args))
    try:
        nodes = store.nodes()
        disk = store.status("disk")  # the collector's own, from its maintenance
    finally:
        store.close()
    now = utc_now()
    judged = {}
    for n in nodes:
        judged[n["node"]] = health = judge_node(n, now, args.late)
        n["verdict"], n["problems"] = health.verdict, health.reasons
    if args.problems:
        nodes = [n for n in nodes if n["verdict"] != "ok"]
    alarm = bool(disk and disk.get("alarm"))
    if alarm:
        assert disk is not None
        print(f"collector: DISK ALARM: {disk.get('reason')} (at {disk.get('at')})",
              file=sys.stderr if args.json else sys.stdout)  # fmt: skip
    if args.json:
        print(json.dumps(nodes))
        return 1 if args.problems and (nodes or alarm) else 0
    for n in nodes:
        status = judged[n["node"]].status
        age = now - parse_iso(n["last_seen"]) if n["last_seen"] else None
        backlog = status.outbox.backlog if status and status.outbox else "?"
        used = f"{status.disk.used_fraction:.0%}" if status and status.disk else "?"
        states = status.cameras if status else {}
        cams = ", ".join(
            f"{c['camera']} {_camera_state(states.get(c['camera']))}{_ago(now, c['last_seen'])}"
            for c in n["cameras"]
        )  # fmt: skip
        seen = "never" if age is None else f"{age.total_seconds():.0f} s ago"
        print(f"{n['node']:<20} {n['verdict'].upper():<10} heard {seen:<12} backlog "
              f"{backlog:<6} disk {used:<5} {n['address'] or ''}  {cams}")
        for problem in n["problems"]:
            print(f"{'':<20} ! {problem}")
    return 1 if args.problems and (nodes or alarm) else 0


def _camera_state(state: CameraStatus | None) -> str:
    if state is None:
        return ""
    if state.state == CameraState.LIVE:
        return f"live {state.fps:.1f} fps, "
    return f"{state.state.value.upper()}, "


def _ago(now: dt.datetime, when: str | None) -> str:
    if not when:
        return "never"
    return f"{(now - parse_iso(when)).total_seconds():.0f} s ago"


def _cmd_keygen(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    # The collector's pair comes with its search signing pair (edge.core.search); a
    # collector made before the search gets the signing pair alone.
    signing = args.name == "collector" and (args.force or not (d / "collector.sign").exists())
    upgrade = signing and not args.force and (d / "collector.key_secret").exists()
    if not upgrade:
        public, _ = generate_keypair(d, args.name, overwrite=args.force)
        print(f"public key {public.decode()} in {d / (args.name + '.key')}")
        print(f"secret key in {d / (args.name + '.key_secret')} (mode 0600)")
    if signing:
        generate_signing_keypair(d, "collector", overwrite=args.force)
        print(f"search signing key in {d / 'collector.sign'} (mode 0600); copy "
              f"{d / 'collector.verify'} to each node's credentials directory")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anpr-collector", description=__doc__)
    p.add_argument("--log-level", default=os.environ.get("ANPR_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser, db: bool = True) -> None:
        add_config_options(sp, "hits" if db else None)

    sp = sub.add_parser("run", help="receive and store hits from the edges")
    with_config(sp, db=False)
    sp.set_defaults(func=_cmd_run)

    sp = sub.add_parser("tail", help="print each new hit as it arrives")
    with_config(sp)
    sp.add_argument("--last", type=int, default=0, help="first show the last N hits")
    sp.add_argument("--interval", type=float, default=0.5, help="seconds between looks")
    sp.add_argument("--json", action="store_true", help="one JSON object a line")
    sp.set_defaults(func=_cmd_tail)

    sp = sub.add_parser("hits", help="list hits seen since a time")
    with_config(sp)
    sp.add_argument("--since", type=parse_since, required=True, help="2h, 30m, 7d or ISO time")
    sp.add_argument("--until", type=parse_since, help="2h, 30m, 7d or ISO time")
    sp.add_argument("--plate", help="only this normalised plate")
    sp.add_argument("--node", help="only this node")
    sp.add_argument("--limit", type=int, default=1000)
    sp.add_argument("--json", action="store_true", help="one JSON object a line")
    sp.set_defaults(func=_cmd_hits)

    sp = sub.add_parser("nodes", help="each node: late or unhealthy, when it and its cameras "
                        "were last heard, backlog and disk")
    with_config(sp)
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--late", type=float, metavar="SECONDS",
                    help="late after this long unheard (default: three heartbeats, >= 30 s)")
    sp.add_argument("--problems", action="store_true",
                    help="only nodes late or unhealthy; exit status 1 if there are any")
    sp.set_defaults(func=_cmd_nodes)

    sp = sub.add_parser("keygen", help="make a CURVE key pair NAME.key / NAME.key_secret "
                        "(for 'collector' also the search signing pair collector.sign / "
                        "collector.verify)")
    sp.add_argument("--dir", required=True, help="credentials directory to write to")
    sp.add_argument("--force", action="store_true", help="replace an existing pair")
    sp.add_argument("name", help="'collector', or the node id of an edge")
    sp.set_defaults(func=_cmd_keygen)

    add_watchlist_commands(sub)
    add_agreement_commands(sub)
    add_exchange_commands(sub, Agreements.load)

    add_user_commands(sub)
    add_search_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, OSError) as e:
        print(f"anpr-collector: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
