"""The exchange's parts that need no server: its config, keys, the nats-server config, the wire."""

from __future__ import annotations

import argparse
import dataclasses
import re
import stat
from pathlib import Path

import pytest
from helpers.exchange import StandInGrant, StandInGrants
from helpers.link import make_hit
from pydantic import ValidationError

from edge.collector.exchange.cli import add_exchange_commands
from edge.collector.exchange.config import ExchangeConfig
from edge.collector.exchange.messages import (
    ListChange,
    decode_message,
    encode_hit,
    encode_list_change,
    subject_parts,
)
from edge.collector.exchange.server_config import Route, public_key_of, routes, seed_file
from edge.core.errors import ProtocolError
from edge.core.watchlist.entry import ListPolicy

LT, PL, LV = "lt-vsat", "pl-sg", "lv-vp"


def run_cli(argv: list[str], grants: StandInGrants | None = None) -> int:
    p = argparse.ArgumentParser()
    add_exchange_commands(p.add_subparsers(dest="command", required=True),
                          lambda _dir: grants)  # type: ignore[arg-type,return-value]
    args = p.parse_args(argv)
    return int(args.func(args))


def test_keygen_writes_a_private_seed_and_prints_the_public_key(tmp_path: Path, capsys) -> None:
    assert run_cli(["exchange", "keygen", PL, "--dir", str(tmp_path)]) == 0
    public = capsys.readouterr().out.strip()
    seed = tmp_path / "nats-pl-sg.nk"
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    assert seed.read_text().startswith("SU")
    assert public.startswith("U") and public_key_of(tmp_path, PL) == public
    (tmp_path / "nats-pl-sg.pub").unlink()  # the public key is derived from the seed too
    assert public_key_of(tmp_path, PL) == public
    with pytest.raises(FileExistsError):
        run_cli(["exchange", "keygen", PL, "--dir", str(tmp_path)])
    with pytest.raises(ValueError, match="is not an agency id"):
        run_cli(["exchange", "keygen", "Not An Agency", "--dir", str(tmp_path)])


def test_each_granted_direction_is_one_export_and_its_import(tmp_path: Path, capsys) -> None:
    grants = StandInGrants({a: {} for a in (LT, PL, LV)}, [
        StandInGrant(PL, LT, lists=("stolen-pl",), hits_back=True),
        StandInGrant(LT, LV, lists=("wanted",)),
    ])
    assert routes(grants, grants.agencies) == {Route(PL, LT), Route(LT, PL), Route(LT, LV)}
    for a in grants.agencies:
        run_cli(["exchange", "keygen", a, "--dir", str(tmp_path)])
    capsys.readouterr()
    run_cli(["exchange", "server-config", "--agreements", str(tmp_path), "--keys",
             str(tmp_path), "--store-dir", str(tmp_path / "js")], grants)
    conf = capsys.readouterr().out
    accounts = conf.split("accounts {", 1)[1]
    lv = next(b for b in accounts.split("  }") if '"lv-vp"' in b.split("\n")[1])
    assert 'exports: [{service: "in.lv-vp.from.lt-vsat.>", accounts: ["lt-vsat"]}]' in lv
    assert "imports: []" in lv  # lv-vp sends nothing: it gets no hits-back grant
    assert conf.count("service:") == 6  # 3 routes: an export and an import each
    assert public_key_of(tmp_path, LV) in lv  # public keys only: no seed, of any agency
    assert not [a for a in grants.agencies if seed_file(tmp_path, a).read_text().strip() in conf]
    assert not re.search(r"\bSU[A-Z2-7]{56}\b", conf)  # nor anything shaped like a user seed
    assert 'sync_interval: "always"' in conf  # a PubAck means on disk: the sender forgets it


@pytest.mark.parametrize("body, reason", [
    (b"", "garbage"),
    (b"hello", "garbage"),
    (b"{", "garbage"),
    (b"[1]", "garbage"),
    (b'{"v": 2, "kind": "list"}', "version"),
    (b'{"v": 1, "kind": "list", "owner": "PL", "list": "x", "epoch": "e", "seq": 1, '
     b'"op": "withdrawn"}', "invalid"),
    (b'{"v": 1, "kind": "list", "owner": "pl-sg", "list": "x", "epoch": "e", "seq": 0, '
     b'"op": "withdrawn"}', "invalid"),
    (b'{"v": 1, "kind": "list", "owner": "pl-sg", "list": "x", "epoch": "e", "seq": 1, '
     b'"op": "explode"}', "invalid"),
    (b'{"v": 1, "kind": "list", "owner": "pl-sg", "list": "x", "epoch": "e", "seq": 1, '
     b'"op": "upsert", "entries": [[1, "ab c"]]}', "invalid"),
    (b'{"v": 1, "kind": "list", "owner": "pl-sg", "list": "x", "epoch": "e", "seq": 1, '
     b'"op": "snapshot-begin", "policy": {"name": "y"}}', "invalid"),
    (b"ANPX\x04\x00\x00\x00\x05ab", "truncated"),
    (b"ANPX\x09", "garbage"),
])
def test_a_malformed_message_is_refused_with_its_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as e:
        decode_message(body)
    assert e.value.reason == reason


def test_hits_and_list_changes_come_through_as_sent() -> None:
    hit = make_hit(3, node="lt-e1")
    assert decode_message(encode_hit(hit)) == hit
    with pytest.raises(ProtocolError, match="after the hit"):
        decode_message(encode_hit(hit) + b"x")
    row = (5, "BI12345", "stolen-pl", "pl-sg", "stolen_vehicle", 2, "why", "PL", None, None, "a")
    for change in (
        ListChange(PL, "stolen-pl", "e1", 1, "snapshot-begin", policy=ListPolicy("stolen-pl")),
        ListChange(PL, "stolen-pl", "e1", 2, "upsert", rows=(row,)),
        ListChange(PL, "stolen-pl", "e1", 3, "expire", ids=(5,), at=1.5e9),
        ListChange(PL, "stolen-pl", "e1", 4, "remove", ids=(5, 6)),
        ListChange(PL, "stolen-pl", "e1", 5, "snapshot-end"),
        ListChange(PL, "stolen-pl", "e1", 6, "withdrawn"),
    ):
        assert decode_message(encode_list_change(change)) == change
    assert change.msg_id == "list:pl-sg.stolen-pl:e1.6"
    assert subject_parts("in.lt-vsat.from.pl-sg.hit") == (LT, PL, "hit")
    with pytest.raises(ProtocolError):
        subject_parts("in.lt-vsat.pl-sg.hit")
    assert dataclasses.replace(change, owner=LT).qualified == "lt-vsat.stolen-pl"


def test_the_exchange_section_is_checked() -> None:
    c = ExchangeConfig.model_validate({"url": "nats://10.0.0.1:4222"})
    s = c.link_settings(LT, Path("/creds"))
    assert (s.agency, s.seed_file, s.subjects) == (LT, Path("/creds/nats-lt-vsat.nk"),
                                                   "in.lt-vsat.>")
    for bad in ({"url": "http://x"}, {"agency": "LT"}, {"credentials": "../x.nk"},
                {"stream_name": "x"}):
        with pytest.raises(ValidationError):
            ExchangeConfig.model_validate(bad)
