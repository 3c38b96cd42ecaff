"""`anpr-collector watchlist ...`: import, export, list, add, expire, drop; end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from edge.collector.cli import main
from edge.collector.watchlist.master import WatchlistStore
from edge.collector.watchlist.server import WatchlistServer
from edge.node.watchlist.sync import WatchlistSync

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "watchlist.example.csv"


def run(*args):
    return main(["watchlist", *args])


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "watchlists.db")


def test_import_list_export(db, tmp_path, capsys):
    assert run("import", str(EXAMPLE), "--list", "demo", "--db", db) == 0
    assert "5 added, 0 changed, 0 unchanged, 0 removed" in capsys.readouterr().out
    assert run("import", str(EXAMPLE), "--list", "demo", "--db", db, "--match", "exact") == 0
    assert "0 added, 0 changed, 5 unchanged" in capsys.readouterr().out
    assert run("list", "--db", db) == 0
    assert "demo" in (out := capsys.readouterr().out) and "exact" in out and "5 entries" in out
    out_file = tmp_path / "out.jsonl"
    assert run("export", str(out_file), "--list", "demo", "--db", db) == 0
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["plate"] for r in rows] == ["WX12345", "KR5OO1A", "BXY999", "LV?12?", "*7781"]
    assert run("export", "-", "--list", "demo", "--db", db) == 0
    assert capsys.readouterr().out.startswith('"id","list","plate",')  # every cell quoted


def test_a_bad_file_names_line_and_field_and_imports_nothing(db, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(EXAMPLE.read_text() + "AB123CD,PL,stolen_vehicle,high,x,,,PL-KGP,jk\n")
    assert run("import", str(bad), "--list", "demo", "--db", db) == 2
    assert f"{bad}:7: field 'priority'" in capsys.readouterr().err
    store = WatchlistStore(db)
    assert store.lists() == {} and store.changes_after(0) == []
    store.close()
    assert run("import", str(bad), "--list", "demo", "--dry-run") == 2


def test_add_expire_drop(db, capsys):
    assert run("add", "AB123CD", "--list", "alerts", "--category", "alert", "--agency", "PL",
               "--db", db) == 2  # fmt: skip
    assert "no list 'alerts'" in capsys.readouterr().err
    assert run("add", "ab 123 cd", "--list", "alerts", "--category", "alert", "--agency", "PL",
               "--reason", "patrol 17", "--create", "--db", db) == 0  # fmt: skip
    assert "entry 1: AB123CD on alerts" in capsys.readouterr().out
    assert run("add", "AB1", "--list", "alerts", "--category", "alert", "--agency", "PL",
               "--priority", "0", "--db", db) == 2  # fmt: skip
    assert "priority" in capsys.readouterr().err
    assert run("expire", "--list", "alerts", "--plate", "AB-123-CD", "--db", db) == 0
    assert "entry 1: AB123CD on alerts valid until" in capsys.readouterr().out
    assert run("expire", "--id", "42", "--db", db) == 2
    assert run("drop", "alerts", "--db", db) == 0
    assert "list alerts dropped" in capsys.readouterr().out
    assert run("list", "--all", "--json", "--db", db) == 0
    (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["active"] is False and listed["seq"] == 4


def test_database_from_the_collector_config(tmp_path, capsys):
    config = tmp_path / "collector.yaml"
    config.write_text("data_dir: data\nwatchlists: {heartbeat_s: 2}\n")
    assert run("import", str(EXAMPLE), "--list", "demo", "--config", str(config)) == 0
    assert (tmp_path / "data" / "watchlists.db").exists()
    config.write_text("data_dir: data\nwatchlists: {heartbeat: 2}\n")
    assert run("list", "--config", str(config)) == 2
    assert "heartbeat" in capsys.readouterr().err


def test_import_in_another_process_reaches_a_running_edge(tmp_path):
    """The collector's CLI, run as its own process, writes; the server in the collector
    publishes; an edge over loopback matches the new plate."""
    db = tmp_path / "watchlists.db"
    WatchlistStore(db).close()
    ctx = zmq.Context()
    server = WatchlistServer(db, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=0.2)
    server.start(ctx)
    edge = WatchlistSync(tmp_path / "edge.db", server.snapshot_endpoint, ctx=ctx,
                         updates_endpoint=server.publish_endpoint, heartbeat_s=0.2)  # fmt: skip
    edge.start()
    try:
        assert edge.wait_synced(5)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-m", "edge.collector.cli", "watchlist", "import", str(EXAMPLE),
             "--list", "demo", "--db", str(db)],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 5
        while not edge.matcher.match("WX12345") and time.monotonic() < deadline:
            time.sleep(0.01)
        hits = edge.matcher.match("WX 12345", "PL")
        assert hits and hits[0].entry.reason.startswith("Black Skoda")
        assert [h.kind for h in edge.matcher.match("ABC7781")] == ["wildcard"]
    finally:
        edge.stop()
        server.stop()
        edge.replica.close()
        ctx.destroy(linger=0)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_collector_run_serves_watchlists_to_a_curve_edge(tmp_path):
    """`anpr-collector run` with a watchlists: section, keys and allow-list; lists
    imported with `anpr-collector watchlist import`; an edge with its key pair syncs."""
    from edge.core.keys import generate_keypair, load_public_key

    creds, allowed = tmp_path / "creds", tmp_path / "allowed"
    generate_keypair(creds, "collector")
    edge_keys = generate_keypair(tmp_path / "edge-keys", "edge-1")
    allowed.mkdir()
    (allowed / "edge-1.key").write_text((tmp_path / "edge-keys" / "edge-1.key").read_text())
    snapshot = f"tcp://127.0.0.1:{_free_port()}"
    publish = f"tcp://127.0.0.1:{_free_port()}"
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"listen: tcp://127.0.0.1:{_free_port()}\ndata_dir: {tmp_path / 'data'}\n"
        f"credentials_dir: {creds}\nallowed_keys_dir: {allowed}\n"
        f"watchlists: {{snapshot: '{snapshot}', publish: '{publish}', heartbeat_s: 0.2}}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CREDENTIALS_DIRECTORY": ""}
    cli = [sys.executable, "-m", "edge.collector.cli"]
    done = subprocess.run([*cli, "watchlist", "import", str(EXAMPLE), "--list", "demo",
                           "--config", str(config)], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    collector = subprocess.Popen(
        [*cli, "run", "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    ctx = zmq.Context()
    edge = WatchlistSync(tmp_path / "edge.db", snapshot, load_public_key(creds / "collector.key"),
                         edge_keys, ctx=ctx, updates_endpoint=publish)  # fmt: skip
    edge.start()
    try:
        assert edge.wait_synced(20), "edge did not sync"
        assert edge.matcher.match("WX12345", "PL")
        done = subprocess.run([*cli, "watchlist", "add", "NEW 777", "--list", "demo",
                               "--category", "alert", "--agency", "PL-SG", "--config",
                               str(config)], capture_output=True, text=True, env=env,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 5
        while not edge.matcher.match("NEW777") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert edge.matcher.match("NEW777")
    finally:
        edge.stop()
        edge.replica.close()
        ctx.destroy(linger=0)
        collector.terminate()
        out, _ = collector.communicate(timeout=20)
    assert collector.returncode == 0, out
    assert "watchlists: snapshots on" in out
