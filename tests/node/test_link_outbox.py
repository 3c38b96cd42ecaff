"""The edge's outbox: durable hits in priority order, reads that expire, and the disk budget."""

from __future__ import annotations

import logging
import sqlite3

import cv2
import numpy as np
import pytest
from helpers.link import make_hit

from edge.core.link_protocol import Limits
from edge.node.outbox import Outbox

MB = 1024 * 1024


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_hit_survives_closing_and_reopening(tmp_path):
    path = tmp_path / "outbox.db"
    with Outbox(path) as ob:
        hid = ob.add_hit(make_hit(1, priority=2))
    with Outbox(path) as ob:
        (back,) = ob.pending()
    assert hid == back.hit_id
    assert back == make_hit(1, priority=2)


def test_is_wal_with_full_sync(tmp_path):
    with Outbox(tmp_path / "o.db") as ob:
        assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_pending_is_by_priority_then_age_and_delivered_ones_go(tmp_path):
    with Outbox(tmp_path / "o.db") as ob:
        for n, prio in enumerate([0, 5, 1, 5, 0]):
            ob.add_hit(make_hit(n, priority=prio))
        order = [h.hit_id for h in ob.pending(10)]
        # Priority 0 is the most urgent here (1 on a watchlist): the lowest number first.
        assert order == [make_hit(n).hit_id for n in (0, 4, 2, 1, 3)]
        assert [h.hit_id for h in ob.pending(2)] == order[:2]
        assert [h.hit_id for h in ob.pending(10, exclude=order[:3])] == order[3:]
        assert ob.mark_delivered(order[0], order[1]) == 2
        assert ob.mark_delivered(order[0]) == 0  # a second ack changes nothing
        assert [h.hit_id for h in ob.pending(10)] == order[2:]
        assert ob.backlog() == 3


def test_adding_the_same_hit_twice_keeps_one(tmp_path):
    with Outbox(tmp_path / "o.db") as ob:
        ob.add_hit(make_hit(1))
        ob.add_hit(make_hit(1))
        assert ob.backlog() == 1


def test_held_hits_are_kept_but_not_offered_until_released(tmp_path, caplog):
    with Outbox(tmp_path / "o.db") as ob:
        ob.add_hit(make_hit(1))
        ob.add_hit(make_hit(2))
        with caplog.at_level(logging.ERROR):
            ob.hold(make_hit(1).hit_id, "refused by the collector: invalid")
        assert [h.hit_id for h in ob.pending()] == [make_hit(2).hit_id]
        assert ob.stats()["held"] == 1
        assert "held in the outbox" in caplog.text
        assert ob.release_held() == 1
        assert len(ob.pending()) == 2


def test_oversized_pictures_are_re_encoded_not_refused(tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    big = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    limits = Limits(max_scene_bytes=64 * 1024)
    assert len(big) > limits.max_scene_bytes
    hit = make_hit(1)
    hit = hit.__class__(**{**hit.__dict__, "scene_jpeg": big})
    with Outbox(tmp_path / "o.db", limits=limits) as ob:
        ob.add_hit(hit)
        (back,) = ob.pending()
    assert 0 < len(back.scene_jpeg) <= limits.max_scene_bytes
    assert cv2.imdecode(np.frombuffer(back.scene_jpeg, np.uint8), cv2.IMREAD_COLOR) is not None


# ---------------------------------------------------------------- reads and retention


def test_reads_expire_after_the_retention(tmp_path):
    clock = Clock()
    with Outbox(tmp_path / "o.db", retention_s=3600, clock=clock) as ob:
        ob.record_read("cam1", "OLD123")
        clock.t += 1800
        ob.record_read("cam1", "NEW456")
        assert ob.purge() == 0
        clock.t += 1801  # OLD123 is now 3601 s old
        assert ob.purge() == 1
        assert [r["plate"] for r in ob.reads()] == ["NEW456"]


def test_reads_are_purged_on_their_own(tmp_path):
    clock = Clock()
    with Outbox(tmp_path / "o.db", retention_s=60, purge_every_s=30, clock=clock) as ob:
        ob.record_read("cam1", "OLD123")
        clock.t += 61
        ob.record_read("cam1", "NEW456")  # no purge() called: recording looks after it
        assert [r["plate"] for r in ob.reads()] == ["NEW456"]


def test_retention_zero_keeps_no_reads(tmp_path):
    with Outbox(tmp_path / "o.db", retention_s=0) as ob:
        assert ob.record_read("cam1", "ABC123", crop_jpeg=b"\xff\xd8\xffxx") is None
        assert ob.reads() == []
        assert ob.stats()["reads"] == 0


def test_purged_reads_leave_no_trace_in_the_files(tmp_path):
    clock = Clock()
    path = tmp_path / "o.db"
    with Outbox(path, retention_s=10, clock=clock) as ob:
        for i in range(50):
            ob.record_read("cam1", f"SECRET{i:03d}", details={"owner": "nobody"})
        ob.add_hit(make_hit(1))
        clock.t += 11
        assert ob.purge() == 50
        ob.add_hit(make_hit(2))
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("o.db"))
    assert b"SECRET" not in raw
    assert b"AB00001" in raw  # the hits are still there


def test_only_hits_are_offered_for_sending(tmp_path):
    with Outbox(tmp_path / "o.db") as ob:
        ob.record_read("cam1", "NOMATCH1")
        ob.add_hit(make_hit(1))
        ob.record_read("cam1", "NOMATCH2")
        assert [h.plate.text for h in ob.pending()] == ["AB00001"]


# ---------------------------------------------------------------- disk budget


def _file_bytes(path):
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))


def test_budget_evicts_oldest_reads_first_and_never_a_hit(tmp_path):
    path = tmp_path / "o.db"
    budget = 16 * MB
    crop = b"\xff\xd8\xff" + bytes(40_000)
    with Outbox(path, disk_budget_bytes=budget, retention_s=86400) as ob:
        hits = [ob.add_hit(make_hit(n, scene=50_000)) for n in range(40)]
        ids = [ob.record_read("cam1", f"R{i:05d}", crop_jpeg=crop) for i in range(600)]
        stats = ob.stats()
        assert stats["evicted_reads"] > 0
        kept = [r["id"] for r in ob.reads(1000)]
        assert kept == sorted(ids[-len(kept) :], reverse=True)  # the newest survive
        assert ob.backlog() == 40  # every hit is still here
        assert {h.hit_id for h in ob.pending(100)} == set(hits)
        assert ob.used_bytes() <= budget
    assert _file_bytes(path) <= budget * 1.05


def test_budget_spent_on_undelivered_hits_drops_scenes_not_hits(tmp_path, caplog):
    path = tmp_path / "o.db"
    with Outbox(path, disk_budget_bytes=16 * MB) as ob:
        ob.record_read("cam1", "R1", crop_jpeg=b"\xff\xd8\xff" + bytes(10_000))
        with caplog.at_level(logging.WARNING):
            for n in range(400):  # ~24 MB of hits for a 16 MB budget
                ob.add_hit(make_hit(n, crop=5000, scene=55_000))
        assert ob.backlog() == 400
        assert ob.reads() == []  # the read went first
        assert ob.degraded_hits > 0
        assert "stored without its scene" in caplog.text
        pending = ob.pending(400)
        assert all(h.crop_jpeg for h in pending)
        assert sum(1 for h in pending if not h.scene_jpeg) == ob.degraded_hits


def test_budget_below_minimum_is_refused(tmp_path):
    with pytest.raises(ValueError, match="disk_budget_bytes"):
        Outbox(tmp_path / "o.db", disk_budget_bytes=MB)


def test_stats_report_backlog_and_disk(tmp_path):
    with Outbox(tmp_path / "o.db", disk_budget_bytes=64 * MB) as ob:
        ob.add_hit(make_hit(1))
        ob.record_read("cam1", "X")
        s = ob.stats()
    assert s["backlog"] == 1 and s["reads"] == 1
    assert s["budget_bytes"] == 64 * MB and 0 < s["used_bytes"] < 64 * MB


def test_outbox_file_is_readable_by_plain_sqlite(tmp_path):
    path = tmp_path / "o.db"
    with Outbox(path) as ob:
        ob.add_hit(make_hit(1, priority=9))
    db = sqlite3.connect(path)
    assert db.execute("SELECT priority FROM hits").fetchall() == [(9,)]
    db.close()
