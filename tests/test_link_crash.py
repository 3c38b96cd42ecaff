"""Exactly once through crashes and outages, with real processes on loopback.

The collector is `anpr-collector run`; the edge is this file run as a script (an
outbox and a HitSender, adding hits when told on stdin and printing each one once
it is durable).  Both are killed with SIGKILL mid-stream and started again; every
hit must then be in the collector's database exactly once.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from helpers.link import (
    CollectorProcess,
    Keys,
    child_env,
    free_port,
    hit_id,
    make_keys,
    wait_for,
)

RUN = "crash"


class EdgeProcess:
    """An edge: outbox + sender in a child process, driven through stdin."""

    def __init__(self, root: Path, keys: Keys, endpoint: str, node: str = "edge1", window=16):
        keys.edge(node)
        self.outbox = root / "edge" / "outbox.db"
        self.args = {
            "outbox": str(self.outbox),
            "endpoint": endpoint,
            "keys_dir": str(keys.edge_dir(node)),
            "node": node,
            "server_key": keys.server_public.decode(),
            "window": window,
        }
        self.log = root / f"edge-{node}.log"
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.lines = []
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "edge", json.dumps(self.args)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
                env=child_env(),
            )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        wait_for(lambda: "ready" in self.lines, 20, "the edge to start")

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.strip())

    def add(self, first: int, end: int, urgent_every: int = 0) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"add {first} {end} {urgent_every}\n")
        self.proc.stdin.flush()

    def added(self) -> list[int]:
        return [int(x.split()[1]) for x in list(self.lines) if x.startswith("added ")]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def backlog(self) -> int:
        if not self.outbox.exists():
            return 0
        db = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM hits").fetchone()[0]
        finally:
            db.close()


def _index(ids: list[str], n: int) -> list[int]:
    """Hit ids back to the numbers they were made from (fails on a stranger)."""
    by_id = {hit_id(i, RUN): i for i in range(n)}
    return [by_id[i] for i in ids]


def _setup(tmp_path: Path):
    keys = make_keys(tmp_path)
    collector = CollectorProcess(tmp_path, keys, free_port())
    edge = EdgeProcess(tmp_path, keys, f"tcp://127.0.0.1:{collector.port}")
    return keys, collector, edge


def test_edge_killed_while_sending_then_restarted(tmp_path):
    _, collector, edge = _setup(tmp_path)
    n = 400
    try:
        collector.start()
        edge.start()
        edge.add(0, n)
        wait_for(lambda: len(collector.ids()) >= 30, what="hits to flow")
        edge.kill()  # SIGKILL: mid-add, mid-send, mid-ack
        durable = set(edge.added())
        at_kill = collector.ids()
        assert 30 <= len(at_kill) < n, "the edge was not killed mid-stream"
        assert edge.backlog() > 0
        edge.start()  # the restarted edge adds nothing: it only sends what its outbox holds
        wait_for(lambda: edge.backlog() == 0, 30, "the outbox to empty")
        ids = collector.ids()
    finally:
        edge.stop()
        collector.stop()
    stored = _index(ids, n)
    assert len(stored) == len(set(stored)), "a hit was stored twice"
    assert durable <= set(stored), "a hit the edge had made durable was lost"
    # Hits were added in order: everything up to the last one added is there, no gaps.
    assert set(stored) == set(range(max(stored) + 1))
    assert max(stored) + 1 - len(durable) in (0, 1)  # at most the one being printed


def test_collector_killed_then_restarted(tmp_path):
    _, collector, edge = _setup(tmp_path)
    n = 300
    try:
        collector.start()
        edge.start()
        edge.add(0, n)
        wait_for(lambda: len(collector.ids()) >= 30, what="hits to flow")
        collector.kill()  # SIGKILL: mid-batch, commits and acks in flight
        at_kill = collector.ids()
        assert len(at_kill) < n, "the collector was not killed mid-stream"
        wait_for(lambda: f"added-through {n}" in edge.lines, 30, "the edge to add them all")
        collector.start()
        wait_for(lambda: edge.backlog() == 0, 30, "the outbox to empty")
        ids = collector.ids()
    finally:
        edge.stop()
        collector.stop()
    assert sorted(_index(ids, n)) == list(range(n))  # each exactly once


def test_collector_down_while_hits_pile_up(tmp_path):
    _, collector, edge = _setup(tmp_path)
    try:
        collector.start()
        edge.start()
        edge.add(0, 10)
        wait_for(lambda: len(collector.ids()) == 10, what="the first hits")
        collector.stop()  # a long outage, compressed: the edge keeps reading plates
        edge.add(10, 210, urgent_every=5)
        wait_for(lambda: "added-through 210" in edge.lines, 30, "the hits to pile up")
        assert edge.backlog() == 200
        assert len(collector.ids()) == 10
        collector.start()
        wait_for(lambda: edge.backlog() == 0, 30, "the outbox to empty")
        ids = collector.ids()
    finally:
        edge.stop()
        collector.stop()
    stored = _index(ids, 210)
    assert sorted(stored) == list(range(210))
    after = stored[10:]
    urgent = {i for i in range(10, 210) if i % 5 == 0}
    assert set(after[: len(urgent)]) == urgent  # the urgent backlog went first


# ---------------------------------------------------------------- the edge process


def _edge_main(raw: str) -> None:
    import logging

    import zmq
    from helpers.link import make_hit

    from edge.core.keys import load_keypair
    from edge.node.outbox import Outbox
    from edge.node.sender import HitSender

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = json.loads(raw)
    ctx = zmq.Context()
    outbox = Outbox(Path(cfg["outbox"]))
    public, secret = load_keypair(Path(cfg["keys_dir"]), cfg["node"])
    sender = HitSender(
        outbox, cfg["endpoint"], node_id=cfg["node"], public_key=public, secret_key=secret,
        server_key=cfg["server_key"].encode(), ctx=ctx, window=cfg["window"],
        ack_timeout_s=1.0, reconnect_max_s=0.2, heartbeat_s=0.5,
    )  # fmt: skip
    sender.start()
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd != "add":
            continue
        first, end, every = (int(x) for x in rest)
        for i in range(first, end):
            priority = 1 if every and i % every == 0 else 5  # 1: the most urgent
            hit = make_hit(i, node=cfg["node"], run=RUN, priority=priority, crop=5000, scene=50_000)
            outbox.add_hit(hit)  # durable when it returns
            print(f"added {i}", flush=True)
        print(f"added-through {end}", flush=True)
    sender.stop()
    outbox.close()
    ctx.term()


if __name__ == "__main__" and sys.argv[1:2] == ["edge"]:
    _edge_main(sys.argv[2])
