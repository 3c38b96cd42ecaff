"""A real node on a full disk: its hits wait in memory, it says it is unwell, and none is lost.

The node runs without models or cameras (its passes are handed to `handle_event` as
a camera would), with a real watchlist replica, outbox and store-retry thread.  The
disk is made full with `PRAGMA max_page_count`, as in test_outbox_disk_full.
"""

from __future__ import annotations

import io
import json
import sqlite3

import numpy as np
import pytest
from helpers.link import fake_jpeg, wait_for
from helpers.stand_ins import idle_engines

from edge.core.status import Health, ProblemKind
from edge.core.types import PlateEvent
from edge.core.watchlist.entry import Entry, ListPolicy
from edge.core.watchlist.protocol import Update
from edge.node.config import CameraConfig, EdgeConfig
from edge.node.service import EdgeService

MB = 1024 * 1024
CAMERA = CameraConfig(id="lane-1", source="unused.mp4")


@pytest.fixture
def node(tmp_path):
    config = EdgeConfig.model_validate({
        "node_id": "test-node", "state_dir": str(tmp_path / "state"),
        "store": {"retry_s": 0.05}})  # fmt: skip
    out = io.StringIO()
    service = EdgeService(config, events_out=out, engines=idle_engines())
    service.replica.new_epoch("E1")
    rows = [tuple(Entry(n, f"AB{n:03d}CD", "stolen", "PL-KGP", "stolen_vehicle"))
            for n in range(1, 31)]
    service.replica.apply([Update("E1", "stolen", 1, "policy", policy=ListPolicy("stolen")),
                           Update("E1", "stolen", 2, "upsert", rows=tuple(rows))])
    service.events = out  # type: ignore[attr-defined]
    service.start()
    yield service
    service.stop()


def event(text: str, t: float) -> PlateEvent:
    return PlateEvent(text=text, formatted=text, country=None, confidence=0.9, first_seen=t,
                      last_seen=t + 1, frames=5, direction="approaching",
                      # noise: a crop that needs pages of its own, whatever the slack
                      best_crop=np.random.default_rng(0).integers(0, 256, (40, 160, 3),
                                                                  dtype=np.uint8),
                      scene_jpeg=fake_jpeg(40_000))


def fill_up(service: EdgeService) -> None:
    """The disk is full: the outbox's file may not grow by a page."""
    db = service.outbox._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    assert db.execute(f"PRAGMA max_page_count={pages}").fetchone()[0] == pages


def hits_on_disk(service: EdgeService) -> list[tuple[str, int]]:
    return [(m.plate.text, len(m.scene_jpeg)) for m in service.outbox.pending(1000)]


def lines(service: EdgeService) -> list[dict]:
    return [json.loads(x) for x in service.events.getvalue().splitlines()]  # type: ignore[attr-defined]


def test_hits_wait_through_a_full_disk_and_the_node_says_so(node):
    assert node.status().health.ok
    fill_up(node)
    for n in range(1, 26):
        node.handle_event(CAMERA, event(f"AB{n:03d}CD", float(n)), 1_900_000_000.0 + n)
    status = node.status()
    assert not status.health.ok
    (problem,) = status.health.problems
    assert problem.kind == ProblemKind.HITS_IN_MEMORY and problem.camera is None
    assert str(problem).startswith("store: 25 hit(s) waiting in memory, not yet on disk (")
    assert status.outbox is not None and status.outbox.waiting_hits == 25
    assert "DISK FULL: 25 hit(s) waiting in memory" in node.status_line()
    assert [line["stored"] for line in lines(node)] == [False] * 25
    assert hits_on_disk(node) == []  # and so none was offered to the collector

    node.outbox._db.execute("PRAGMA max_page_count=1073741823")  # room again
    wait_for(lambda: node.outbox.stats()["waiting_hits"] == 0, what="the store-retry thread")
    assert [text for text, _ in hits_on_disk(node)] == [f"AB{n:03d}CD" for n in range(1, 26)]
    assert all(scene == 40_000 for _, scene in hits_on_disk(node))
    assert node.status().health == Health(ok=True, problems=[])
    assert "DISK FULL" not in node.status_line()


def test_under_the_floor_hits_keep_their_crop_and_reads_are_not_kept(node):
    node.outbox.free_space = lambda _path: 10 * MB  # under the 64 MiB default floor
    node.handle_event(CAMERA, event("AB001CD", 1.0), 1_900_000_001.0)
    node.handle_event(CAMERA, event("ZZ999ZZ", 2.0), 1_900_000_002.0)  # on no list
    (hit,) = node.outbox.pending()
    assert hit.crop_jpeg and hit.scene_jpeg == b""
    assert node.outbox.reads() == []
    assert [line["stored"] for line in lines(node)] == [True, False]
    status = node.status()
    assert status.disk is not None and status.outbox is not None
    assert status.disk.low_disk and status.disk.free_bytes == 10 * MB
    assert status.outbox.low_disk_hits == 1 and status.outbox.refused_reads == 1
    assert [str(p) for p in status.health.problems if p.kind == ProblemKind.LOW_DISK] == [
        "store: low disk, 10 MiB free (under 64 MiB): hits are stored without their scene, "
        "reads not kept"]


def test_the_floor_and_the_memory_queue_come_from_the_store_config(tmp_path):
    config = EdgeConfig.model_validate({
        "state_dir": str(tmp_path / "state"),
        "store": {"min_free_mb": 8, "memory_hits": 7, "memory_mb": 2}})  # fmt: skip
    service = EdgeService(config, engines=idle_engines())
    try:
        assert service.outbox.min_free_bytes == 8 * MB
        assert service.outbox.waiting.max_hits == 7
        assert service.outbox.waiting.max_bytes == 2 * MB
    finally:
        service.stop()


class RefusingReads:
    """The outbox's connection on a disk that refuses the next read's insert."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __getattr__(self, name: str):
        return getattr(self.db, name)

    def execute(self, sql: str, *args):
        if sql.startswith("INSERT INTO reads"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)


def test_a_failed_write_with_nothing_waiting_still_makes_the_node_unwell(node):
    real = node.outbox._db
    node.outbox._db = RefusingReads(real)
    node.handle_event(CAMERA, event("ZZ999ZZ", 1.0), 1_900_000_001.0)  # on no list
    problems = node.status().health.problems
    assert [p.kind for p in problems] == [ProblemKind.STORE_WRITE_FAILED], problems
    assert str(problems[0]).startswith("store: the last write failed (")
    assert "DISK FULL: the last write failed" in node.status_line()
    node.outbox._db = real  # room again
    node.handle_event(CAMERA, event("ZZ998ZZ", 2.0), 1_900_000_002.0)
    assert node.status().health == Health(ok=True, problems=[])
    assert [line["stored"] for line in lines(node)] == [False, True]
