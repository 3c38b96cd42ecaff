"""`python -m benchmarks search`: one search across 50 real nodes on loopback, 86,000 reads each.

A real collector (its ROUTER, CURVE, the search of edge.collector.search, signing, its own
hits searched too) asks 50 nodes, each the node's real search code: an `Outbox` of 86,000
reads (one a second: 24 h), its `ReadSearch` and `SearchWorker`, and the `HitSender` that
takes the signed queries on its CURVE DEALER and sends the answers back.  The nodes run as
threads in `--processes` child processes (default 2, one per core; the collector in the
parent), `--nodes` split between them.  Times, from `Searches.begin` to the first reads and
to the `done` event (every node answered): median of `--repeat`.  Targets: first rows
<= 300 ms, full answer <= 2 s.  The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import random
import shutil
import statistics
import string
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from edge.collector.config import CollectorConfig
from edge.collector.search import SearchRequest, make_searches
from edge.collector.service import CollectorService
from edge.core.keys import (
    generate_keypair,
    generate_signing_keypair,
    load_keypair,
    load_verify_key,
)
from edge.core.link_protocol import JPEG_MAGIC
from edge.core.times import format_time
from edge.core.watchlist.distance import fold
from edge.node.outbox import Outbox
from edge.node.search import ReadSearch, SearchWorker
from edge.node.sender import HitSender

PLATE = "LTA123"
CROP = JPEG_MAGIC + b"\x00" * 4000 + b"\xff\xd9"  # the size of a plate crop


def _fill(path: Path, rows: int, now: float, hits: int, rng: random.Random) -> None:
    """An outbox of `rows` reads, one a second up to `now`; `hits` of them of PLATE."""
    outbox = Outbox(path, retention_s=48 * 3600, disk_budget_bytes=1 << 33)
    alphabet = string.ascii_uppercase + string.digits
    at = {int(rows * (h + 1) / (hits + 1)) for h in range(hits)}
    data = []
    for i in range(rows):
        text = PLATE if i in at else "".join(rng.choices(alphabet, k=7))
        t = now - rows + i + 1
        seen = format_time(dt.datetime.fromtimestamp(t, dt.UTC))
        crop = CROP if i in at else b""
        data.append((t, seen, "cam-1", text, 0.9, '{"direction": "approaching"}', crop,
                     len(crop) + 200, fold(text)))  # fmt: skip
    db = outbox._db  # one transaction, rather than 86,000 fsyncs of record_read
    db.execute("BEGIN")
    db.executemany("INSERT INTO reads (stored, seen_at, camera, plate, confidence, details, crop,"
                   " bytes, folded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", data)  # fmt: skip
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("ANALYZE")
    outbox.close()


def _nodes(names: list[str], root: str, endpoint_q: Any, stop: Any) -> None:
    """A child process: the real node code for each of `names` (outbox, search, sender)."""
    base = Path(root)
    endpoint = endpoint_q.get()
    creds = base / "creds"
    server_public, _ = load_keypair(creds, "collector")
    verify = load_verify_key(creds, "collector")
    ctx = zmq.Context()
    parts = []
    for name in names:
        outbox = Outbox(base / f"{name}.db", retention_s=48 * 3600, disk_budget_bytes=1 << 33)
        worker = SearchWorker(ReadSearch(outbox.path, retention_s=outbox.retention_s),
                              node_id=name, verify_key=verify)  # fmt: skip
        worker.start()
        public, secret = load_keypair(base / name, name)
        sender = HitSender(outbox, endpoint, node_id=name, public_key=public, secret_key=secret,
                           server_key=server_public, ctx=ctx, heartbeat_s=1.0, search=worker)
        sender.start()
        parts.append((outbox, worker, sender))
    stop.wait()
    for outbox, worker, sender in parts:
        sender.stop()
        worker.stop()
        worker.search.close()
        outbox.close()
    ctx.term()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search_bench", description=__doc__)
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--reads", type=int, default=86_000, help="reads per node")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--processes", type=int, default=2, help="child processes for the nodes")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="search-bench-"))
    rng = random.Random(14)
    now = dt.datetime.now(dt.UTC)
    mp = multiprocessing.get_context("spawn")  # no ZeroMQ context crosses a fork
    stop = mp.Event()
    endpoint_q = mp.Queue()
    children: list[Any] = []
    ctx = zmq.Context()
    service = None
    try:
        creds, allowed = root / "creds", root / "allowed"
        generate_keypair(creds, "collector")
        generate_signing_keypair(creds, "collector")
        allowed.mkdir()
        t0 = time.perf_counter()
        names = [f"node-{i:03d}" for i in range(args.nodes)]
        for i, name in enumerate(names):
            generate_keypair(root / name, name)
            shutil.copy(root / name / f"{name}.key", allowed / f"{name}.key")
            if i == 0:
                _fill(root / f"{name}.db", args.reads, now.timestamp(), 3, rng)
            else:  # the same reads on every node: a copy is quicker to make
                shutil.copy(root / f"{names[0]}.db", root / f"{name}.db")
        fill_s = time.perf_counter() - t0
        config = CollectorConfig(listen="tcp://127.0.0.1:0", data_dir=root / "data",
                                 credentials_dir=str(creds), allowed_keys_dir=allowed,
                                 heartbeat_flush_s=0.1)  # fmt: skip
        service = CollectorService(config, ctx=ctx)
        searches = make_searches(service, config, service.agreements.current, None)
        assert searches is not None
        service.start()
        groups = [names[k :: args.processes] for k in range(args.processes)]
        for group in groups:
            child = mp.Process(target=_nodes, args=(group, str(root), endpoint_q, stop))
            child.start()
            children.append(child)
        for _ in groups:
            endpoint_q.put(service.endpoint)
        deadline = time.monotonic() + 60
        while len(service.connected_nodes()) < args.nodes:
            if time.monotonic() > deadline:
                raise RuntimeError("the nodes did not connect")
            time.sleep(0.05)
        firsts, fulls, found = [], [], 0
        for i in range(args.repeat + 1):  # the first: a warm-up
            request = SearchRequest(pattern=PLATE, since=now - dt.timedelta(days=2),
                                    until=now + dt.timedelta(minutes=1), case_ref="BENCH",
                                    legal_basis="benchmark")  # fmt: skip
            start = time.perf_counter()
            search = searches.begin(request, "bench", "local")
            first = full = None
            n = 0
            while full is None:
                events, _ = search.events_after(n, 5.0)
                for e in events:
                    if e["event"] == "reads" and first is None:
                        first = time.perf_counter() - start
                    if e["event"] == "done":
                        full = time.perf_counter() - start
                n += len(events)
                if time.perf_counter() - start > 30:
                    raise RuntimeError("the search did not settle in 30 s")
            if i:
                firsts.append(first or full)
                fulls.append(full)
            found = len(search.reads)
            assert all(s.state == "done" for s in search.nodes.values()), search.counts()
        result = {
            "nodes": args.nodes, "reads_per_node": args.reads, "reads_found": found,
            "first_rows_ms": round(statistics.median(firsts) * 1000, 1),
            "full_answer_ms": round(statistics.median(fulls) * 1000, 1),
            "full_answer_max_ms": round(max(fulls) * 1000, 1),
            "fill_s": round(fill_s, 1), "processes": args.processes,
            "node": "real: Outbox + ReadSearch + SearchWorker + HitSender",
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "first_rows_ok": statistics.median(firsts) <= 0.3,
            "full_answer_ok": statistics.median(fulls) <= 2.0,
        }  # fmt: skip
    finally:
        stop.set()
        for child in children:
            child.join(30)
            if child.is_alive():
                child.terminate()
        if service is not None:
            service.stop()
        ctx.term()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
