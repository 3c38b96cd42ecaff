"""Time from a plate's first readable frame to its hit stored at the collector, live RTSP.

The tollbooth clip (or any clip) is served once through, at its own rate, by GStreamer's RTSP
server (tests/helpers/rtsp_server.py, `make rtsp`) to a real edge node (`anpr-edge run`)
sending to a real collector (`anpr-collector run`), both on loopback, whose watchlist holds
every plate the clip reads. Before the clip (`--lead-s`) and after it the server shows an
empty grey scene: the clip is served once, never looped.

Both ends of the figure are clocks the node does not own:
- the start: the wall clock at which the server pushed the plate's first readable frame
  into its encoder (its `--push-log`), on the first time through;
- the end: when the collector stored the plate's first hit (`received_at`).
"First readable" is the first frame of the plate's pass with a read of real text (3 or more
characters: the pass's `first_seen`), found beforehand by reading the very JPEG frames the
server serves with this checkout's pipeline, analysing every frame. The node's own view
(its pass lines: seen_at - (last_seen - first_seen)) is reported beside it, as
`node_clock_latency_s`, to show how far the node's clock can be trusted.

    flock /work/bench.lock timeout 1200 python -m benchmarks.alert_latency \
        [--tree DIR] [--tree-models DIR] [--clip FILE] [--hold FRAME:SECONDS] [--out FILE]

`--tree` runs the edge and collector of another checkout (PYTHONPATH=DIR; `--tree-models`
its ANPR_MODELS_DIR), to compare with it in one run; the plates and their first readable
frames are read with this checkout's pipeline either way. `--hold F:S` shows frame F for S
seconds more (a car held at the booth), with a little sensor noise on each copy. The
result is printed as one JSON line (last), so `python -m benchmarks alert-latency` keeps it.
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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the RTSP camera is the tests' helper

from helpers.rtsp_camera import RtspCamera, unavailable  # noqa: E402

from edge.core.keys import generate_keypair  # noqa: E402
from edge.core.types import PlateEvent  # noqa: E402
from edge.node.config import PipelineConfig  # noqa: E402
from edge.node.engines import Engines  # noqa: E402
from edge.node.pipeline import VideoPipeline  # noqa: E402
from edge.node.sources import ImageFolderSource  # noqa: E402

CLIP = REPO.parent / "shared" / "data" / "video" / "tollbooth-vn-720p.mp4"
PASSWORD = "bench-Pw.1"
# The empty scene served before the clip: the node has connected, FFmpeg has probed the
# stream and the models are warm when the first plate shows (a plate at frame 0 would
# otherwise count the connection's set-up, ~1.6 s here).
LEAD_S = 3.0
TAIL_S = 6.0  # the empty scene served after the clip: the last pass ends and is sent
HOLD_NOISE = 2.0  # sensor noise on a held frame (sd, grey levels): a held car is no frozen camera


@dataclass(frozen=True)
class Readable:
    """Where the reference read found a plate: its pass's first read with real text, and the
    first frame read exactly as the plate."""

    plate: str
    first_frame: int
    exact_frame: int | None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_frames(clip: Path, folder: Path, hold: tuple[int, float] | None = None,
                 lead_s: float = 0.0) -> tuple[int, float]:
    """The clip's frames as JPEGs in `folder`, after `lead_s` of an empty grey scene, frame
    `hold[0]` of the clip shown `hold[1]` s more."""
    cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
    fps = cap.get(cv2.CAP_PROP_FPS) or 18.0
    rng = np.random.default_rng(0)
    n = i = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        copies = [np.full_like(image, 128)] * round(lead_s * fps) if i == 0 else []
        copies.append(image)
        if hold is not None and i == hold[0]:
            for _ in range(round(hold[1] * fps)):
                noise = rng.normal(0.0, HOLD_NOISE, image.shape)
                copies.append(np.clip(image + noise, 0, 255).astype(np.uint8))
        for picture in copies:
            cv2.imwrite(str(folder / f"{n:05d}.jpg"), picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
            n += 1
        i += 1
    cap.release()
    if hold is not None and hold[0] >= i:
        raise ValueError(f"--hold frame {hold[0]}: the clip has {i} frames")
    return n, fps


def read_reference(frames: Path, fps: float) -> list[Readable]:
    """The plates this checkout's pipeline reads in `frames`, every frame analysed, each with
    the frame its pass first read real text in (the earliest pass of that text)."""
    pipeline = VideoPipeline(Engines.load(), PipelineConfig(analysis_fps=min(fps, 120.0)),
                             "bench")
    events: list[PlateEvent] = []
    exact: dict[str, int] = {}
    with ImageFolderSource(frames, source_id="bench", fps=fps) as source:
        for result in pipeline.run(source):
            events += result.events
            for read in result.reads:
                exact.setdefault(read.plate.text, read.frame_index)
    events += pipeline.finish()
    first: dict[str, int] = {}
    for e in events:
        index = round(e.first_seen * fps)
        first[e.text] = min(index, first.get(e.text, index))
    return [Readable(text, index, exact.get(text)) for text, index in sorted(first.items())]


def env_of(tree: Path, models: Path | None) -> dict[str, str]:
    """The environment of `tree`'s processes. They also run in `tree` (cwd): `python -m`
    puts the working directory before PYTHONPATH, so from another checkout they would
    import its code (the first version of this benchmark ran this checkout's edge and
    collector as "the base")."""
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    env["PYTHONPATH"] = str(tree)
    if models is not None:
        env["ANPR_MODELS_DIR"] = str(models)
    return env


def imported_from(tree: Path, env: dict[str, str]) -> Path:
    """The edge package `tree`'s processes import, checked to be `tree`'s own."""
    done = subprocess.run([sys.executable, "-c", "import edge; print(edge.__file__)"],
                          env=env, cwd=tree, capture_output=True, text=True, check=True,
                          timeout=60)
    where = Path(done.stdout.strip()).resolve().parent.parent
    if where != tree.resolve():
        raise RuntimeError(f"the processes of {tree} would import the edge package of {where}")
    return where


def wait(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def pushed(text: str) -> dict[int, dict[int, float]]:
    """The server's push log (`client index wall` lines): per client, frame index -> wall.
    A last line without its newline (being written, or cut by the server's end) is left out."""
    out: dict[int, dict[int, float]] = {}
    for line in text.split("\n")[:-1]:
        words = line.split()
        if len(words) != 3:
            continue
        try:
            client, index, wall = int(words[0]), int(words[1]), float(words[2])
        except ValueError:
            continue
        out.setdefault(client, {}).setdefault(index, wall)
    return out


def _wall(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def latencies(readable: Iterable[Readable], pushes: dict[int, float],
              hits: Iterable[tuple[str, str]], n_frames: int) -> dict[str, float | None]:
    """Per listed plate: when the collector stored its first hit (`hits`: entry plate,
    received_at) less when the server pushed the plate's first readable frame (`pushes`:
    one client's frame index -> wall) the first time through the `n_frames` of the clip.
    None: no hit, or the frame was never pushed on the first time through."""
    first_hit: dict[str, float] = {}
    for entry, received in hits:
        t = _wall(received)
        first_hit[entry] = min(t, first_hit.get(entry, t))
    out: dict[str, float | None] = {}
    for r in readable:
        start = pushes.get(r.first_frame) if r.first_frame < n_frames else None
        hit = first_hit.get(r.plate)
        out[r.plate] = None if start is None or hit is None else round(hit - start, 3)
    return out


def node_clock(passes: Iterable[dict], hits: Iterable[tuple[str, str]]) -> dict[str, float]:
    """The old figure, on the node's clock: first hit stored less the wall the node gives its
    pass's first read (seen_at - (last_seen - first_seen))."""
    first_read: dict[str, float] = {}
    for p in passes:
        t = _wall(p["seen_at"]) - (p["last_seen"] - p["first_seen"])
        first_read[p["text"]] = min(t, first_read.get(p["text"], t))
    first_hit: dict[str, float] = {}
    for entry, received in hits:
        t = _wall(received)
        first_hit[entry] = min(t, first_hit.get(entry, t))
    return {k: round(v - first_read[k], 3) for k, v in sorted(first_hit.items())
            if k in first_read}


def summary(values: Iterable[float | None]) -> dict[str, float | int | None]:
    got = sorted(v for v in values if v is not None)
    return {"median_s": round(statistics.median(got), 3) if got else None,
            "max_s": max(got) if got else None, "missing": sum(1 for v in values if v is None)}


def run(tree: Path, models: Path | None, frames: Path, n_frames: int, fps: float,
        readable: list[Readable], work: Path) -> dict[str, object]:
    plates = [r.plate for r in readable]
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
    env = env_of(tree, models)
    imported_from(tree, env)
    subprocess.run([sys.executable, "-m", "edge.collector.cli", "watchlist", "import",
                    str(listed), "--list", "bench", "--config", str(collector_yaml)],
                   check=True, env=env, cwd=tree, capture_output=True, timeout=120)
    grey = work / "empty.jpg"
    first = cv2.imread(str(sorted(frames.glob("*.jpg"))[0]))
    cv2.imwrite(str(grey), np.full_like(first, 128))
    push_log = work / "pushes.txt"
    camera = RtspCamera(frames, free_port(), work / "rtsp.log", password=PASSWORD, rate=fps,
                        push_log=push_log, then=grey)
    camera.start()
    clog = (work / "collector.log").open("wb")
    collector = subprocess.Popen([sys.executable, "-m", "edge.collector.cli", "run", "--config",
                                  str(collector_yaml)], stdout=clog,
                                 stderr=subprocess.STDOUT, env=env, cwd=tree)
    edge = None
    out = ""
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
                                 str(edge_yaml)], stdout=subprocess.PIPE, stderr=elog,
                                text=True, env=env, cwd=tree)
        camera.wait_for_line("streaming", 120)
        # the first client's clip through, then the empty scene for the last pass to end
        due = n_frames + round(TAIL_S * fps)
        wait(lambda: len(pushed(push_log.read_text()).get(1, {})) > due,
             3 * (n_frames / fps + TAIL_S) + 60, "the clip")
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
        rows = db.execute("SELECT entry_plate, received_at, seen_at FROM hits").fetchall()
    hits = [(r[0], r[1]) for r in rows]
    clients = pushed(push_log.read_text())
    latency = latencies(readable, clients.get(1, {}), hits, n_frames)
    old = node_clock(passes, hits)
    return {
        "listed": len(plates), "passes": len(passes), "hits": len(rows),
        "clients": len(clients), "frames": n_frames, "clip_s": round(n_frames / fps, 2),
        **summary(latency.values()), "latency_s": latency,
        "first_readable_frame": {r.plate: r.first_frame for r in readable},
        "first_exact_frame": {r.plate: r.exact_frame for r in readable},
        "node_clock_median_s": summary(old.values())["median_s"],
        "node_clock_latency_s": old,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=REPO)
    ap.add_argument("--tree-models", type=Path,
                    help="ANPR_MODELS_DIR for the tree's edge and collector (default: as set)")
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--hold", help="FRAME:SECONDS: show the clip's frame FRAME that much "
                    "longer (a car held in view)")
    ap.add_argument("--lead-s", type=float, default=LEAD_S,
                    help=f"seconds of empty scene before the clip (default {LEAD_S:g})")
    ap.add_argument("--plates", help="the listed plates, comma-separated (default: every "
                    "plate read in the clip)")
    ap.add_argument("--keep", type=Path, help="keep the logs, push log and databases here")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    why = unavailable()
    if why:
        print(f"skipped: {why}", file=sys.stderr)
        return 2
    hold = None
    if args.hold:
        frame, seconds = args.hold.split(":")
        hold = (int(frame), float(seconds))
    with tempfile.TemporaryDirectory(prefix="alert-latency-") as tmp:
        work = Path(tmp)
        frames = work / "frames"
        frames.mkdir()
        n_frames, fps = write_frames(args.clip, frames, hold, args.lead_s)
        readable = read_reference(frames, fps)
        if args.plates:
            wanted = set(args.plates.split(","))
            readable = [r for r in readable if r.plate in wanted]
        result = {"tree": str(args.tree), "clip": args.clip.name, "hold": args.hold,
                  "lead_s": args.lead_s,
                  "plates": [r.plate for r in readable],
                  **run(args.tree.resolve(), args.tree_models, frames, n_frames, fps,
                        readable, work)}
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("frames", "creds"))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
