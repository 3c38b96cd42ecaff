"""Decoding on its own thread: a file decodes ahead of its consumer, every frame in order;
a live source under a slow consumer keeps the newest frames; a decoder thread that dies
or stalls is reported and the camera reopened, without leaking a thread per stall."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_sources_live import FAST, WAIT, FakeCamera, FakeStream, picture

import edge.node.service
import edge.node.sources.video
from edge.core.status import CameraState, Problem, ProblemKind
from edge.core.types import Frame
from edge.node.config import EdgeConfig, HealthConfig
from edge.node.health import CameraHealth
from edge.node.pipeline import FrameResult
from edge.node.service import CameraWorker
from edge.node.sources import (
    Backoff,
    LiveSource,
    Source,
    SourceHealth,
    VideoFileSource,
    open_source,
)
from edge.node.sources.decode import MAX_STUCK_DECODERS, stuck_decoders


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Wait on a condition that another thread makes true (an Event's wait, not a sleep)."""
    tick = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if check():
            return
        tick.wait(0.005)
    raise AssertionError(f"timed out waiting for {what}")


class ScriptedCapture:
    """A file's decoder: `frames` pictures, then the end (`then="end"`), an exception
    (`"raise"`) or a read() that blocks until `unblock` is set (`"block"`). It notes how
    far its reads ran ahead of the frames the test has `taken`, and on which threads."""

    def __init__(self, frames: int, then: str = "end", *, fps: float = 10.0) -> None:
        self.frames, self.then, self.fps = frames, then, fps
        self.reads = 0
        self.taken = 0
        self.lead = 0  # the most reads ahead of the frames taken
        self.threads: set[int] = set()
        self.unblock = threading.Event()
        self.blocked = threading.Event()
        self.released = threading.Event()
        self.changed = threading.Condition()

    def read(self) -> tuple[bool, np.ndarray | None]:
        with self.changed:
            self.threads.add(threading.get_ident())
            i = self.reads
            if i < self.frames:
                self.reads += 1
                self.lead = max(self.lead, self.reads - self.taken)
                self.changed.notify_all()
                return True, picture(i)
        if self.then == "raise":
            raise RuntimeError("decoder exploded")
        if self.then == "block":
            self.blocked.set()
            self.unblock.wait()
        return False, None

    def take(self) -> None:
        with self.changed:
            self.taken += 1

    def wait_reads(self, n: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.reads >= n, WAIT)

    def isOpened(self) -> bool:
        return True

    def get(self, prop_id: int) -> float:
        return self.fps if prop_id == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def video_path(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"  # the decoder is scripted; the file need only exist
    path.write_bytes(b"\0" * 16)
    return path


# -- files: decode-ahead -----------------------------------------------------------------


def test_a_file_decodes_ahead_on_its_own_thread_every_frame_in_order(video_path):
    cap = ScriptedCapture(20)
    src = VideoFileSource(video_path, source_id="ahead", capture_factory=lambda: cap)
    frames = iter(src)
    first = next(frames)
    cap.take()
    # while the consumer holds frame 0 (inference), the decoder goes on without it...
    assert cap.wait_reads(5), "no decoding ahead of the consumer"
    taken = [first]
    for frame in frames:
        cap.take()
        taken.append(frame)
    # ...every frame comes, in order, none dropped, and only a few frames ahead (memory)
    assert [f.index for f in taken] == list(range(20))
    assert all(np.array_equal(f.image, picture(i)) for i, f in enumerate(taken))
    assert [f.pts for f in taken] == [i / 10 for i in range(20)]
    assert cap.lead <= 4 + 2
    assert len(cap.threads) == 2  # the constructor's first read, then the decoder thread
    health = src.health()
    assert (health.state, health.frames, health.dropped) == ("ended", 20, 0)
    assert cap.released.is_set()


def test_decode_ahead_replays_a_real_file_exactly_as_decoding_in_line(tmp_path):
    path = tmp_path / "real.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (64, 48))
    for i in range(30):
        writer.write(np.full((48, 64, 3), i * 8, np.uint8))
    writer.release()

    def frames(**options: int) -> list[tuple[int, float, bytes]]:
        with open_source(path, **options) as src:
            return [(f.index, f.pts, f.image.tobytes()) for f in src]

    ahead = frames()
    assert ahead == frames(decode_ahead=0) and len(ahead) == 30


def test_breaking_off_a_file_mid_way_stops_its_decoder(video_path):
    cap = ScriptedCapture(1000)
    src = VideoFileSource(video_path, source_id="brk", capture_factory=lambda: cap)
    for frame in src:
        if frame.index == 3:
            break
    assert cap.released.is_set()
    assert not [t for t in threading.enumerate() if t.name == "decode-brk"]
    assert cap.reads < 20


def test_a_decoder_that_raises_ends_iteration_with_its_error_and_says_so(video_path):
    cap = ScriptedCapture(3, "raise")
    src = VideoFileSource(video_path, source_id="boom", capture_factory=lambda: cap)
    seen = []
    with pytest.raises(RuntimeError, match="decoder exploded"):
        for frame in src:
            seen.append(frame.index)
    assert seen == [0, 1, 2]  # the frames decoded before it died still came
    health = src.health()
    assert health.state == "dead" and "decoder thread died" in (health.decoder_failed or "")


# -- live: the newest frames under a slow consumer ---------------------------------------


class FakePipeline:
    """The pipeline's interface to the camera loop, without models; `gate` holds the
    first frame's analysis (a slow inference) until set."""

    gate: threading.Event | None = None
    analysed: list[int] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def wants(self, pts: float) -> bool:
        return True

    def process(self, frame: Frame) -> FrameResult:
        FakePipeline.analysed.append(frame.index)
        if len(FakePipeline.analysed) == 1 and FakePipeline.gate is not None:
            FakePipeline.gate.wait(WAIT)
        return FrameResult(frame.index, frame.pts, False, False)

    def finish(self) -> list:
        return []

    def take_closed(self) -> list[int]:
        return []


class TickingClock:
    """A fake monotonic clock that moves `step` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.now += self.step
            return self.now


@pytest.fixture
def camera(monkeypatch):
    """Make a CameraWorker on a scripted source factory, with a fake pipeline and a
    fake health clock; stop it afterwards."""
    made: list[tuple[CameraWorker, threading.Event]] = []
    monkeypatch.setattr(edge.node.service, "VideoPipeline", FakePipeline)
    monkeypatch.setattr(edge.node.service, "POLL_S", 0.01)
    monkeypatch.setattr(edge.node.sources.video, "CLOSE_WAIT_S", 0.05, raising=False)
    FakePipeline.gate, FakePipeline.analysed = None, []

    def make(camera_id: str, factory: Callable[[object], Source],
             clock_step: float = 1.0) -> CameraWorker:
        config = EdgeConfig.model_validate({"cameras": [{"id": camera_id, "source": "x"}]})
        stop = threading.Event()
        w = CameraWorker(config.cameras[0], None, lambda *a: None, stop,  # type: ignore[arg-type]
                         health=HealthConfig(stall_s=20), source_factory=factory,
                         backoff=Backoff(0.01, 0.02, jitter=0.0))
        # the fake clock: each read of it is `clock_step` s later (the limit: _open_source)
        w.health = CameraHealth(camera_id, clock=TickingClock(clock_step))
        made.append((w, stop))
        return w

    yield make
    for w, stop in made:
        stop.set()
        w.thread.join(WAIT)


def test_a_live_camera_under_a_slow_pipeline_keeps_the_newest_frames_and_counts_drops(camera):
    stream = FakeStream((picture(i % 7) for i in range(100_000)), pace=0.001)
    source = LiveSource(FakeCamera(stream), source_id="busy", **{**FAST, "buffer_size": 2})
    FakePipeline.gate = threading.Event()
    w = camera("busy", lambda c: source)
    w.health = CameraHealth("busy")  # real time: the camera is judged as it delivers
    w.start()
    try:
        wait_until(lambda: len(FakePipeline.analysed) == 1, "the first analysis")
        first_index = FakePipeline.analysed[0]
        dropped = source.health().dropped
        # inference is busy: decoding goes on, dropping the oldest frames
        wait_until(lambda: source.health().dropped >= dropped + 50, "frames dropped while busy")
        newest = source.health().frames
        FakePipeline.gate.set()
        wait_until(lambda: len(FakePipeline.analysed) >= 2, "the next analysis")
        # the next frame analysed is one of the newest, not the one after the first
        assert FakePipeline.analysed[1] >= newest - 3
        assert FakePipeline.analysed[1] >= first_index + 50
        wait_until(lambda: w.status.dropped >= 50, "drops in the camera's status")
        assert w.report().dropped >= 50
    finally:
        stream.unblock.set()
        source.close()


# -- a decoder thread that dies or stalls: reported, and the camera reopened --------------


def test_a_file_decoder_that_raises_is_reported_and_the_camera_reopened(camera, video_path):
    caps: list[ScriptedCapture] = []

    def factory(c: object) -> Source:
        cap = ScriptedCapture(3, "raise")
        caps.append(cap)
        return VideoFileSource(video_path, source_id="dies", capture_factory=lambda: cap)

    w = camera("dies", factory)
    w.start()
    wait_until(lambda: len(caps) >= 2, "the camera reopened")
    wait_until(lambda: w.health.state == CameraState.DEAD
               and "decoder thread died" in w.health.detail, "the death reported")
    assert w.thread.is_alive() and not w.failed  # the loop goes on: not a crashed loop
    report = w.report()
    assert report.state == "dead" and not report.ok and report.reconnects >= 1
    assert "RuntimeError: decoder exploded" in report.last_error
    assert FakePipeline.analysed[:3] == [0, 1, 2]  # what it decoded before it died


def test_a_live_reader_that_dies_of_anything_is_reported_and_reopened_at_once():
    class Killed(BaseException):
        """What no `except Exception` catches (a library's SystemExit, say)."""

    class DyingStream(FakeStream):
        def read(self) -> tuple[bool, np.ndarray | None]:
            raise Killed("reader killed")

    good = FakeStream([picture(1), picture(2)])
    # with a long stall timeout, only noticing the death itself reopens in time
    src = LiveSource(FakeCamera(DyingStream(), good), source_id="killed",
                     **{**FAST, "stall_timeout": 60.0})
    try:
        frames = [src.read(timeout=WAIT) for _ in range(2)]
        assert [f.index for f in frames if f is not None] == [0, 1]
        health = src.health()
        assert health.reconnects == 1 and "reader thread died: Killed" in health.last_error
    finally:
        good.unblock.set()
        src.close()


def test_a_file_decoder_that_stalls_is_reported_and_reopened_its_threads_bounded(
        camera, video_path, caplog):
    caps: list[ScriptedCapture] = []
    tried: list[int] = []

    def factory(c: object) -> Source:
        tried.append(len(tried))
        cap = ScriptedCapture(2, "block")  # two frames, then read() never returns
        source = VideoFileSource(video_path, source_id="stalls", capture_factory=lambda: cap)
        caps.append(cap)
        return source

    w = camera("stalls", factory)  # each read of the fake clock: 1 s later
    w.start()
    try:
        wait_until(lambda: len(caps) >= 2, "the stalled camera reopened")
        wait_until(lambda: len(tried) >= MAX_STUCK_DECODERS + 3, "reopen attempts")
        # a decoder blocked in read() cannot be stopped: but no more than
        # MAX_STUCK_DECODERS of them are left, however often the camera is retried
        assert len(caps) == MAX_STUCK_DECODERS
        stuck = [t for t in threading.enumerate() if t.name == "decode-stalls"]
        assert len(stuck) == MAX_STUCK_DECODERS == stuck_decoders("stalls")
        assert w.health.state == CameraState.DEAD and w.thread.is_alive()
        assert "still blocked in read()" in w.report().last_error
        assert w.status.reconnects >= 1
        # the stall was reported as such: "camera stalls: dead (decoder stalled: ...)"
        assert "stalls: dead (decoder stalled: no frame for 1" in caplog.text
        # once a stuck read returns, the camera is opened again
        caps[0].unblock.set()
        wait_until(lambda: len(caps) > MAX_STUCK_DECODERS, "reopened once a read returned")
        assert caps[0].released.wait(WAIT)  # the abandoned decoder released its own file
    finally:
        for cap in caps:
            cap.unblock.set()


def test_a_live_source_stalling_again_and_again_leaks_no_reader_threads():
    streams = [FakeStream([picture(i)]) for i in range(8)]  # each: one frame, then silence
    camera = FakeCamera(*streams)
    src = LiveSource(camera, source_id="quiet", **{**FAST, "stall_timeout": 0.05})
    try:
        wait_until(lambda: "still blocked" in (src.health().last_error or ""),
                   "the camera held back over its stuck readers")
        readers = [t for t in threading.enumerate() if t.name == "source-quiet-reader"]
        assert len(camera.opens) == len(readers) == MAX_STUCK_DECODERS
        assert src.health().state == "dead"
        streams[0].unblock.set()  # one stuck read returns: its thread ends, a reopen follows
        wait_until(lambda: len(camera.opens) > MAX_STUCK_DECODERS, "the reopen")
    finally:
        camera.unblock_all()
        src.close()


def test_a_source_whose_watchdog_died_is_reported_for_the_node_to_reopen():
    class Broken:
        def uniform(self, low: float, high: float) -> float:
            raise RuntimeError("broken rng")

    src = LiveSource(FakeCamera(FakeStream(opened=False)), source_id="nowatch",
                     **{**FAST, "backoff_jitter": 0.2}, rng=Broken())  # type: ignore[arg-type]
    try:
        wait_until(lambda: src.health().decoder_failed is not None, "the watchdog's death")
        health = src.health()
        assert health.state == "dead"
        assert "source watchdog died: RuntimeError: broken rng" in (health.decoder_failed or "")
        cam = CameraHealth("nowatch")
        assert cam.observe(health) is True  # the node reopens the camera
        assert cam.state == "dead" and "watchdog died" in cam.detail
    finally:
        src.close()


def test_a_source_live_but_silent_past_the_decoder_timeout_is_a_stalled_decoder():
    clock = TickingClock(0.0)
    cam = CameraHealth("c", decoder_stall_s=5.0, clock=clock)
    health = SourceHealth("live", 25.0, 10, 0, 0, None, 0.0)
    assert cam.observe(health) is False
    cam.waited(False)
    clock.now = 4.9
    assert cam.observe(health) is False and cam.state == "live"
    cam.waited(True)  # a frame came: the wait starts afresh
    clock.now = 20.0
    assert cam.observe(health) is False
    cam.waited(False)
    clock.now = 25.5
    assert cam.observe(health) is True
    assert cam.state == "dead" and cam.detail.startswith("decoder stalled: no frame for 5.5 s")
    # a camera away (connecting, dead) is its own source's to wait for: never a stall
    cam2 = CameraHealth("d", decoder_stall_s=5.0, clock=clock)
    away = SourceHealth("connecting", 0.0, 10, 0, 0, None, 0.0)
    cam2.waited(False)
    clock.now = 100.0
    assert cam2.observe(away) is False
    # reported under the kind its state has
    assert Problem.of_camera("c", cam.state, cam.detail).kind == ProblemKind.DEAD
