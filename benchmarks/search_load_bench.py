"""`python -m benchmarks search-load`: what answering searches costs a node reading a live camera.

One node in this process, as `anpr-edge` runs it: the real pipeline (VideoPipeline) replays
a clip, unpaced and at real-time pace, its passes kept in an outbox that already holds
`--reads` reads (24 h at one a second, filled as `search_node_bench` fills it); the real
`SearchWorker` over the real `ReadSearch` answers, and the real `HitSender` takes the
signed queries on its CURVE DEALER.  The collector's side is a ROUTER (CURVE server,
loopback) in a child process, so its own work is not charged to the node: it sends a burst
of `--burst` queries at `--burst-at-s`, and one every `--interval-s` from the start,
modes in turn (exact, wildcard with two characters missed, fuzzy one edit away).

Each pace runs `--repeat` pairs of replays, alternating without and with queries (without,
with, without, with) after an untimed warm-up, so the ratios with / without come from one
run on one machine state.  The node's CPU (os.times: every thread of the process, the
search worker's and the sender's included) is divided by the frames analysed.  The
queries' own times are taken while the camera runs: round trip at the collector's
socket, and the search itself (wall and thread CPU) inside the node.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import queue
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from benchmarks import results
from benchmarks.datasets import resolve
from benchmarks.engines import engines_for, pipeline_config
from benchmarks.replay_bench import MAX_FRAME_MS, frame_count, video_source
from benchmarks.search_node_bench import CAMERAS, fill, queries
from edge.core.keys import (
    generate_keypair,
    generate_signing_keypair,
    load_keypair,
    load_signing_key,
    load_verify_key,
    make_curve_server,
    start_authenticator,
)
from edge.core.link_protocol import TAG_HEARTBEAT, TAG_HIT_V3, Ack, decode
from edge.core.search import (
    TAG_SEARCH_ANSWER,
    SearchQuery,
    SearchRead,
    decode_answer,
    new_query_id,
    sign_query,
)
from edge.node.config import PipelineConfig
from edge.node.engines import Engines
from edge.node.jpeg import jpeg_of_width
from edge.node.outbox import Outbox
from edge.node.pipeline import VideoPipeline
from edge.node.replay import ReplayStats, replay_events
from edge.node.search import ReadSearch, SearchWorker
from edge.node.sender import HitSender

DEFAULT_VIDEO = "video/tollbooth-vn-720p.mp4"
NODE = "edge-bench"
CAMERA = "cam-0"  # one of search_node_bench's cameras: the clip's reads join the day's
SEARCH_MS = 50.0  # the target for one node's search
# search_node_bench's query sets standing for the three modes
MODE_SETS = {"exact": "exact", "wildcard": "wildcard_two_missed", "fuzzy": "fuzzy_one_edit"}


# --------------------------------------------------------------------------- the collector


def _collector(root: str, commands: Any, replies: Any) -> None:
    """A child process: the collector's ROUTER, sending signed queries when told to."""
    base = Path(root)
    ctx = zmq.Context()
    public, secret = load_keypair(base / "collector", "collector")
    key = load_signing_key(base / "collector", "collector")
    auth = start_authenticator(ctx, base / "allowed")
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.router_mandatory = True
    make_curve_server(sock, public, secret)
    sock.bind("tcp://127.0.0.1:0")
    replies.put(("endpoint", sock.getsockopt_string(zmq.LAST_ENDPOINT)))
    ident: bytes | None = None
    plan: dict[str, Any] | None = None
    pending: list[tuple[float, dict[str, Any]]] = []  # (due, query) not yet sent
    out: dict[str, dict[str, Any]] = {}  # query id -> its record
    started = 0.0
    ready_sent = False
    try:
        while True:
            if sock.poll(5):
                while True:
                    try:
                        who, *frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if frames[0] == TAG_HEARTBEAT:
                        ident = who
                    elif frames[0] == TAG_HIT_V3:
                        sock.send_multipart([who, *Ack((decode(frames).hit_id,)).encode()])
                    elif frames[0] == TAG_SEARCH_ANSWER:
                        _answered(out, decode_answer(frames))
            if ident is not None and not ready_sent:
                replies.put(("ready", None))
                ready_sent = True
            try:
                cmd, arg = commands.get_nowait()
            except queue.Empty:
                cmd = None
            if cmd == "quit":
                return
            if cmd == "go":
                plan, out, started = arg, {}, time.perf_counter()
                pending = _schedule(plan)
            elif cmd == "stop":  # no more sent; wait for the answers still owed
                pending, plan = [], None
                end = time.monotonic() + 30
                while any("done" not in r for r in out.values()) and time.monotonic() < end:
                    if sock.poll(50):
                        who, *frames = sock.recv_multipart()
                        if frames[0] == TAG_SEARCH_ANSWER:
                            _answered(out, decode_answer(frames))
                replies.put(("records", list(out.values())))
            now = time.perf_counter() - started
            while pending and plan is not None and ident is not None and pending[0][0] <= now:
                _, q = pending.pop(0)
                _send(sock, ident, key, q, out, plan["ago_s"])
                if not pending:  # the stream goes on as long as the replay does
                    pending = _schedule(plan, after=len(out))
    finally:
        sock.close(0)
        auth.stop()
        ctx.term()


def _schedule(plan: dict[str, Any], after: int = 0) -> list[tuple[float, dict[str, Any]]]:
    """The next queries of `plan` with the second (from the phase's start) each is due."""
    pats: dict[str, list[tuple[str, str, float]]] = plan["patterns"]
    modes = list(pats)
    burst, interval = plan["burst"], plan["interval_s"]
    out: list[tuple[float, dict[str, Any]]] = []
    if after == 0:
        for k in range(burst):
            m = modes[k % len(modes)]
            out.append((plan["burst_at_s"], {"mode": m, "q": pats[m][k % len(pats[m])],
                                             "burst": True}))  # fmt: skip
    if interval > 0:
        first = max(0, after - burst)
        for k in range(first, first + 200):
            m = modes[k % len(modes)]
            out.append((k * interval, {"mode": m, "q": pats[m][(k // len(modes)) % len(pats[m])],
                                       "burst": False}))  # fmt: skip
    out.sort(key=lambda x: x[0])
    return out


def _send(sock: zmq.Socket, ident: bytes, key: Any, item: dict[str, Any],
          out: dict[str, dict[str, Any]], ago_s: float) -> None:  # fmt: skip
    pattern, mode, dist = item["q"]
    now = dt.datetime.now(dt.UTC)
    q = SearchQuery(query_id=new_query_id(), pattern=pattern, mode=mode, max_distance=dist,
                    since=now - dt.timedelta(seconds=ago_s), until=now + dt.timedelta(minutes=5),
                    nodes=(NODE,), case_ref="BENCH-LOAD", legal_basis="benchmark",
                    requested_by="bench", agency="bench")  # fmt: skip
    out[q.query_id] = {"mode": item["mode"], "burst": item["burst"], "sent": time.perf_counter(),
                       "chunks": 0, "rows": 0}  # fmt: skip
    sock.send_multipart([ident, *sign_query(q, key)])


def _answered(out: dict[str, dict[str, Any]], a: Any) -> None:
    rec = out.get(a.query_id)
    if rec is None:
        return
    now = time.perf_counter()
    rec.setdefault("first", now)
    rec["chunks"] += 1
    rec["rows"] += len(a.reads)
    if a.done:
        rec["done"] = now
        rec["total"] = a.total
        rec["refused"] = a.refused


# --------------------------------------------------------------------------- the node


class TimedSearch(ReadSearch):
    """The node's search, its time and its thread's CPU noted for each query."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.times: list[dict[str, Any]] = []

    def find(self, q: SearchQuery) -> tuple[list[SearchRead], int]:
        t0, c0 = time.perf_counter(), time.thread_time()
        found = super().find(q)
        self.times.append({"at": t0, "ms": (time.perf_counter() - t0) * 1000,
                           "cpu_ms": (time.thread_time() - c0) * 1000, "mode": q.mode,
                           "found": found[1]})  # fmt: skip
        return found


@dataclass
class Node:
    outbox: Outbox
    search: TimedSearch
    worker: SearchWorker
    sender: HitSender
    kept: list[str] = field(default_factory=list)  # passes the replays kept as reads

    def close(self) -> None:
        self.sender.stop()
        self.worker.stop()
        self.search.close()
        self.outbox.close()


def _keys(root: Path) -> None:
    generate_keypair(root / "collector", "collector")
    generate_signing_keypair(root / "collector", "collector")
    generate_keypair(root / "node", NODE)
    (root / "allowed").mkdir()
    shutil.copy(root / "node" / f"{NODE}.key", root / "allowed" / f"{NODE}.key")


def _node(root: Path, endpoint: str, ctx: zmq.Context) -> Node:
    # purge and disk budget out of the way: a purge's deletes would land in one phase only
    outbox = Outbox(root / "outbox.db", retention_s=24 * 3600, purge_every_s=1e9,
                    disk_budget_bytes=1 << 34)  # fmt: skip
    search = TimedSearch(outbox.path, retention_s=outbox.retention_s, cameras=CAMERAS)
    worker = SearchWorker(search, node_id=NODE,
                          verify_key=load_verify_key(root / "collector", "collector"))
    public, secret = load_keypair(root / "node", NODE)
    server_public, _ = load_keypair(root / "collector", "collector")
    # heartbeats every 2 s (not 10): the collector learns the node's socket soon
    sender = HitSender(outbox, endpoint, node_id=NODE, public_key=public, secret_key=secret,
                       server_key=server_public, ctx=ctx, heartbeat_s=2.0, search=worker)
    worker.start()
    sender.start()
    return Node(outbox, search, worker, sender)


def _keep(node: Node, event: Any) -> None:
    """A pass kept as a read, as EdgeService.handle_event keeps one that matched no list."""
    if event.provisional:
        return
    crop = b""
    if event.best_crop is not None and event.best_crop.size:
        crop = jpeg_of_width(event.best_crop, 400, quality=85)
    node.outbox.record_read(CAMERA, event.text, seen_at=dt.datetime.now(dt.UTC),
                            confidence=event.confidence, crop_jpeg=crop,
                            details={"formatted": event.formatted, "country": event.country,
                                     "direction": event.direction,
                                     "vehicle_type": event.vehicle_type,
                                     "vehicle_colour": event.vehicle_colour})  # fmt: skip
    node.kept.append(event.text)


# --------------------------------------------------------------------------- one replay


def _p90(values: Sequence[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(0.9 * len(v)))], 3)


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def replay_phase(engines: Engines, config: PipelineConfig, path: Path, node: Node, *,
                 realtime: bool, until_s: float | None, label: str,
                 show_progress: bool) -> dict[str, Any]:  # fmt: skip
    """One replay of `path` through a fresh pipeline, its passes kept in the node's outbox."""
    source = video_source(path, label, until_s=until_s, total=frame_count(path),
                          show_progress=show_progress)
    pipeline = VideoPipeline(engines, config, camera=CAMERA)
    stats = ReplayStats()
    cpu0, wall0 = os.times(), time.perf_counter()
    events = 0
    for event in replay_events(source, pipeline, realtime=realtime, stats=stats):  # type: ignore[arg-type]
        _keep(node, event)
        events += 1
    wall = time.perf_counter() - wall0
    cpu1 = os.times()
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "frames": stats.frames,
        "analysed": stats.analysed,
        "processed": stats.processed,
        "dropped": stats.dropped,
        "events": events,
        "wall_s": round(wall, 3),
        "fps": round(stats.frames / wall, 2) if wall else None,
        "analysed_per_s": round(stats.analysed / wall, 2) if wall else None,
        "frame_ms": {"median": _median(stats.frame_ms), "p90": _p90(stats.frame_ms),
                     "max": round(max(stats.frame_ms), 3) if stats.frame_ms else None},
        "cpu_ms_per_analysed": (round(1000 * cpu_s / stats.analysed, 2) if stats.analysed
                                else None),  # fmt: skip
        "cpu_percent": round(100 * cpu_s / wall, 1) if wall else None,
    }


def _ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not a:
        return None
    return round(b / a, 3)


def _ratios(without: dict[str, Any], with_: dict[str, Any]) -> dict[str, float | None]:
    return {"fps": _ratio(without["fps"], with_["fps"]),
            "frame_ms_median": _ratio(without["frame_ms"]["median"], with_["frame_ms"]["median"]),
            "frame_ms_p90": _ratio(without["frame_ms"]["p90"], with_["frame_ms"]["p90"]),
            "cpu_ms_per_analysed": _ratio(without["cpu_ms_per_analysed"],
                                          with_["cpu_ms_per_analysed"])}  # fmt: skip


def query_figures(records: list[dict[str, Any]], searches: list[dict[str, Any]]
                  ) -> dict[str, Any]:  # fmt: skip
    """The queries of the 'with' runs: round trips at the collector, searches in the node."""
    out: dict[str, Any] = {"sent": len(records),
                           "answered": sum(1 for r in records if "done" in r and not r["refused"]),
                           "refused": sum(1 for r in records if r.get("refused")),
                           "unanswered": sum(1 for r in records if "done" not in r)}  # fmt: skip
    reasons = sorted({r["refused"] for r in records if r.get("refused")})
    out["refused_reasons"] = reasons

    def rt(rs: list[dict[str, Any]]) -> dict[str, Any]:
        ms = [(r["done"] - r["sent"]) * 1000 for r in rs if "done" in r and not r["refused"]]
        return {"n": len(ms), "median_ms": _median(ms), "p90_ms": _p90(ms),
                "max_ms": round(max(ms), 2) if ms else None}  # fmt: skip

    modes = sorted({r["mode"] for r in records})
    out["round_trip"] = {m: rt([r for r in records if r["mode"] == m and not r["burst"]])
                         for m in modes}  # fmt: skip
    burst = [r for r in records if r["burst"]]
    out["burst"] = rt(burst)
    done = [r["done"] for r in burst if "done" in r]
    out["burst"]["all_done_ms"] = (round((max(done) - min(r["sent"] for r in burst)) * 1000, 1)
                                   if burst and len(done) == len(burst) else None)  # fmt: skip
    out["search"] = {}
    for m in sorted({s["mode"] for s in searches}):
        ss = [s for s in searches if s["mode"] == m]
        out["search"][m] = {"n": len(ss), "median_ms": _median([s["ms"] for s in ss]),
                            "p90_ms": _p90([s["ms"] for s in ss]),
                            "cpu_ms_median": _median([s["cpu_ms"] for s in ss]),
                            "found_median": _median([s["found"] for s in ss])}  # fmt: skip
    cpu = [s["cpu_ms"] for s in searches]
    out["search_cpu_ms_total"] = round(sum(cpu), 1)
    out["search_p90_ms"] = _p90([s["ms"] for s in searches])
    return out


# --------------------------------------------------------------------------- the suite


@dataclass
class Bench:
    args: argparse.Namespace
    engines: Engines
    config: PipelineConfig
    path: Path
    node: Node
    commands: Any
    replies: Any
    plan: dict[str, Any]

    def reply(self, kind: str, timeout: float = 60.0) -> Any:
        got, value = self.replies.get(timeout=timeout)
        if got != kind:
            raise RuntimeError(f"the collector said {got!r}, not {kind!r}")
        return value

    def phase(self, pace: str, queried: bool, label: str) -> dict[str, Any]:
        if queried:
            self.commands.put(("go", self.plan))
        n0 = len(self.node.search.times)
        figures = replay_phase(self.engines, self.config, self.path, self.node,
                               realtime=pace == "paced", until_s=self.args.seconds, label=label,
                               show_progress=not self.args.no_progress)  # fmt: skip
        if queried:
            self.commands.put(("stop", None))
            ended = time.perf_counter()
            records = self.reply("records")
            # the searches begun while the camera ran (those of the burst may start later)
            ran = [t for t in self.node.search.times[n0:] if t["at"] <= ended]
            figures["queries"] = query_figures(records, ran)
            figures["queries"]["searched_after_the_replay"] = (
                len(self.node.search.times) - n0 - len(ran))
        return figures


def bench(b: Bench, paces: Sequence[str], repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    for pace in paces:
        pairs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        for k in range(max(1, repeat)):
            for queried in (False, True):
                key = "with" if queried else "without"
                pairs[key].append(b.phase(pace, queried, f"{pace} {key} {k + 1}/{repeat}"))
        runs[pace] = pairs
        fig = {key: results.median_of([{k: v for k, v in r.items() if k != "queries"}
                                       for r in rs]) for key, rs in pairs.items()}  # fmt: skip
        fig["ratio_with_over_without"] = _ratios(fig["without"], fig["with"])
        records = [r["queries"] for r in pairs["with"]]
        fig["queries"] = results.median_of(records)
        for count in ("sent", "answered"):  # counts over the runs; times are medians
            fig["queries"][count] = sum(r[count] for r in records)
        fig["queries"]["refused"] = sum(r["refused"] for r in records)
        fig["queries"]["unanswered"] = sum(r["unanswered"] for r in records)
        fig["queries"]["refused_reasons"] = sorted({x for r in records
                                                    for x in r["refused_reasons"]})
        out[pace] = fig
    if "paced" in out and "fast" in out:
        full = out["fast"]["without"]["analysed"]
        for key in ("without", "with"):
            out["paced"][key]["analysed_lost"] = max(0, full - out["paced"][key]["analysed"])
    return {"figures": out, "runs": runs}


def _plan(args: argparse.Namespace, seen: list[tuple[str, str]]) -> dict[str, Any]:
    sets = queries(seen, 12, args.seed)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODE_SETS]
    if unknown or not modes:
        raise ValueError(f"--modes takes {', '.join(MODE_SETS)}, comma-separated; got "
                         f"{args.modes!r}")
    return {"patterns": {m: sets[MODE_SETS[m]] for m in modes}, "burst": args.burst,
            "burst_at_s": args.burst_at_s, "interval_s": args.interval_s,
            "ago_s": 2 * 86400}  # fmt: skip


def targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for pace, fig in figures.items():
        out.append(results.target(f"{pace}.queries.search_p90_ms",
                                  fig["queries"].get("search_p90_ms"), SEARCH_MS, above=False,
                                  what=f"{pace}: the node's search, p90 ms, while the camera runs"))
        out.append(results.target(f"{pace}.with.frame_ms.median",
                                  fig["with"]["frame_ms"]["median"], MAX_FRAME_MS, above=False,
                                  what=f"{pace}: ms a processed frame, median, with queries"))
    return out


def markdown(figures: dict[str, Any], plan: dict[str, Any], reads: int) -> str:
    lines = [f"Outbox of {reads} reads; queries: a burst of {plan['burst']} at "
             f"{plan['burst_at_s']:g} s, then one every {plan['interval_s']:g} s "
             f"({', '.join(plan['patterns'])} in turn).", ""]
    for pace, fig in figures.items():
        w, q, r = fig["without"], fig["with"], fig["ratio_with_over_without"]
        rows = [("frames decoded", w["frames"], q["frames"], None),
                ("frames analysed", w["analysed"], q["analysed"], None),
                ("frames dropped (late)", w["dropped"], q["dropped"], None),
                ("frames per second (decoded)", w["fps"], q["fps"], r["fps"]),
                ("ms a processed frame, median", w["frame_ms"]["median"],
                 q["frame_ms"]["median"], r["frame_ms_median"]),
                ("ms a processed frame, p90", w["frame_ms"]["p90"], q["frame_ms"]["p90"],
                 r["frame_ms_p90"]),
                ("CPU ms an analysed frame", w["cpu_ms_per_analysed"],
                 q["cpu_ms_per_analysed"], r["cpu_ms_per_analysed"]),
                ("CPU, % of one core", w["cpu_percent"], q["cpu_percent"], None)]
        if "analysed_lost" in w:
            rows.append(("analysed frames lost to pacing", w["analysed_lost"],
                         q["analysed_lost"], None))
        lines += [f"## {pace}", "", results.md_table(["figure", "without queries",
                                                      "with queries", "with / without"], rows)]
        qs = fig["queries"]
        qrows = [(m, v["n"], v["median_ms"], v["p90_ms"], v["max_ms"])
                 for m, v in qs["round_trip"].items()]
        qrows.append((f"burst of {plan['burst']}", qs["burst"]["n"], qs["burst"]["median_ms"],
                      qs["burst"]["p90_ms"], qs["burst"]["max_ms"]))
        lines += [f"Queries (times: median of the runs): {qs['sent']} sent in all, "
                  f"{qs['refused']} refused {qs['refused_reasons'] or ''}, {qs['unanswered']} "
                  f"unanswered; the burst's last answer after {qs['burst']['all_done_ms']} ms.",
                  "", "Round trip at the collector, while the camera runs:", "",
                  results.md_table(["queries", "n", "median ms", "p90 ms", "max ms"], qrows),
                  "The search in the node (ReadSearch.find):", "",
                  results.md_table(["mode", "n", "median ms", "p90 ms", "CPU ms median",
                                    "found median"],
                                   [(m, v["n"], v["median_ms"], v["p90_ms"], v["cpu_ms_median"],
                                     v["found_median"]) for m, v in qs["search"].items()])]
    return "\n".join(lines)


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    config, threads = pipeline_config(args)
    path = resolve(args.video, DEFAULT_VIDEO)
    out_dir = results.output_dir(args.out, "search-load")
    result = results.start("search-load", argv, seed=args.seed, repeat=args.repeat,
                           config=config.model_dump(mode="json"))
    engines = engines_for(config, threads)
    root = Path(tempfile.mkdtemp(prefix="search-load-"))
    mp = multiprocessing.get_context("spawn")  # no ZeroMQ context crosses a fork
    commands, replies = mp.Queue(), mp.Queue()
    child = mp.Process(target=_collector, args=(str(root), commands, replies), daemon=True)
    ctx = zmq.Context()
    node: Node | None = None
    try:
        _keys(root)
        child.start()
        got, endpoint = replies.get(timeout=60)
        t0 = time.perf_counter()
        filling = Outbox(root / "outbox.db", retention_s=24 * 3600, purge_every_s=1e9,
                         disk_budget_bytes=1 << 34)  # fmt: skip
        seen = fill(filling, args.reads, time.time(), args.seed)
        filling.close()
        fill_s = time.perf_counter() - t0
        plan = _plan(args, seen)
        node = _node(root, endpoint, ctx)
        b = Bench(args, engines, config, path, node, commands, replies, plan)
        b.reply("ready")
        # untimed: the models, the decoder, SQLite's pages and the link warmed up
        warm = dict(plan, burst=len(plan["patterns"]), interval_s=0.0)
        commands.put(("go", warm))
        replay_phase(engines, config, path, node, realtime=False, label="warm-up",
                     until_s=args.warmup_s if args.seconds is None else
                     min(args.warmup_s, args.seconds), show_progress=not args.no_progress)
        commands.put(("stop", None))
        b.reply("records")
        paces = ["fast"] + ([] if args.no_paced else ["paced"])
        out = bench(b, paces, args.repeat)
        figures = out["figures"]
        figures["reads"] = args.reads
        figures["fill_s"] = round(fill_s, 1)
        figures["reads_kept_by_replays"] = len(node.kept)
        figures["sender"] = {"queries": node.sender.stats.queries,
                             "answers_sent": node.sender.stats.answers_sent,
                             "answers_dropped": node.sender.stats.answers_dropped}  # fmt: skip
    finally:
        if node is not None:
            node.close()
        commands.put(("quit", None))
        child.join(30)
        if child.is_alive():
            child.terminate()
        ctx.term()
        shutil.rmtree(root, ignore_errors=True)
    pace_figs = {p: figures[p] for p in paces}
    result.update(figures=figures, targets=targets(pace_figs),
                  details={"video": str(path), "plan": plan, "runs": out["runs"]})
    md = (results.targets_markdown(result["targets"]) + "\n" + markdown(pace_figs, plan, args.reads)
          + f"\nEach figure is the median of {args.repeat} runs, without and with queries "
          "alternating; the machine's load average is in the header.\n")
    result["output"] = str(results.finish(result, out_dir, md))
    return result
