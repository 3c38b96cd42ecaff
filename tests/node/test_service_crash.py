"""A power cut, as near as a test gets to one: kill -9 mid-write, then the node's store opens
and holds every hit and pass it had committed.

(SIGKILL leaves the kernel's page cache alone, so this proves the commit protocol, not the
disk: that a committed row survives the power itself rests on SQLite's fsync with
synchronous=FULL, which the outbox sets and its own tests check.)
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers.link import child_env, hit_id, wait_for
from helpers.service import (
    NodeProcess,
    drive_by_clip,
    models_or_skip,
    node_config,
    stored_reads,
)

from edge.node.outbox import Outbox

RUN = "power-cut"


def integrity(db_path: Path) -> str:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def test_kill_9_mid_write_keeps_every_committed_hit(tmp_path):
    db_path = tmp_path / "state" / "outbox.db"
    committed: list[int] = []
    proc = subprocess.Popen([sys.executable, __file__, "writer", str(db_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            committed.append(int(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(committed) >= 40 or proc.poll() is not None, 60, "40 hits")
        proc.send_signal(signal.SIGKILL)  # while it writes the next ones
        proc.wait(10)
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert integrity(db_path) == "ok"
    with Outbox(db_path) as outbox:  # opens as the restarted node would
        stored = {h.hit_id: h for h in outbox.pending(10_000)}
        assert {hit_id(i, RUN) for i in committed} <= set(stored)
        # at most the one being written when the process died is there unannounced
        assert len(stored) - len(committed) in (0, 1)
        for i in committed:  # whole, pictures and all
            assert stored[hit_id(i, RUN)].plate.text == f"AB{i:05d}"
            assert len(stored[hit_id(i, RUN)].scene_jpeg) == 30_000
        assert outbox.stats()["reads"] >= len(committed)


@pytest.mark.models
def test_kill_9_of_the_node_mid_replay_keeps_every_pass_it_printed(tmp_path, tmp_path_factory):
    models_or_skip()
    clip_path, _ = drive_by_clip(tmp_path_factory)
    node = NodeProcess(node_config(tmp_path, clip_path), tmp_path / "edge.log")
    try:
        node.wait_lines(1)
        node.signal(signal.SIGKILL)
        node.wait(10)
    finally:
        node.kill()
    assert node.proc.returncode == -signal.SIGKILL
    state = tmp_path / "state"
    assert integrity(state / "outbox.db") == "ok"
    printed = [e["text"] for e in node.lines]
    stored = [plate for plate, _ in stored_reads(state)]
    assert printed and stored[: len(printed)] == printed  # a line is printed after its commit
    with Outbox(state / "outbox.db") as outbox:
        assert outbox.stats()["reads"] == len(stored)


def _writer(db_path: str) -> None:
    """Hits and reads as fast as the disk takes them, each number printed once committed."""
    from helpers.link import fake_jpeg, make_hit

    outbox = Outbox(Path(db_path))
    i = 0
    while True:
        outbox.add_hit(make_hit(i, run=RUN, crop=3000, scene=30_000))
        outbox.record_read("cam1", f"XY{i:05d}", crop_jpeg=fake_jpeg(2000))
        print(i, flush=True)
        i += 1


if __name__ == "__main__" and sys.argv[1:2] == ["writer"]:
    _writer(sys.argv[2])
