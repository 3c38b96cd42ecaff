"""The node's shutdown: SIGTERM mid-replay loses no pass, and the vehicles in view are flushed.

What a node stopped after N frames owes is exactly what the pipeline makes of those N
frames followed by finish() (the tracker's open tracks): the tests compare with that.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.link import wait_for
from helpers.service import (
    CLIP_FPS,
    NodeProcess,
    drive_by_clip,
    models_or_skip,
    node_config,
    stored_reads,
)

from edge.core.status import ProblemKind
from edge.core.types import Frame, PlateEvent
from edge.node.config import load_config
from edge.node.pipeline import VideoPipeline
from edge.node.service import EdgeService
from edge.node.sources import VideoFileSource

pytestmark = pytest.mark.models
STOPPED = re.compile(r"camera lane-1: (\w+) after (\d+) frames; (\d+) pass\(es\) in flight")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    models_or_skip()
    return drive_by_clip(tmp_path_factory)


def owed(engines, config_path: Path, clip_path: Path, frames: int) -> list[PlateEvent]:
    """The passes a node that took `frames` frames of the clip must emit."""
    camera = load_config(config_path).cameras[0]
    assert camera.pipeline is not None
    pipeline = VideoPipeline(engines, camera.pipeline, camera.id)
    events: list[PlateEvent] = []
    with VideoFileSource(clip_path, source_id=camera.id) as source:
        for frame in source:
            if frame.index >= frames:
                break
            if pipeline.wants(frame.pts):
                events += pipeline.process(frame).events
    return events + pipeline.finish()


def key(event: dict) -> tuple[str, float, float]:
    return event["text"], event["first_seen"], event["last_seen"]


def same_instant(a: str, b: str) -> bool:
    return abs(dt.datetime.fromisoformat(a) - dt.datetime.fromisoformat(b)) < dt.timedelta(
        milliseconds=1)


def test_sigterm_mid_replay_loses_no_pass(tmp_path, clip, engines):
    clip_path, _ = clip
    config = node_config(tmp_path, clip_path)
    node = NodeProcess(config, tmp_path / "edge.log")
    try:
        node.wait_lines(1)
        node.signal(signal.SIGTERM)
        assert node.wait(30) == 0
    finally:
        node.kill()
    log = (tmp_path / "edge.log").read_text()
    assert "signal SIGTERM: stopping" in log
    state, frames, flushed = STOPPED.search(log).groups()  # type: ignore[union-attr]
    assert state == "stopped", "the replay ended before the signal: make the clip longer"
    expected = owed(engines, config, clip_path, int(frames))
    assert [key(e) for e in node.lines] == [key(e.to_json()) for e in expected]
    assert len(expected) >= 1 + int(flushed)
    # every pass printed is in the store, printed after it was stored
    reads = stored_reads(tmp_path / "state")
    assert [plate for plate, _ in reads] == [e["text"] for e in node.lines]
    assert all(same_instant(seen, e["seen_at"]) for (_, seen), e in zip(reads, node.lines,
                                                                         strict=True))


class GatedFile:
    """The clip, holding back frame `gate_at` until told: the moment SIGTERM lands."""

    live = False

    def __init__(self, path: Path, source_id: str, gate_at: int) -> None:
        self.inner = VideoFileSource(path, source_id=source_id)
        self.source_id, self.nominal_fps = source_id, self.inner.nominal_fps
        self.gate_at = gate_at
        self.reached = threading.Event()
        self.gate = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        for frame in self.inner:
            if frame.index == self.gate_at:
                self.reached.set()
                self.gate.wait()
            yield frame

    def health(self):  # noqa: ANN201
        return self.inner.health()

    def close(self) -> None:
        self.inner.close()


def test_stop_mid_pass_emits_and_stores_the_vehicles_in_view(tmp_path, clip, engines):
    clip_path, truth = clip
    first, second = truth[0], truth[1]
    # the second car is in view and read; the first has gone, its pass not yet closed
    gate_at = (second.first_frame + second.last_frame) // 2
    assert first.last_frame < gate_at < first.last_frame + CLIP_FPS  # max_age_s is 1 s
    config_path = node_config(tmp_path, clip_path)
    source = GatedFile(clip_path, "lane-1", gate_at)
    out = io.StringIO()
    service = EdgeService(load_config(config_path), engines=engines, events_out=out,
                          source_factory=lambda camera: source)
    service.start()
    assert source.reached.wait(60)
    assert out.getvalue() == ""  # nothing has left the tracker yet
    stopper = threading.Thread(target=service.stop)
    stopper.start()
    wait_for(service.stop_event.is_set, 10, "stop to begin")
    source.gate.set()
    stopper.join(30)
    assert not stopper.is_alive()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    expected = owed(engines, config_path, clip_path, gate_at)
    assert [key(e) for e in lines] == [key(e.to_json()) for e in expected]
    for car in (first, second):  # both cars made a pass, each over its own frames
        assert any(e["first_seen"] * CLIP_FPS <= car.last_frame and
                   e["last_seen"] * CLIP_FPS >= car.first_frame for e in lines), car
    assert [plate for plate, _ in stored_reads(tmp_path / "state")] == [e["text"] for e in lines]
    assert service.workers[0].health.state == "stopped"


def test_a_camera_loop_that_breaks_ends_the_node_for_a_restart(tmp_path, engines, caplog):
    def broken(camera):  # noqa: ANN001, ANN202
        raise RuntimeError("a bug, not a bad stream")

    service = EdgeService(load_config(node_config(tmp_path, "unused.mp4")), engines=engines,
                          source_factory=broken)
    service.start()
    try:
        assert service.wait() is True
        assert service.workers[0].failed
        assert [str(f) for f in service.faults()] == [
            "camera lane-1: loop failed (RuntimeError('a bug, not a bad stream'))"]
        assert service.faults()[0].kind == ProblemKind.LOOP_FAILED
        assert not service.status().health.ok
    finally:
        service.stop()
    assert "the camera loop failed" in caplog.text


def test_a_node_stopped_before_it_started_closes_cleanly(tmp_path, engines):
    """SIGTERM while the models load: nothing was started, and stop() still flushes."""
    service = EdgeService(load_config(node_config(tmp_path, "unused.mp4")), engines=engines)
    service.stop()
    service.stop()  # twice is harmless
    assert service.workers[0].thread.ident is None
