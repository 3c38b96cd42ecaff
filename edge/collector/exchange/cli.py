"""`anpr-collector exchange`: an agency's NKey, and the nats-server config from the agreements."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from edge.collector.exchange.grants import Grants
from edge.collector.exchange.server_config import generate_nkey, seed_file, server_config

LoadGrants = Callable[[Path], Grants]


def _cmd_keygen(args: argparse.Namespace) -> int:
    public = generate_nkey(Path(args.dir), args.agency, overwrite=args.force)
    path = seed_file(Path(args.dir), args.agency)
    print(public)
    print(f"seed in {path} (mode 0600); public key also in {path.with_suffix('.pub')}",
          file=sys.stderr)
    return 0


def add_exchange_commands(sub: argparse._SubParsersAction, load_grants: LoadGrants) -> None:
    """`exchange keygen` and `exchange server-config`; `load_grants` reads an agreements
    directory (`Agreements.load`)."""
    p = sub.add_parser("exchange", help="exchange with partner agencies over NATS")
    cmds = p.add_subparsers(dest="exchange_command", required=True)

    sp = cmds.add_parser("keygen", help="make the NKey seed nats-AGENCY.nk; print its public key")
    sp.add_argument("agency")
    sp.add_argument("--dir", required=True, help="the credentials directory to write to")
    sp.add_argument("--force", action="store_true", help="replace an existing seed")
    sp.set_defaults(func=_cmd_keygen)

    def server_config_cmd(args: argparse.Namespace) -> int:
        grants = load_grants(Path(args.agreements))
        sys.stdout.write(server_config(grants, Path(args.keys), store_dir=Path(args.store_dir),
                                       listen=args.listen, http=args.http or None,
                                       sync=args.sync))
        return 0

    sp = cmds.add_parser("server-config", help="nats-server.conf for the agencies and the "
                         "grants in force now (regenerate and reload when they change)")
    sp.add_argument("--agreements", required=True, help="the agreements directory")
    sp.add_argument("--keys", required=True,
                    help="directory of nats-AGENCY.pub (or .nk) for every agency named")
    sp.add_argument("--store-dir", default="/var/lib/nats/jetstream", help="JetStream's store")
    sp.add_argument("--listen", default="0.0.0.0:4222", help="client address (host:port)")
    sp.add_argument("--http", default="127.0.0.1:8222",
                    help="monitoring address ('' for none)")
    sp.add_argument("--sync", default="always",
                    help="JetStream's sync_interval: 'always' (each message on disk before its "
                         "PubAck: a lone server loses nothing on a power cut), or a duration "
                         "such as 2m for a cluster whose streams have three replicas")
    sp.set_defaults(func=server_config_cmd)
