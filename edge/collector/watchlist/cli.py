"""Watchlists in the collector: the distribution component and `anpr-collector watchlist ...`.

The master store (`edge.collector.watchlist.master.WatchlistStore`) and the clone server
(`edge.collector.watchlist.server.WatchlistServer`) live with the rest of the watchlist code;
this module plugs them into the collector: `make_component(config)` for
`anpr-collector run`, and `add_watchlist_commands(subparsers)` for the CLI.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge.collector.agencies import is_agency_id
from edge.collector.config import CollectorConfig, add_config_options, load_config
from edge.collector.csvsafe import SEPARATORS
from edge.collector.watchlist.config import WatchlistsConfig
from edge.collector.watchlist.files import FORMATS, guess_format, read_entries, write_entries
from edge.collector.watchlist.master import ImportResult, ListInfo, WatchlistStore
from edge.collector.watchlist.server import WatchlistServer
from edge.core.keys import credentials_dir, load_keypair
from edge.core.watchlist.entry import (
    FieldError,
    ListPolicy,
    check_list_name,
    format_time,
    parse_entry,
    parse_pattern,
)
from edge.core.watchlist.entry import parse_time as _parse_time

__all__ = [
    "ImportResult",
    "ListInfo",
    "WatchlistServer",
    "WatchlistStore",
    "WatchlistsConfig",
    "add_watchlist_commands",
    "make_component",
]

log = logging.getLogger(__name__)


def make_component(config: CollectorConfig) -> WatchlistServer | None:
    """The watchlist server for `anpr-collector run`; None when off."""

    if config.watchlists is None:
        log.warning("watchlists: no 'watchlists:' section in the config; distribution is off")
        return None

    def keys() -> tuple[bytes, bytes]:
        return load_keypair(credentials_dir(config.credentials_dir), config.key_name)

    return WatchlistServer.from_config(config.watchlists, config.data_dir, keys=keys)


# --------------------------------------------------------------------------- the CLI



class WatchlistCommandError(ValueError):
    """A watchlist command cannot do what it was asked (unknown list, bad option)."""


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return os.environ.get("USER") or "unknown"


def _open_store(args: argparse.Namespace) -> WatchlistStore:
    if args.db:
        return WatchlistStore(args.db)

    config = load_config(args.config)
    cfg = config.watchlists or WatchlistsConfig()
    return WatchlistStore(cfg.database_path(config.data_dir), default_agency=config.default_agency)


def _owner(args: argparse.Namespace) -> str | None:
    """The agency `--owner` names (one the config serves; with --db, any agency id), or
    None: the list's own, or for a new list the config's default agency."""
    owner = getattr(args, "owner", None)
    if owner is None:
        return None
    if not is_agency_id(owner):
        raise WatchlistCommandError(f"--owner {owner!r} is not an agency id (lt-vsat, pl-sg)")
    if not args.db:
        served = load_config(args.config).agency_names
        if owner not in served:
            raise WatchlistCommandError(f"--owner {owner}: this collector serves "
                                        f"{', '.join(served)}")  # fmt: skip
    return owner


def _policy_from_args(args: argparse.Namespace, store: WatchlistStore) -> ListPolicy | None:
    given = {
        k: v
        for k, v in (
            ("match", args.match),
            ("max_distance", args.max_distance),
            ("description", args.description),
        )
        if v is not None
    }
    if not given:
        return None
    info = store.lists([args.list]).get(args.list)
    base = info.policy if info is not None and info.active else ListPolicy(args.list)
    if "max_distance" in given and "match" not in given:
        given["match"] = "fuzzy"
    return replace(base, **given)


def _cmd_import(args: argparse.Namespace) -> int:
    check_list_name(args.list)
    defaults = {"agency": args.agency, "added_by": args.added_by or _whoami()}
    entries = read_entries(args.file, args.list, args.format, defaults)
    if args.dry_run:
        print(f"{args.file}: {len(entries)} entries, all valid (nothing imported)")
        return 0
    owner = _owner(args)
    store = _open_store(args)
    try:
        result = store.import_entries(
            args.list, entries, replace_all=args.replace, policy=_policy_from_args(args, store),
            agency=owner,
        )
    finally:
        store.close()
    print(
        f"{args.file}: list {result.list}: {result.added} added, {result.changed} changed, "
        f"{result.unchanged} unchanged, {result.removed} removed"
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    fmt = args.format or ("csv" if args.file == "-" else guess_format(args.file))
    store = _open_store(args)
    try:
        info = store.lists([args.list]).get(args.list)
        if info is None or not info.active:
            raise WatchlistCommandError(f"no list {args.list!r}")
        if args.file == "-":
            try:
                n = write_entries(sys.stdout, store.entries(args.list), fmt, args.sep)
                sys.stdout.flush()
            except BrokenPipeError:  # `| head`: the reader has had enough
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 0
        else:
            tmp = Path(f"{args.file}.part")
            with open(tmp, "w", encoding="utf-8", newline="") as out:
                n = write_entries(out, store.entries(args.list), fmt, args.sep)
            tmp.replace(args.file)
    finally:
        store.close()
    print(f"list {args.list}: {n} entries written to {args.file}", file=sys.stderr)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        lists = store.lists(counts=True)
    finally:
        store.close()
    shown = [i for i in lists.values() if i.active or args.all]
    if args.json:
        for i in shown:
            print(json.dumps({**i.policy.to_json(), "entries": i.entries, "seq": i.seq,
                              "active": i.active}))  # fmt: skip
        return 0
    for i in shown:
        p = i.policy
        how = "exact" if p.match == "exact" else f"fuzzy<={p.max_distance:g}"
        state = "" if i.active else " (dropped)"
        print(f"{p.name:<24} {how:<12} {i.entries:>9} entries  update {i.seq}{state}  "
              f"{p.description}")  # fmt: skip
    return 0


def _cmd_add(args: argparse.Namespace) -> int:
    raw = {
        "plate": args.plate,
        "country": args.country,
        "category": args.category,
        "priority": args.priority,
        "reason": args.reason,
        "valid_from": args.valid_from,
        "valid_until": args.valid_until,
        "agency": args.agency,
        "added_by": args.added_by or _whoami(),
    }
    try:
        entry = parse_entry(raw, list_name=args.list)
    except FieldError as e:
        raise WatchlistCommandError(str(e)) from None
    owner = _owner(args)
    store = _open_store(args)
    try:
        policy = _policy_from_args(args, store)
        if policy is not None:
            store.set_policy(policy, agency=owner)
        try:
            added = store.add(entry, create=args.create, agency=owner)
        except KeyError as e:
            raise WatchlistCommandError(e.args[0]) from None
    finally:
        store.close()
    print(f"entry {added.id}: {added.pattern} on {added.list}")
    return 0


def _cmd_expire(args: argparse.Namespace) -> int:
    try:
        at = _parse_time(args.at, "at") if args.at else None
    except FieldError as e:
        raise WatchlistCommandError(str(e)) from None
    store = _open_store(args)
    try:
        ids = list(args.id or [])
        if args.plate:
            if not args.list:
                raise WatchlistCommandError("--plate needs --list")
            try:
                pattern = parse_pattern(args.plate)
            except FieldError as e:
                raise WatchlistCommandError(str(e)) from None
            found = store.find(args.list, pattern, args.country.upper() if args.country else None)
            if not found:
                raise WatchlistCommandError(f"no entry {pattern} on list {args.list}")
            ids += [e.id for e in found]
        if not ids:
            raise WatchlistCommandError("give --id, or --list and --plate")
        try:
            changed = store.expire(ids, at)
        except KeyError as e:
            raise WatchlistCommandError(e.args[0]) from None
    finally:
        store.close()
    for done in changed:
        until = format_time(done.valid_until)
        print(f"entry {done.id}: {done.pattern} on {done.list} valid until {until}")
    return 0


def _cmd_drop(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        try:
            store.drop_list(args.list)
        except KeyError as e:
            raise WatchlistCommandError(e.args[0]) from None
    finally:
        store.close()
    print(f"list {args.list} dropped")
    return 0


def add_watchlist_commands(subparsers: Any) -> None:
    """Add `watchlist import|export|list|add|expire|drop` to the `anpr-collector` CLI."""
    wl = subparsers.add_parser("watchlist", help="manage watchlists (import, export, list ...)")
    sub = wl.add_subparsers(dest="watchlist_command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        add_config_options(sp, "watchlists")

    def policy(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--match", choices=("exact", "fuzzy"), help="set the list's matching")
        sp.add_argument("--max-distance", type=float, help="fuzzy matches up to this distance "
                        "(an OCR confusion costs 0.25, another edit 1)")  # fmt: skip
        sp.add_argument("--description", help="set the list's description")

    sp = sub.add_parser(
        "import", help="import a CSV or JSON Lines file into a list, all or nothing"
    )
    common(sp)
    sp.add_argument("file", help="the file ('-' for standard input)")
    sp.add_argument("--list", required=True, help="the list (created if new)")
    sp.add_argument("--format", choices=FORMATS, help="default: from the file name")
    sp.add_argument("--replace", action="store_true", help="remove entries not in the file")
    sp.add_argument("--agency", help="agency of rows that name none")
    sp.add_argument("--added-by", help="who adds rows that name no one (default: you)")
    sp.add_argument("--owner", help="the agency (of the config's agencies) that owns the list; "
                    "default: the list's, or for a new list the first agency")  # fmt: skip
    sp.add_argument("--dry-run", action="store_true", help="check the file, import nothing")
    policy(sp)
    sp.set_defaults(func=_cmd_import)

    sp = sub.add_parser("export", help="write a list as CSV or JSON Lines")
    common(sp)
    sp.add_argument("file", help="the file ('-' for standard output)")
    sp.add_argument("--list", required=True)
    sp.add_argument("--format", choices=FORMATS, help="default: from the file name")
    sp.add_argument("--sep", choices=SEPARATORS, default=",",
                    help="CSV separator: ',' or ';' (spreadsheets in much of Europe)")
    sp.set_defaults(func=_cmd_export)

    sp = sub.add_parser("list", help="the lists, their matching and sizes")
    common(sp)
    sp.add_argument("--all", action="store_true", help="dropped lists too")
    sp.add_argument("--json", action="store_true", help="one JSON object a line")
    sp.set_defaults(func=_cmd_list)

    sp = sub.add_parser("add", help="add one entry (or replace the one with its plate)")
    common(sp)
    sp.add_argument("plate", help="plate, or partial plate with ? and *")
    sp.add_argument("--list", required=True)
    sp.add_argument("--create", action="store_true", help="create the list if it is new")
    sp.add_argument("--category", required=True, help="stolen_vehicle, wanted_person, alert...")
    sp.add_argument("--agency", required=True)
    sp.add_argument("--reason", default="", help="what the operator is told")
    sp.add_argument("--priority", type=int, default=5, help="1 most urgent .. 9 (default 5)")
    sp.add_argument("--country", help="ISO 3166 alpha-2")
    sp.add_argument("--valid-from", help="ISO 8601 time (UTC unless given)")
    sp.add_argument("--valid-until", help="ISO 8601 time; a bare date covers that day")
    sp.add_argument("--added-by", help="default: you")
    sp.add_argument("--owner", help="the agency that owns the list (as for import)")
    policy(sp)
    sp.set_defaults(func=_cmd_add)

    sp = sub.add_parser("expire", help="end entries' validity now (or --at)")
    common(sp)
    sp.add_argument("--id", type=int, action="append", help="entry id (repeatable)")
    sp.add_argument("--list", help="with --plate: the list")
    sp.add_argument("--plate", help="the entry's plate or pattern")
    sp.add_argument("--country", help="with --plate: only the entry of this country")
    sp.add_argument("--at", help="ISO 8601 time (default: now)")
    sp.set_defaults(func=_cmd_expire)

    sp = sub.add_parser("drop", help="remove a list and all its entries")
    common(sp)
    sp.add_argument("list")
    sp.set_defaults(func=_cmd_drop)
