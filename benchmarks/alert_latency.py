"""Time from a plate's first read to its hit stored at the collector, on a live RTSP stream.

The tollbooth clip (or any clip) is served once through, at its own rate, by GStreamer's RTSP
server (tests/helpers/rtsp_server.py, `make rtsp`) to a real edge node (`anpr-edge run`)
sending to a real collector (`anpr-collector run`), both on loopback, whose watchlist holds
every plate the clip reads (read first from the file, by the same pipeline). For each
listed plate: latency = when the collector stored its first hit (`received_at`) - when the
node first read the plate (the wall clock of its pass's first read, from the node's pass
lines: seen_at - (last_seen - first_seen)).

    flock /work/bench.lock timeout 1200 python -m benchmarks.alert_latency \
        [--tree DIR] [--clip FILE] [--out result.json]

`--tree` runs the edge and collector of another checkout (PYTHONPATH=DIR), to compare
with it in one run; the clip's plates are read with this checkout's pipeline either way.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the RTSP camera is the tests' helper

from helpers.rtsp_camera import RtspCamera, unavailable  # noqa: E402

from edge.core.keys import generate_keypair  # noqa: E402
from edge.node.config import PipelineConfig  # noqa: E402
from edge.node.engines import Engines  # noqa: E402
from edge.node.pipeline import VideoPipeline  # noqa: E402
from edge.node.sources import VideoFileSource  # noqa: E402

CLIP = REPO.parent / "shared" / "data" / "video" / "tollbooth-vn-720p.mp4"
PASSWORD = "bench-Pw.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clip_plates(clip: Path) -> list[str]:
    """The plates the pipeline reads in `clip`, read from the file."""
    pipeline = VideoPipeline(Engines.load(), PipelineConfig(), "bench")
    texts: list[str] = []
    with VideoFileSource(clip, source_id="bench") as source:
        for result in pipeline.run(source):
            texts += [e.text for e in result.events]
    texts += [e.text for e in pipeline.finish()]
    return sorted(set(texts))


def write_frames(clip: Path, folder: Path) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
    fps = cap.get(cv2.CAP_PROP_FPS) or 18.0
    n = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        cv2.imwrite(str(folder / f"{n:04d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        n += 1
    cap.release()
    return n, fps


def env_of(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    env["PYTHONPATH"] = str(tree)
    return env


def wait(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def run(tree: Path, clip: Path, plates: list[str], work: Path) -> dict[str, object]:
    frames = work / "frames"
    frames.mkdir()
    n_frames, fps = write_frames(clip, frames)
    creds = work / "creds"
    generate_keypair(creds / "collector", "collector")
    generate_keypair(creds / "edge", "edge-bench")
    (creds / "allowed").mkdir()
    shutil.copy(creds / "edge" / "edge-bench.key", creds / "allowed" / "edge-bench.key")
    shutil.copy(creds / "collector" / "collector.key", creds / "edge" / "collector.key")
    hits_port, wl_port = free_port(), free_port()
    data = work / "collector-data"
    collector_yaml = work / "collector.yaml"
    collector_yaml.write_text(
        f"listen: tcp://127.0.0.1:{hits_port}\ndata_dir: {data}\n"
        f"credentials_dir: {creds / 'collector'}\nallowed_keys_dir: {creds / 'allowed'}\n"
        "heartbeat_flush_s: 0.05\nwatchlists:\n"
        f"  snapshot: tcp://127.0.0.1:{wl_port}\n  publish: tcp://127.0.0.1:{free_port()}\n")
    listed = work / "listed.csv"
    listed.write_text("plate,country,category,priority,reason,agency,added_by\n" + "".join(
        f"{p},,stolen_vehicle,1,bench,T-POL,bench\n" for p in plates))
    env = env_of(tree)
    subprocess.run([sys.executable, "-m", "edge.collector.cli", "watchlist", "import",
                    str(listed), "--list", "bench", "--config", str(collector_yaml)],
                   check=True, env=env, capture_output=True, timeout=120)
    camera = RtspCamera(frames, free_port(), work / "rtsp.log", password=PASSWORD, rate=fps)
    camera.start()
    clog = (work / "collector.log").open("wb")
    collector = subprocess.Popen([sys.executable, "-m", "edge.collector.cli", "run", "--config",
                                  str(collector_yaml)], stdout=clog, stderr=subprocess.STDOUT,
                                 env=env)
    edge = None
    try:
        wait(lambda: "collector listening on" in (work / "collector.log").read_text(
            errors="replace"), 60, "the collector")
        edge_yaml = work / "edge.yaml"
        edge_yaml.write_text(
            f"node_id: edge-bench\nstate_dir: {work / 'edge-state'}\n"
            f"link: {{collector: 'tcp://127.0.0.1:{hits_port}', "
            f"credentials_dir: '{creds / 'edge'}', heartbeat_s: 1}}\n"
            f"watchlists: {{collector: 'tcp://127.0.0.1:{wl_port}', startup_wait_s: 60}}\n"
            f"cameras:\n  - id: booth\n    source: '{camera.url()}'\n")
        elog = (work / "edge.log").open("w")
        edge = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config",
                                 str(edge_yaml)], stdout=subprocess.PIPE, stderr=elog, text=True,
                                env=env)
        camera.wait_for_line("streaming", 120)
        started = time.monotonic()
        # one time through the clip (the server loops it), and the last pass's time to end
        wait(lambda: time.monotonic() - started > n_frames / fps + 3.0, 120, "the clip")
        edge.send_signal(signal.SIGTERM)
        out, _ = edge.communicate(timeout=60)
        time.sleep(1.0)  # the collector commits what the node drained
    finally:
        if edge is not None and edge.poll() is None:
            edge.kill()
        camera.stop()
        collector.send_signal(signal.SIGTERM)
        collector.wait(30)
    passes = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    with sqlite3.connect(data / "hits.db") as db:
        rows = db.execute("SELECT entry_plate, plate_text, received_at FROM hits").fetchall()
    return measure(passes, rows, plates, clip_s=n_frames / fps)


def _wall(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def measure(passes: list[dict], rows: list[tuple], plates: list[str],
            clip_s: float) -> dict[str, object]:
    """Per listed plate: its first hit's storing less its pass's first read."""
    first_read: dict[str, float] = {}
    for p in passes:
        t = _wall(p["seen_at"]) - (p["last_seen"] - p["first_seen"])
        first_read[p["text"]] = min(t, first_read.get(p["text"], t))
    latency: dict[str, float] = {}
    for entry in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == entry]
        texts = {entry} | {r[1] for r in mine}
        reads = [first_read[t] for t in texts if t in first_read]
        if reads:
            latency[entry] = round(min(_wall(r[2]) for r in mine) - min(reads), 3)
    values = sorted(latency.values())
    return {
        "listed": len(plates), "passes": len(passes), "hits": len(rows),
        "plates_hit": len(latency), "clip_s": round(clip_s, 2),
        "median_s": round(statistics.median(values), 3) if values else None,
        "max_s": max(values) if values else None, "latency_s": latency,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=REPO)
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--plates", help="the listed plates, comma-separated (default: read "
                    "them from the clip)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    why = unavailable()
    if why:
        print(f"skipped: {why}", file=sys.stderr)
        return 2
    plates = args.plates.split(",") if args.plates else clip_plates(args.clip)
    with tempfile.TemporaryDirectory(prefix="alert-latency-") as tmp:
        result = {"tree": str(args.tree), "clip": args.clip.name, "plates": plates,
                  **run(args.tree.resolve(), args.clip, plates, Path(tmp))}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
