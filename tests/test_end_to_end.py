"""The whole product on loopback: a watchlist imported at the collector reaches a real edge
node, the node reads a drive-by clip with the real models, and the hit for the listed
plate arrives at the collector once, with its pictures; the plates nobody listed stay on
the node."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys

import pytest
from helpers.link import child_env, free_port, make_keys, wait_for

from edge.synthetic.drive_by import SyntheticDriveBy


@pytest.mark.models
def test_a_listed_plate_read_at_the_edge_reaches_the_collector_once(engines, tmp_path):
    clip = SyntheticDriveBy.default(0, vehicles=4, night=1)
    video = tmp_path / "drive-by.mp4"
    clip.write_video(video)
    wanted = clip.truth[1]  # a day pass in the middle of the clip
    others = {p.plate for p in clip.truth} - {wanted.plate}

    keys = make_keys(tmp_path)
    keys.edge("edge-e2e")
    creds = keys.edge_dir("edge-e2e")
    (creds / "collector.key").write_bytes((keys.collector_dir / "collector.key").read_bytes())
    hits_port, wl_port = free_port(), free_port()
    data = tmp_path / "collector-data"
    collector_yaml = tmp_path / "collector.yaml"
    collector_yaml.write_text(
        f"listen: tcp://127.0.0.1:{hits_port}\n"
        f"data_dir: {data}\n"
        f"credentials_dir: {keys.collector_dir}\n"
        f"allowed_keys_dir: {keys.allowed_dir}\n"
        "heartbeat_flush_s: 0.05\n"
        "watchlists:\n"
        f"  snapshot: tcp://127.0.0.1:{wl_port}\n"
        f"  publish: tcp://127.0.0.1:{free_port()}\n"
    )
    listed = tmp_path / "stolen.csv"
    listed.write_text("plate,country,category,priority,reason,agency,added_by\n"
                      f"{wanted.plate},,stolen_vehicle,1,stolen at a test site,T-POL,tester\n")
    cli = [sys.executable, "-m", "edge.collector.cli"]
    subprocess.run([*cli, "watchlist", "import", str(listed), "--list", "stolen",
                    "--config", str(collector_yaml)], check=True, env=child_env(),
                   capture_output=True, timeout=60)

    collector_log = tmp_path / "collector.log"
    with collector_log.open("wb") as log:
        collector = subprocess.Popen([*cli, "run", "--config", str(collector_yaml)],
                                     stdout=log, stderr=subprocess.STDOUT, env=child_env())
    edge = None
    try:
        wait_for(lambda: "collector listening on" in collector_log.read_text(errors="replace")
                 or collector.poll() is not None, 30, "the collector to listen")
        assert collector.poll() is None, collector_log.read_text()

        edge_yaml = tmp_path / "edge.yaml"
        edge_yaml.write_text(
            "node_id: edge-e2e\n"
            f"state_dir: {tmp_path / 'edge-state'}\n"
            f"link: {{collector: 'tcp://127.0.0.1:{hits_port}', "
            f"credentials_dir: '{creds}', heartbeat_s: 0.5}}\n"
            f"watchlists: {{collector: 'tcp://127.0.0.1:{wl_port}', startup_wait_s: 20}}\n"
            "cameras:\n"
            f"  - id: lane-1\n    source: {video}\n"
            "    location: {lat: 54.9, lon: 23.9, road: A1 km 10, direction: to LT}\n"
        )
        edge = subprocess.run(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(edge_yaml)],
            env=child_env(), capture_output=True, text=True, timeout=240)
        assert edge.returncode == 0, edge.stderr[-3000:]
        passes = [json.loads(line) for line in edge.stdout.splitlines() if line.startswith("{")]
        assert wanted.plate in {p["text"] for p in passes}, (passes, edge.stderr[-2000:])

        db = data / "hits.db"

        def stored() -> list[tuple]:
            with sqlite3.connect(db) as con:
                return con.execute("SELECT plate_text, watchlist, match_kind, camera, node,"
                                   " crop_bytes, scene_bytes FROM hits").fetchall()

        wait_for(lambda: db.exists() and stored(), 30, "the hit at the collector")
        rows = stored()
        assert [r[:5] for r in rows] == [(wanted.plate, "stolen", "exact", "lane-1", "edge-e2e")]
        crop_bytes, scene_bytes = rows[0][5:]
        assert crop_bytes > 500 and scene_bytes > 5000  # the evidence came with it

        # the other plates were read, but never left the node
        with sqlite3.connect(tmp_path / "edge-state" / "outbox.db") as con:
            kept = {r[0] for r in con.execute("SELECT plate FROM reads")}
            backlog = con.execute("SELECT COUNT(*) FROM hits").fetchone()[0]
        assert others & kept and not (others & {r[0] for r in rows})
        assert backlog == 0  # delivered and acknowledged before the node stopped
    finally:
        if collector.poll() is None:
            collector.send_signal(signal.SIGTERM)
            collector.wait(20)

