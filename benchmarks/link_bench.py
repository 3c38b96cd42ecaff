"""Link benchmark: many simulated edges send hits to a real collector process over loopback.

    python -m benchmarks.link_bench                      # 50 edges, 1,000 hits/s, 60 s
    python -m benchmarks.link_bench --duration 300       # the 5-minute soak
    python -m benchmarks.link_bench --rate 0             # as fast as acks allow (capacity)

The collector is `anpr-collector run` in its own process, CURVE on, one key per edge
on its allow-list.  The simulated edges (one process, one DEALER socket and key pair
each) send version-2 hits carrying a ~5 KB crop and a ~50 KB scene (random bytes
behind a JPEG marker: the collector stores pictures, it does not decode them) at a
fixed offered rate, and time each one from send to acknowledgement; a hit not
acknowledged within 5 s is sent again, as an edge would.  For the second half of
the run, a second process of `--heartbeat-nodes` nodes (their own keys too) sends
a heartbeat each, all together, once a second, and the latency of hits in the two
halves is compared.  The collector's RSS is read from /proc at the start of the
measured run and at its end.  The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from edge.core.keys import generate_keypair, make_curve_client
from edge.core.link_protocol import (
    JPEG_MAGIC,
    Ack,
    CameraLocation,
    Heartbeat,
    HitMessage,
    HitPlate,
    WatchlistMatch,
    decode_message,
    new_hit_id,
)

ACK_TIMEOUT_S = 5.0
CONNECT_S = 5.0  # the heartbeat nodes start connecting this long before they beat


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ack_histogram(port: int) -> list[tuple[float, float]]:
    """The collector's receipt-to-ack histogram: (upper bound in ms, cumulative count)."""
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = []
    for line in text.splitlines():
        if line.startswith("anpr_collector_ack_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            ms = float("inf") if bound == "+Inf" else float(bound) * 1000
            out.append((ms, float(line.rsplit(" ", 1)[1])))
    return out


def _hist_p99(before: list[tuple[float, float]] | None, after: list[tuple[float, float]] | None):
    """p99 (a bucket's upper bound, ms) of what the histogram gained between two scrapes."""
    if not before or not after:
        return None
    counts = [(b, a - c) for (b, a), (_, c) in zip(after, before, strict=True)]
    total = counts[-1][1]
    if total <= 0:
        return None
    for bound, n in counts:
        if n >= 0.99 * total:
            return bound
    return float("inf")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


def _fake_jpeg(size: int, rng: random.Random) -> bytes:
    return JPEG_MAGIC + rng.randbytes(size - len(JPEG_MAGIC) - 2) + b"\xff\xd9"


def _write_public_keys(names: list[str], keys_dir: Path, allowed: Path) -> None:
    for name in names:
        generate_keypair(keys_dir, name)
        shutil.copy(keys_dir / f"{name}.key", allowed / f"{name}.key")


def _start_collector(
    work: Path, port: int, log_path: Path, io_threads: int, metrics_port: int
) -> subprocess.Popen[bytes]:
    cfg = work / "collector.yaml"
    cfg.write_text(
        f"listen: tcp://127.0.0.1:{port}\n"
        f"data_dir: {work / 'data'}\n"
        f"credentials_dir: {work / 'collector-creds'}\n"
        f"allowed_keys_dir: {work / 'allowed'}\n"
        f"io_threads: {io_threads}\n"
        f"metrics_port: {metrics_port}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "edge.collector.cli", "run", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- heartbeat swarm


def _heartbeat_swarm(
    endpoint: str, keys_dir: str, server_key: bytes, names: list[str], seconds: float, q: mp.Queue
) -> None:
    ctx = zmq.Context(io_threads=1)
    ctx.max_sockets = len(names) + 64
    socks = []
    for name in names:
        from edge.core.keys import load_keypair

        pub, sec = load_keypair(Path(keys_dir), name)
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.immediate = True
        make_curve_client(s, pub, sec, server_key)
        s.connect(endpoint)
        socks.append((name, s))
    sent = unsent = 0
    end = time.monotonic() + seconds
    next_beat = time.monotonic()
    while time.monotonic() < end:
        time.sleep(max(0.0, next_beat - time.monotonic()))
        next_beat += 1.0
        for name, s in socks:  # all of them at once
            status = {"node": name, "health": {"ok": True, "problems": []},
                      "cameras": {"cam1": {"state": "live", "ok": True, "fps": 12.5},
                                  "cam2": {"state": "live", "ok": True, "fps": 12.4}},
                      "outbox": {"backlog": 0}}  # fmt: skip
            try:
                s.send_multipart(Heartbeat(name, status).encode(), zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                unsent += 1  # not connected yet
    for _, s in socks:
        s.close()
    ctx.term()
    q.put({"heartbeats_sent": sent, "heartbeats_unsent": unsent})


# ---------------------------------------------------------------- hit edges


class _Edges:
    def __init__(self, ctx: zmq.Context, endpoint: str, keys_dir: Path, server_key: bytes,
                 names: list[str], crop_kb: float, scene_kb: float):  # fmt: skip
        from edge.core.keys import load_keypair

        self.names = names
        self.socks: list[zmq.Socket] = []
        self.poller = zmq.Poller()
        for name in names:
            pub, sec = load_keypair(keys_dir, name)
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.immediate = True
            s.sndhwm = 10_000
            make_curve_client(s, pub, sec, server_key)
            s.connect(endpoint)
            self.socks.append(s)
            self.poller.register(s, zmq.POLLIN)
        rng = random.Random(7)
        self.crop = _fake_jpeg(int(crop_kb * 1024), rng)
        self.scene = _fake_jpeg(int(scene_kb * 1024), rng)
        self.inflight: dict[str, tuple[float, int, list[bytes]]] = {}  # id -> sent, edge, frames
        self.lat: list[tuple[float, float]] = []  # (ack time, ms)
        self.sent = self.resent = self.acked = self.unsent = 0
        self.acked_ids: set[str] = set()

    def make(self, edge: int, seq: int) -> list[bytes]:
        hit = HitMessage(
            node=self.names[edge],
            camera="cam1",
            seen_at=dt.datetime.now(dt.UTC),
            plate=HitPlate(text=f"B{seq % 100000:05d}X", raw=f"B {seq % 100000:05d} X",
                           formatted=f"B {seq % 100000:05d} X", country="DE", confidence=0.93),
            match=WatchlistMatch(watchlist="stolen", entry_id=str(seq % 997), priority=seq % 5,
                                 reason="stolen vehicle"),
            location=CameraLocation(52.52, 13.40, "A4 km 112", "eastbound"),
            crop_jpeg=self.crop,
            scene_jpeg=self.scene,
            hit_id=new_hit_id(),
        )  # fmt: skip
        return hit.encode()

    def send(self, edge: int, frames: list[bytes], hit_id: str, resend: bool = False) -> bool:
        try:
            self.socks[edge].send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.unsent += 1
            return False
        self.inflight[hit_id] = (time.perf_counter(), edge, frames)
        if resend:
            self.resent += 1
        else:
            self.sent += 1
        return True

    def receive(self, timeout_ms: float) -> None:
        for sock, _ in self.poller.poll(timeout_ms):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = decode_message(frames)
                if not isinstance(msg, Ack):
                    continue
                now = time.perf_counter()
                for hit_id in msg.ids:
                    entry = self.inflight.pop(hit_id, None)
                    if entry is not None:
                        self.lat.append((now, (now - entry[0]) * 1000))
                    if hit_id not in self.acked_ids:
                        self.acked_ids.add(hit_id)
                        self.acked += 1

    def resend_late(self) -> None:
        now = time.perf_counter()
        late = [(i, e) for i, e in self.inflight.items() if now - e[0] > ACK_TIMEOUT_S]
        for hit_id, (_, edge, frames) in late:
            del self.inflight[hit_id]
            self.send(edge, frames, hit_id, resend=True)

    def close(self) -> None:
        for s in self.socks:
            s.close()


def _wait_connected(edges: _Edges, deadline_s: float) -> None:
    """Send one hit per edge until all are acknowledged (CURVE handshakes done, tables warm)."""
    end = time.monotonic() + deadline_s
    pending = set(range(len(edges.socks)))
    seq = 0
    while pending and time.monotonic() < end:
        for e in list(pending):
            frames = edges.make(e, seq)
            seq += 1
            hit_id = json.loads(frames[1])["id"]
            if edges.send(e, frames, hit_id):
                pending.discard(e)
        edges.receive(100)
    while edges.inflight and time.monotonic() < end:
        edges.receive(100)
    if pending or edges.inflight:
        raise SystemExit("edges could not reach the collector")


def run(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="link-bench-", dir=args.work_dir))
    try:
        return _run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    (work / "allowed").mkdir(parents=True)
    keys_dir = work / "edge-keys"
    server_key, _ = generate_keypair(work / "collector-creds", "collector")
    edge_names = [f"edge{i:03d}" for i in range(args.edges)]
    hb_names = [f"hb{i:04d}" for i in range(args.heartbeat_nodes)]
    _write_public_keys(edge_names + hb_names, keys_dir, work / "allowed")
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    metrics = _free_port()
    collector = _start_collector(work, port, work / "collector.log", args.io_threads, metrics)
    scrape = lambda: _ack_histogram(metrics)  # noqa: E731
    ctx = zmq.Context(io_threads=1)
    ctx.max_sockets = args.edges + 64
    edges = _Edges(ctx, endpoint, keys_dir, server_key, edge_names, args.crop_kb, args.scene_kb)
    swarm = None
    try:
        _wait_connected(edges, 30)
        warm_sent = edges.sent
        edges.unsent = 0  # the warm-up's tries before each handshake completed
        edges.lat.clear()
        rss_start = _rss_mb(collector.pid)
        rss_samples = [rss_start]
        cpu_collector_start = _cpu_s(collector.pid)
        hists = {"start": scrape()}
        cpu_self_start = time.process_time()
        q: mp.Queue = mp.get_context("spawn").Queue()
        half = args.duration / 2 if args.heartbeat_nodes else args.duration
        t0 = time.perf_counter()
        t_half = t0 + half
        t_end = t0 + args.duration
        interval = 1.0 / args.rate if args.rate > 0 else 0.0
        next_send = t0
        next_report = t0 + 10
        next_resend_check = t0 + 1
        seq = 0
        window = args.window
        while True:
            now = time.perf_counter()
            if now >= t_end:
                break
            if "storm" not in hists and now >= t_half - (CONNECT_S if args.heartbeat_nodes else 0):
                hists["storm"] = scrape()
            if "half" not in hists and now >= t_half:
                hists["half"] = scrape()
            if swarm is None and args.heartbeat_nodes and now >= t_half - CONNECT_S:
                # Started early: its 1,000 CURVE handshakes are a storm of their own,
                # measured apart from the heartbeats.
                swarm = mp.get_context("spawn").Process(
                    target=_heartbeat_swarm,
                    args=(endpoint, str(keys_dir), server_key, hb_names, t_end - now, q),
                    daemon=True,
                )
                swarm.start()
            if interval:
                while next_send <= now:  # catch up on every hit that is due
                    e = seq % args.edges
                    frames = edges.make(e, seq)
                    edges.send(e, frames, json.loads(frames[1])["id"])
                    seq += 1
                    next_send += interval
                # Wake at most every 2 ms and send what is due: polling 50 sockets every
                # millisecond would cost this process more than the collector spends.
                timeout = max(2.0, (next_send - time.perf_counter()) * 1000)
            else:
                while len(edges.inflight) < window * args.edges:
                    e = seq % args.edges
                    frames = edges.make(e, seq)
                    if not edges.send(e, frames, json.loads(frames[1])["id"]):
                        break
                    seq += 1
                timeout = 50
            edges.receive(min(timeout, 50))
            if now >= next_resend_check:
                edges.resend_late()
                next_resend_check = now + 1
            if now >= next_report:
                rss_samples.append(_rss_mb(collector.pid))
                recent = [ms for t, ms in edges.lat if t >= now - 10]
                print(
                    f"{now - t0:6.1f} s  sent {edges.sent - warm_sent}  acked/s(10 s) "
                    f"{len(recent) / 10:.0f}  p99 {_percentile(recent, 99):.1f} ms  "
                    f"collector rss {rss_samples[-1]:.0f} MB",
                    flush=True,
                )
                next_report = now + 10
        elapsed = time.perf_counter() - t0
        hists["end"] = scrape()
        cpu_collector = _cpu_s(collector.pid) - cpu_collector_start
        cpu_self = time.process_time() - cpu_self_start
        sent_in_run = edges.sent - warm_sent
        drain_end = time.monotonic() + 30
        while edges.inflight and time.monotonic() < drain_end:
            edges.receive(100)
            edges.resend_late()
        rss_end = _rss_mb(collector.pid)
        swarm_result = q.get(timeout=30) if swarm is not None else {}
    finally:
        edges.close()
        ctx.term()
        if swarm is not None:
            swarm.join(10)
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(30)
        except subprocess.TimeoutExpired:
            collector.kill()

    db = sqlite3.connect(work / "data" / "hits.db")
    stored = db.execute("SELECT count(*) FROM hits").fetchone()[0]
    hb_nodes_seen = db.execute(
        "SELECT count(*) FROM nodes WHERE node LIKE 'hb%' AND status IS NOT NULL"
    ).fetchone()[0]
    db.close()
    duplicates = _collector_duplicates(work / "collector.log")
    lat_all = [ms for t, ms in edges.lat if t0 <= t <= t0 + elapsed]
    storm_from = t_half - CONNECT_S if args.heartbeat_nodes else t_half
    lat_a = [ms for t, ms in edges.lat if t0 <= t < storm_from]
    lat_c = [ms for t, ms in edges.lat if storm_from <= t < t_half]
    lat_b = [ms for t, ms in edges.lat if t_half <= t <= t0 + elapsed]
    acked_in_run = len(lat_all)
    return {
        "edges": args.edges,
        "offered_rate": args.rate,
        "duration_s": round(elapsed, 1),
        "crop_bytes": len(edges.crop),
        "scene_bytes": len(edges.scene),
        "hits_per_s": round(acked_in_run / elapsed, 1),
        "ack_p50_ms": round(_percentile(lat_all, 50), 2),
        "ack_p99_ms": round(_percentile(lat_all, 99), 2),
        "ack_max_ms": round(max(lat_all, default=float("nan")), 2),
        "ack_p99_ms_hits_only": round(_percentile(lat_a, 99), 2),
        "ack_p99_ms_while_nodes_connect": round(_percentile(lat_c, 99), 2) if lat_c else None,
        # The same, timed inside the collector (receipt to ack, read from its histogram;
        # the bucket's upper bound): what the collector does, without this process's
        # own scheduling delays on a busy machine.
        "collector_ack_p99_ms": _hist_p99(hists["start"], hists["end"]),
        "collector_ack_p99_ms_hits_only": _hist_p99(hists["start"], hists.get("storm")),
        "collector_ack_p99_ms_with_heartbeats": (
            _hist_p99(hists.get("half"), hists["end"]) if args.heartbeat_nodes else None
        ),
        "ack_p99_ms_with_heartbeats": (
            round(_percentile(lat_b, 99), 2) if args.heartbeat_nodes and lat_b else None
        ),
        "heartbeat_nodes": args.heartbeat_nodes,
        "heartbeat_nodes_seen": hb_nodes_seen,
        **swarm_result,
        "sent": edges.sent,
        "sent_in_run": sent_in_run,
        "resent": edges.resent,
        "not_sent": edges.unsent,  # offered while an edge's link was not up (dropped)
        "acked": edges.acked,
        "stored": stored,
        "duplicates": duplicates,
        "lost": edges.sent - len(edges.acked_ids),
        "collector_cpu_ms_per_hit": round(cpu_collector * 1000 / max(acked_in_run, 1), 3),
        "edges_cpu_ms_per_hit": round(cpu_self * 1000 / max(acked_in_run, 1), 3),
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_mb_max": round(max(rss_samples + [rss_end]), 1),
        "rss_mb_every_10s": [round(x) for x in rss_samples],
    }


def _collector_duplicates(log_path: Path) -> int | None:
    """The collector's count of hits it already had (from its last stats line)."""
    value = None
    for line in log_path.read_text(errors="replace").splitlines():
        if "stats " in line and "duplicates" in line:
            try:
                value = json.loads(line.split("stats ", 1)[1]).get("duplicates", 0)
            except ValueError:
                continue
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.link_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--edges", type=int, default=50)
    p.add_argument("--rate", type=float, default=1000, help="offered hits/s, all edges; 0: max")
    p.add_argument("--window", type=int, default=8, help="hits in flight per edge with --rate 0")
    p.add_argument("--duration", type=float, default=60, help="seconds of measured run")
    p.add_argument("--crop-kb", type=float, default=5)
    p.add_argument("--scene-kb", type=float, default=50)
    p.add_argument("--heartbeat-nodes", type=int, default=1000)
    p.add_argument("--io-threads", type=int, default=1, help="the collector's ZeroMQ I/O threads")
    p.add_argument("--work-dir", default=None, help="where the collector's database goes")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
