"""`python -m benchmarks search`: one search across 50 nodes on loopback, 86,000 reads each.

A real collector (its ROUTER, CURVE, the search of edge.collector.search, signing) asks 50
nodes, each a DEALER with CURVE in this process that checks the query's signature
(edge.core.search.verify_query) and answers from an SQLite table of 86,000 reads indexed
by text and time (a stand-in for the node's outbox search, edge/node/search.py, which
was not on this branch when this was written).  Times, from `Searches.begin` to the
first reads and to the `done` event (every node answered): median of `--repeat`.
Targets: first rows <= 300 ms, full answer <= 2 s.  The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import sqlite3
import statistics
import string
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

from edge.collector.config import CollectorConfig
from edge.collector.search import SearchRequest, make_searches
from edge.collector.service import CollectorService
from edge.core.errors import ProtocolError
from edge.core.keys import (
    generate_keypair,
    generate_signing_keypair,
    load_keypair,
    load_verify_key,
    make_curve_client,
)
from edge.core.link_protocol import JPEG_MAGIC, Heartbeat
from edge.core.search import TAG_SEARCH, SearchRead, chunks, verify_query
from edge.core.times import format_time, parse_iso

PLATE = "LTA123"
CROP = JPEG_MAGIC + b"\x00" * 4000 + b"\xff\xd9"  # the size of a plate crop


def _fill(path: Path, rows: int, now: dt.datetime, hits: int, rng: random.Random) -> None:
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE reads (text TEXT, seen_at TEXT, camera TEXT, crop BLOB);"
                     "PRAGMA journal_mode=WAL;")  # fmt: skip
    alphabet = string.ascii_uppercase + string.digits
    data = [("".join(rng.choices(alphabet, k=7)), format_time(now - dt.timedelta(seconds=i)),
             "cam-1", b"") for i in range(rows - hits)]  # fmt: skip
    data += [(PLATE, format_time(now - dt.timedelta(hours=h + 1)), "cam-1", CROP)
             for h in range(hits)]  # fmt: skip
    with db:
        db.executemany("INSERT INTO reads VALUES (?, ?, ?, ?)", data)
        db.execute("CREATE INDEX reads_by_text ON reads(text, seen_at)")
    db.close()


def _node(name: str, endpoint: str, server_public: bytes, keys: tuple[bytes, bytes],
          verify: object, db_path: Path, ctx: zmq.Context,
          stop: threading.Event) -> None:  # fmt: skip
    db = sqlite3.connect(db_path)
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    make_curve_client(sock, *keys, server_public)
    sock.connect(endpoint)
    status = {"node": name, "health": {"ok": True}}
    sock.send_multipart(Heartbeat(name, status).encode())
    while not stop.is_set():
        if not sock.poll(100):
            continue
        frames = sock.recv_multipart()
        if frames[0] != TAG_SEARCH:
            continue
        try:
            q = verify_query(frames, verify)  # type: ignore[arg-type]
        except ProtocolError as e:
            print(f"{name}: refused a query: {e}", file=sys.stderr)
            continue
        rows = db.execute("SELECT text, seen_at, camera, crop FROM reads WHERE text = ? AND"
                          " seen_at BETWEEN ? AND ? ORDER BY seen_at LIMIT ?",
                          (q.pattern, format_time(q.since), format_time(q.until),
                           q.max_rows)).fetchall()  # fmt: skip
        reads = [SearchRead(text=t, formatted=t, country="LT", confidence=0.9,
                            seen_at=parse_iso(s), camera=c, direction="", vehicle_type="",
                            vehicle_colour="", lat=None, lon=None, crop_jpeg=crop)
                 for t, s, c, crop in rows]  # fmt: skip
        for a in chunks(q.query_id, name, reads, len(reads), 24.0):
            sock.send_multipart(a.encode())
    sock.close(linger=0)
    db.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search_bench", description=__doc__)
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--reads", type=int, default=86_000, help="reads per node")
    p.add_argument("--holding", type=int, default=10, help="nodes holding the plate")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="search-bench-"))
    rng = random.Random(14)
    now = dt.datetime.now(dt.UTC)
    ctx = zmq.Context()
    stop = threading.Event()
    threads: list[threading.Thread] = []
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
            _fill(root / f"{name}.db", args.reads, now, 3 if i < args.holding else 0, rng)
        fill_s = time.perf_counter() - t0
        config = CollectorConfig(listen="tcp://127.0.0.1:0", data_dir=root / "data",
                                 credentials_dir=str(creds), allowed_keys_dir=allowed,
                                 heartbeat_flush_s=0.1)  # fmt: skip
        service = CollectorService(config, ctx=ctx)
        searches = make_searches(service, config, service.agreements.current, None)
        assert searches is not None
        service.start()
        server_public, _ = load_keypair(creds, "collector")
        verify = load_verify_key(creds, "collector")
        for name in names:
            t = threading.Thread(target=_node, args=(name, service.endpoint, server_public,
                                 load_keypair(root / name, name), verify, root / f"{name}.db",
                                 ctx, stop), daemon=True)  # fmt: skip
            t.start()
            threads.append(t)
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
            "fill_s": round(fill_s, 1), "node": "protocol + SQLite stand-in",
            "first_rows_ok": statistics.median(firsts) <= 0.3,
            "full_answer_ok": statistics.median(fulls) <= 2.0,
        }  # fmt: skip
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        if service is not None:
            service.stop()
        ctx.term()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
