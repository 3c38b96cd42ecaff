"""`anpr-collector`: keygen, run (config errors), tail, hits, nodes; and the store behind them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import stat
import subprocess
import sys
import threading

import pytest
from helpers.link import child_env, make_hit, wait_for

from edge.collector.cli import format_hit, main, parse_since
from edge.collector.config import CollectorConfig, ConfigError, load_config
from edge.collector.hits import StoredHit
from edge.collector.store import HitStore, Seen
from edge.collector.watchlist.config import WatchlistsConfig
from edge.core.keys import generate_keypair, load_keypair, load_signing_key, load_verify_key
from edge.core.search import SearchQuery, new_query_id, sign_query, verify_query

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def test_keygen_writes_a_pair_and_prints_the_public_key(tmp_path, capsys):
    assert main(["keygen", "--dir", str(tmp_path / "creds"), "collector"]) == 0
    public, _ = load_keypair(tmp_path / "creds", "collector")
    assert public.decode() in capsys.readouterr().out
    mode = (tmp_path / "creds" / "collector.key_secret").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert main(["keygen", "--dir", str(tmp_path / "creds"), "collector"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["keygen", "--dir", str(tmp_path / "creds"), "--force", "collector"]) == 0


def test_keygen_makes_the_collectors_search_signing_pair_too(tmp_path, capsys):
    creds = tmp_path / "creds"
    assert main(["keygen", "--dir", str(creds), "collector"]) == 0
    assert "collector.verify" in capsys.readouterr().out
    assert stat.S_IMODE((creds / "collector.sign").stat().st_mode) == 0o600
    frames = sign_query(_search_query(), load_signing_key(creds, "collector"))
    assert verify_query(frames, load_verify_key(creds, "collector")).case_ref == "C-1"
    # a collector made before the search gets the signing pair alone, its CURVE pair kept
    old = tmp_path / "old"
    public, _ = generate_keypair(old, "collector")
    assert main(["keygen", "--dir", str(old), "collector"]) == 0
    assert load_keypair(old, "collector")[0] == public and (old / "collector.verify").exists()
    assert main(["keygen", "--dir", str(tmp_path / "n"), "edge-1"]) == 0  # a node: no signing
    assert not (tmp_path / "n" / "edge-1.sign").exists()


def _search_query() -> SearchQuery:
    return SearchQuery(query_id=new_query_id(), pattern="B123XY", mode="exact",
                       max_distance=0, since=NOW, until=NOW, nodes=("edge-1",),
                       case_ref="C-1")  # fmt: skip


def test_config_errors_name_the_key(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("listen: tcp://127.0.0.1:0\nlisen_typo: 1\nlimits:\n  max_crop_bytes: 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "lisen_typo" in str(e.value) and "limits.max_crop_bytes" in str(e.value)
    assert main(["run", "--config", str(path)]) == 2
    assert "lisen_typo" in capsys.readouterr().err


def test_config_keeps_paths_relative_to_itself_and_types_watchlists(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "data_dir: data\ncredentials_dir: creds\nallowed_keys_dir: edges\n"
        "watchlists:\n  snapshot: tcp://0.0.0.0:5570\n  database: lists.db\n"
    )
    cfg = load_config(path)
    assert cfg.db_path == tmp_path / "data" / "hits.db"
    assert cfg.credentials_dir == str(tmp_path / "creds")
    assert cfg.allowed_keys_dir == tmp_path / "edges"
    assert cfg.watchlists == WatchlistsConfig(snapshot="tcp://0.0.0.0:5570", database="lists.db")
    assert cfg.watchlists.database_path(cfg.data_dir) == tmp_path / "data" / "lists.db"


def test_a_bad_watchlists_key_is_an_error_at_load_naming_it(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("watchlists:\n  snapshot: tcp://0.0.0.0:5570\n  anything: [1, 2]\n"
                    "  heartbeat_s: -1\n")  # fmt: skip
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "watchlists.anything" in str(e.value) and "watchlists.heartbeat_s" in str(e.value)
    for command in (["hits", "--since", "1h"], ["watchlist", "list"], ["run"]):
        assert main([*command, "--config", str(path)]) == 2
        assert "watchlists.anything" in capsys.readouterr().err


def test_example_config_is_valid():
    from helpers.link import REPO

    cfg = load_config(REPO / "config" / "collector.example.yaml")
    assert isinstance(cfg, CollectorConfig) and cfg.listen.startswith("tcp://")


def test_missing_key_file_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(
        f"listen: tcp://127.0.0.1:0\ndata_dir: {tmp_path / 'data'}\n"
        f"credentials_dir: {tmp_path / 'nowhere'}\nallowed_keys_dir: {tmp_path}\n"
    )
    assert main(["run", "--config", str(path)]) == 2
    assert "collector.key_secret: key file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - dt.timedelta(minutes=30)),
        ("2h", NOW - dt.timedelta(hours=2)),
        ("1.5d", NOW - dt.timedelta(hours=36)),
        ("1w", NOW - dt.timedelta(days=7)),
        ("2026-04-30", dt.datetime(2026, 4, 30, tzinfo=dt.UTC)),
        ("2026-04-30T10:00:00+02:00", dt.datetime(2026, 4, 30, 8, tzinfo=dt.UTC)),
    ],
)
def test_parse_since(text, expected):
    assert parse_since(text, now=NOW) == expected


def test_parse_since_refuses_nonsense():
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="neither a duration"):
        parse_since("last tuesday")


def _db_with_hits(tmp_path, n=5):
    path = tmp_path / "hits.db"
    store = HitStore(path)
    store.commit([make_hit(i, priority=i) for i in range(n)])
    return path, store


def test_hits_since_lists_them_oldest_first(tmp_path, capsys):
    path, store = _db_with_hits(tmp_path)
    store.close()
    since = (make_hit(2).seen_at).isoformat()
    assert main(["hits", "--db", str(path), "--since", since]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert [line.split()[1] for line in lines] == ["AB", "AB", "AB"]
    assert "AB 00002 (DE)" in lines[0] and "AB 00004" in lines[2]
    assert "3 hits" in out.err
    assert main(["hits", "--db", str(path), "--since", since, "--json", "--plate", "AB00003"]) == 0
    (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert row["hit_id"] == make_hit(3).hit_id and row["priority"] == 3


def test_hit_line_has_priority_plate_list_reason_camera_time():
    hit = StoredHit(
        rowid=1, hit_id="h1", node="edge1", camera="cam1", seen_at="2026-05-01T12:00:00.000000Z",
        received_at="2026-05-01T12:00:01.000000Z", lat=None, lon=None, road="A4",
        direction="east", plate_text="BAB123", plate_raw="B AB 123", plate_formatted="B AB 123",
        country="DE", confidence=0.9, watchlist="stolen", entry_id="7", entry_plate="BAB123",
        match_kind="fuzzy", match_distance=0.25, priority=7, reason="stolen car", version=1,
        crop_bytes=0, scene_bytes=0,
    )  # fmt: skip
    line = format_hit(hit)
    assert line.startswith("P7 ")
    for part in ("B AB 123 (DE)", "stolen: stolen car [fuzzy]", "edge1/cam1 A4 east",
                 "2026-05-01T12:00:00.000000Z"):  # fmt: skip
        assert part in line
    bare = dataclasses.replace(hit, plate_formatted="", country=None, reason="", match_kind="",
                               road="", direction="")  # fmt: skip
    assert format_hit(bare) == f"P7   {'BAB123':<16} stolen: entry 7  edge1/cam1  {hit.seen_at}"


def test_tail_prints_each_new_hit_as_it_arrives(tmp_path):
    path, store = _db_with_hits(tmp_path, 2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.collector.cli", "tail", "--db", str(path), "--last", "1",
         "--interval", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip
    lines: list[str] = []

    def read():
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_for(lambda: len(lines) >= 1, 20, "the last stored hit")
        assert "AB 00001" in lines[0]  # --last 1: only the newest of what was there
        store.commit([make_hit(10, priority=9)])
        wait_for(lambda: len(lines) >= 2, 10, "the new hit")
        assert lines[1].startswith("P9 ") and "AB 00010" in lines[1]
        store.commit([make_hit(10)])  # a duplicate: not a new hit
        store.commit([make_hit(11)])
        wait_for(lambda: len(lines) >= 3, 10, "the next hit")
        assert "AB 00011" in lines[2] and len(lines) == 3
    finally:
        proc.terminate()
        proc.wait(10)
        store.close()


def test_nodes_lists_when_each_node_and_camera_was_heard(tmp_path, capsys):
    path = tmp_path / "hits.db"
    store = HitStore(path)
    now = dt.datetime.now(dt.UTC)
    store.record_seen(
        [Seen("edge7", now, "10.0.0.7", {
            "node": "edge7", "health": {"ok": True, "problems": []},
            "cameras": {"north": {"state": "live", "ok": True}}, "outbox": {"backlog": 3}},
            ("north",))]
    )  # fmt: skip
    store.close()
    assert main(["nodes", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "edge7" in out and "backlog 3" in out and "north" in out and "10.0.0.7" in out
    assert main(["nodes", "--db", str(path), "--json"]) == 0
    (node,) = json.loads(capsys.readouterr().out)
    assert node["cameras"][0]["camera"] == "north"


def test_store_keeps_each_hit_once_and_tells_duplicates(tmp_path):
    store = HitStore(tmp_path / "hits.db")
    new, dups = store.commit([make_hit(1), make_hit(2), make_hit(1)])
    assert new == [make_hit(1).hit_id, make_hit(2).hit_id] and dups == [make_hit(1).hit_id]
    new, dups = store.commit([make_hit(2), make_hit(3)])
    assert new == [make_hit(3).hit_id] and dups == [make_hit(2).hit_id]
    assert store.count() == 3
    assert store.image(make_hit(3).hit_id, "crop") == make_hit(3).crop_jpeg
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: durable at ack
    store.close()


def test_tail_waits_for_a_database_the_collector_has_not_set_up_yet(tmp_path):
    import sqlite3

    path = tmp_path / "hits.db"
    sqlite3.connect(path).close()  # the file exists, its tables not yet
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.collector.cli", "tail", "--db", str(path),
         "--interval", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip
    lines: list[str] = []
    errors: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True).start()
    try:
        wait_for(lambda: any("waiting for" in e for e in errors), 20, "tail to wait")
        store = HitStore(path)
        store.commit([make_hit(1)])
        wait_for(lambda: lines, 20, "the hit")
        assert "AB 00001" in lines[0]
        store.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_hits_command_on_missing_db_is_a_clear_error(tmp_path, capsys):
    assert main(["hits", "--db", str(tmp_path / "none.db"), "--since", "1h"]) == 2
    assert "no collector database" in capsys.readouterr().err
