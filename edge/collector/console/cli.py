"""`anpr-collector user add|passwd|disable|enable|list`: console accounts, kept in console.db."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from edge.collector.config import add_config_options, load_config
from edge.collector.console.accounts import ROLES, AccountError, ConsoleDB
from edge.collector.console.config import ConsoleConfig


def _database(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)

    config = load_config(args.config)
    return (config.console or ConsoleConfig()).database_path(config.data_dir)


def _open(args: argparse.Namespace) -> ConsoleDB:
    """The console database, knowing the config's default agency (with --db: `local`)."""
    if args.db:
        return ConsoleDB(Path(args.db))
    config = load_config(args.config)
    return ConsoleDB(_database(args), default_agency=config.default_agency)


def _agency(args: argparse.Namespace) -> str | None:
    """`--agency`, checked: one of the agencies the config serves (with --db: any agency id)."""
    agency = args.agency
    if agency is None or args.db:
        return agency
    served = load_config(args.config).agency_names
    if agency not in served:
        raise AccountError(f"--agency {agency}: this collector serves {', '.join(served)}")
    return str(agency)


def _who() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return os.environ.get("USER") or "unknown"


def read_password(stdin: bool, name: str) -> str:
    """The new password: one line of standard input, or typed twice at a prompt."""
    if stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise AccountError("no password on standard input")
        return line.rstrip("\r\n")
    first = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the two passwords differ")
    return first


def _cmd_add(args: argparse.Namespace) -> int:
    agency = _agency(args)  # before the password is asked for
    password = read_password(args.password_stdin, args.name)
    db = _open(args)
    try:
        user = db.add_user(args.name, password, args.role, args.display_name or "",
                           replace=args.force, agency=agency)  # fmt: skip
        db.audit(f"cli:{_who()}", "user add", f"{user.name} ({user.role}, {user.agency})",
                 agency=user.agency)  # fmt: skip
    finally:
        db.close()
    print(f"user {user.name} ({user.role}) can sign in to the console, for {user.agency}")
    return 0


def _cmd_passwd(args: argparse.Namespace) -> int:
    password = read_password(args.password_stdin, args.name)
    db = _open(args)
    try:
        db.set_password(args.name, password)
        db.audit(f"cli:{_who()}", "user passwd", args.name, agency=_user_agency(db, args.name))
    finally:
        db.close()
    print(f"password of {args.name} changed; their sessions are ended")
    return 0


def _cmd_active(args: argparse.Namespace) -> int:
    db = _open(args)
    try:
        db.set_active(args.name, args.active)
        db.audit(f"cli:{_who()}", "user enable" if args.active else "user disable", args.name,
                 agency=_user_agency(db, args.name))  # fmt: skip
    finally:
        db.close()
    print(f"user {args.name} {'enabled' if args.active else 'disabled; their sessions are ended'}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    db = _open(args)
    try:
        users = db.users()
    finally:
        db.close()
    for u in users:
        state = "" if u.active else "  (disabled)"
        print(f"{u.name:<24} {u.role:<9} {u.agency:<12} {u.display_name}{state}")
    return 0


def _user_agency(db: ConsoleDB, name: str) -> str:
    user = db.user(name)
    return user.agency if user is not None else ""


def add_user_commands(subparsers: Any) -> None:
    """Add `user add|passwd|disable|enable|list` to the `anpr-collector` CLI."""
    up = subparsers.add_parser("user", help="operators and admins of the web console")
    sub = up.add_subparsers(dest="user_command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        add_config_options(sp, "console")

    def password(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--password-stdin", action="store_true",
                        help="read the password as one line of standard input (no prompt)")

    sp = sub.add_parser("add", help="add a user (the password is asked for)")
    common(sp)
    sp.add_argument("name")
    sp.add_argument("--role", choices=ROLES, required=True)
    sp.add_argument("--display-name", help="the name shown on acknowledgements")
    sp.add_argument("--agency", help="the agency whose hits and lists the user sees (one of "
                    "the config's agencies; default: the first)")  # fmt: skip
    sp.add_argument("--force", action="store_true", help="replace a user of that name")
    password(sp)
    sp.set_defaults(func=_cmd_add)

    sp = sub.add_parser("passwd", help="set a user's password (ends their sessions)")
    common(sp)
    sp.add_argument("name")
    password(sp)
    sp.set_defaults(func=_cmd_passwd)

    for verb, active in (("disable", False), ("enable", True)):
        sp = sub.add_parser(verb, help=f"{verb} a user" + ("" if active else " (ends sessions)"))
        common(sp)
        sp.add_argument("name")
        sp.set_defaults(func=_cmd_active, active=active)

    sp = sub.add_parser("list", help="the users and their roles")
    common(sp)
    sp.set_defaults(func=_cmd_list)
