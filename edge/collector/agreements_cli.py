"""`anpr-collector agreements check`: load an agreements directory and say what is in force."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import Any

from edge.collector.agreements import Agreements
from edge.collector.config import DEFAULT_CONFIG, load_config
from edge.core.config_files import ConfigError
from edge.core.times import iso, parse_iso, utc_now


def _cmd_check(args: argparse.Namespace) -> int:
    if args.directory:
        directory = Path(args.directory)
    else:
        config_path = args.config or os.environ.get("ANPR_COLLECTOR_CONFIG", DEFAULT_CONFIG)
        found = load_config(config_path).agreements_dir
        if found is None:
            raise ConfigError(config_path, "agreements_dir", "not set: no agreements")
        directory = found
    at: dt.datetime = args.at or utc_now()
    agreements = Agreements.load(directory)  # ConfigError: main prints it, exit status 2
    print(f"{directory}: {len(agreements.agencies)} agencies, "
          f"{len(agreements.agreements)} agreements; at {iso(at, 'seconds')}:")  # fmt: skip
    for a in agreements.agreements:
        state = "IN FORCE" if a.in_force(at) else (
            "NOT YET" if at < a.valid_from else "EXPIRED")  # fmt: skip
        print(f"  {a.reference} [{state}] {a.title} ({a.file}; {a.period()})")
        for g in a.grants:
            print(f"    {g.giver} -> {g.receiver}: {g.summary()}")
    return 0


def add_agreement_commands(subparsers: Any) -> None:
    """`agreements check [--config F | DIR] [--at TIME]` on the collector's CLI."""
    ag = subparsers.add_parser("agreements", help="agreements with partner agencies")
    sub = ag.add_subparsers(dest="agreements_command", required=True)
    sp = sub.add_parser("check", help="check an agreements directory, show what is in force")
    where = sp.add_mutually_exclusive_group()
    default = f"$ANPR_COLLECTOR_CONFIG or {DEFAULT_CONFIG}"
    where.add_argument("--config", help=f"collector YAML naming agreements_dir ({default})")
    where.add_argument("directory", nargs="?", help="the agreements directory itself")
    sp.add_argument("--at", type=parse_iso, help="ISO 8601 time to judge at (default now)")
    sp.set_defaults(func=_cmd_check)
