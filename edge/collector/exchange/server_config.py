"""The nats-server configuration for the agencies and the grants in force.

One account per agency, JetStream enabled, its one user known by an NKey public key
(the seed stays in that agency's credentials directory).  Accounts are separate: an
agency reaches another's stream only through a service import.  For each direction
G -> R that some grant opens, R exports the service subject `in.R.from.G.>` to account
G alone and G imports it (G's list changes and camera status reach R); where a grant
sends hits back to the list's owner, or grants search (R's queries to G; G's answers
take the direction G -> R), G also exports `in.G.from.R.>` to R.  JetStream's
PubAck to a publish comes back over the import's reply mapping, so a sender knows when
the partner's stream holds its message.

A revoked grant: regenerate, then `nats-server --signal reload`; the collectors also
check the agreements themselves, on both sides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nkeys

from edge.collector.exchange.grants import Grants, check_agency

SEED_SUFFIX = ".nk"
PUBLIC_SUFFIX = ".pub"


def inbox_subject(receiver: str, sender: str, kind: str = ">") -> str:
    """The subject `sender` publishes to, landing in `receiver`'s stream."""
    return f"in.{receiver}.from.{sender}.{kind}"


def seed_file(credentials_dir: Path, agency: str) -> Path:
    return Path(credentials_dir) / f"nats-{agency}{SEED_SUFFIX}"


def generate_nkey(credentials_dir: Path, agency: str, *, overwrite: bool = False) -> str:
    """Write a new user NKey seed `nats-AGENCY.nk` (0600) and `nats-AGENCY.pub`; the public key."""
    check_agency(agency)
    path = seed_file(credentials_dir, agency)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (--force replaces it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed + b"\n")
    os.replace(tmp, path)
    path.with_suffix(PUBLIC_SUFFIX).write_text(public + "\n")
    return public


def public_key_of(keys_dir: Path, agency: str) -> str:
    """The agency's user public key: `nats-AGENCY.pub`, else derived from its seed."""
    pub = Path(keys_dir) / f"nats-{agency}{PUBLIC_SUFFIX}"
    if pub.exists():
        key = pub.read_text().strip()
    else:
        seed = seed_file(keys_dir, agency)
        if not seed.exists():
            raise FileNotFoundError(f"no NATS key for {agency}: {pub} (anpr-collector "
                                    f"exchange keygen {agency})")
        key = nkeys.from_seed(bytearray(seed.read_bytes().strip())).public_key.decode()
    if not (key.startswith("U") and len(key) == 56):
        raise ValueError(f"{pub}: not an NKey user public key")
    return key


@dataclass(frozen=True)
class Route:
    """`sender` may publish into `receiver`'s stream (subjects `in.receiver.from.sender.>`)."""

    sender: str
    receiver: str


def routes(grants: Grants, agencies: Iterable[str]) -> set[Route]:
    """The directions the grants in force open between `agencies`."""
    names = list(agencies)
    out: set[Route] = set()
    for giver in names:
        for receiver in names:
            if giver == receiver:
                continue
            for g in grants.grants(giver, receiver):
                out.add(Route(giver, receiver))  # lists and camera status
                if g.hits_back:
                    out.add(Route(receiver, giver))  # hits on the giver's lists
                if g.search:
                    out.add(Route(receiver, giver))  # search queries (answers: giver -> receiver)
    return out


def render(
    public_keys: Mapping[str, str],
    open_routes: Iterable[Route],
    *,
    store_dir: Path,
    listen: str = "127.0.0.1:4222",
    http: str | None = "127.0.0.1:8222",
    max_store: str = "10G",
    sync: str = "always",
) -> str:
    """nats-server.conf text: `public_keys` by agency, `open_routes` as exports and imports.

    `sync` is JetStream's sync_interval: "always" (the default) writes each message to disk
    before its PubAck, which the senders' outboxes take as "stored" and forget the message
    on; a duration ("2m", NATS's own default) risks that long of messages on a power cut
    of a lone server. A three-server cluster with replicas (R3) is the other way to keep
    them; then a duration is safe."""
    exports: dict[str, list[str]] = {a: [] for a in public_keys}
    imports: dict[str, list[str]] = {a: [] for a in public_keys}
    for r in sorted(open_routes, key=lambda r: (r.receiver, r.sender)):
        if r.sender not in public_keys or r.receiver not in public_keys:
            raise ValueError(f"route {r.sender} -> {r.receiver}: no key for one of them")
        subject = json.dumps(inbox_subject(r.receiver, r.sender))
        exports[r.receiver].append(
            f"{{service: {subject}, accounts: [{json.dumps(r.sender)}]}}")
        imports[r.sender].append(
            f"{{service: {{account: {json.dumps(r.receiver)}, subject: {subject}}}}}")
    lines = [
        "# Generated by `anpr-collector exchange server-config`: edit the agreements, not this.",
        f"listen: {json.dumps(listen)}",
    ]
    if http:
        lines.append(f"http: {json.dumps(http)}")
    lines += [
        f"jetstream {{ store_dir: {json.dumps(str(store_dir))}, max_file_store: {max_store}, "
        f"sync_interval: {json.dumps(sync)} }}",
        "accounts {",
    ]
    for agency in sorted(public_keys):
        check_agency(agency)
        lines.append(f"  {json.dumps(agency)}: {{")
        lines.append("    jetstream: enabled")
        lines.append(f"    users: [{{nkey: {json.dumps(public_keys[agency])}}}]")
        lines.append("    exports: [" + ", ".join(exports[agency]) + "]")
        lines.append("    imports: [" + ", ".join(imports[agency]) + "]")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def server_config(
    grants: Grants, keys_dir: Path, *, store_dir: Path, listen: str = "127.0.0.1:4222",
    http: str | None = "127.0.0.1:8222", sync: str = "always",
) -> str:
    """The config for every agency the agreements name (each must have a key in `keys_dir`)."""
    agencies = sorted(grants.agencies)
    keys = {a: public_key_of(keys_dir, a) for a in agencies}
    return render(keys, routes(grants, agencies), store_dir=store_dir, listen=listen, http=http,
                  sync=sync)
