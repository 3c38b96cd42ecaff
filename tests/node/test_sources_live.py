"""Live sources against a scripted fake camera: buffering, failures, reconnection, secrets."""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
import traceback
from collections.abc import Iterable, Iterator

import numpy as np
import pytest

from edge.node.sources import Backoff, LiveSource, open_source
from edge.node.sources.capture import FFMPEG_OPTIONS_ENV
from edge.node.sources.live import PictureWatch

SECRET = "S3cr3tPa55"
URL = f"rtsp://admin:{SECRET}@10.1.2.3:554/Streaming/101?password={SECRET}"
WAIT = 5.0  # upper bound for waits on events; tests finish as soon as the event fires

# Timings short enough for quick tests; each test overrides what it exercises.
FAST = dict(
    buffer_size=16,
    open_timeout=5.0,
    stall_timeout=5.0,
    frozen_after=None,
    black_after=None,
    backoff_initial=0.01,
    backoff_max=0.04,
    backoff_jitter=0.0,
    check_interval=0.01,
)


def picture(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8)


class FakeStream:
    """One connection to the fake camera: plays `frames`, then fails its reads
    (`then="fail"`) or blocks inside read() like a stream that went quiet."""

    def __init__(
        self,
        frames: Iterable[np.ndarray] = (),
        *,
        then: str = "stall",
        opened: bool = True,
        pace: float = 0.0,
        gate: threading.Event | None = None,
    ) -> None:
        self._frames: Iterator[np.ndarray] = iter(frames)
        self.then = then
        self.opened = opened
        self.pace = pace  # keeps endless scripts from spinning a core; not for correctness
        self.gate = gate  # the camera's open blocks on it
        self.exhausted = threading.Event()
        self.released = threading.Event()
        self.unblock = threading.Event()

    def isOpened(self) -> bool:
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.pace:
            self.unblock.wait(self.pace)
        image = next(self._frames, None)
        if image is None:
            self.exhausted.set()
            if self.then == "stall":
                self.unblock.wait()
            return False, None
        return True, image.copy()

    def get(self, prop_id: int) -> float:
        return 0.0

    def release(self) -> None:
        self.released.set()


class FakeCamera:
    """The capture factory: each call opens the next scripted connection (or raises
    it, if it is an exception); once the script is spent the camera stays dark."""

    def __init__(self, *connections: FakeStream | Exception) -> None:
        self.script = list(connections)
        self.streams = [c for c in connections if isinstance(c, FakeStream)]
        self.opens: list[float] = []
        self._changed = threading.Condition()

    def __call__(self) -> FakeStream:
        with self._changed:
            self.opens.append(time.monotonic())
            self._changed.notify_all()
            item = self.script.pop(0) if self.script else FakeStream(opened=False)
        if isinstance(item, Exception):
            raise item
        if item.gate is not None:
            item.gate.wait(WAIT)
        return item

    def wait_opens(self, n: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.opens) >= n, WAIT)

    def unblock_all(self) -> None:
        for stream in self.streams:
            stream.unblock.set()
            if stream.gate is not None:
                stream.gate.set()


@pytest.fixture
def live():
    """Make LiveSources on fake cameras; close them and free blocked fakes afterwards."""
    made: list[tuple[LiveSource, FakeCamera]] = []

    def make(camera: FakeCamera, **options) -> LiveSource:
        src = LiveSource(camera, source_id="cam-1", **{**FAST, **options})
        made.append((src, camera))
        return src

    yield make
    for src, camera in made:
        camera.unblock_all()  # first: close() waits for a reader blocked in read()
        src.close()


def take(src: LiveSource, n: int):
    frames = [src.read(timeout=WAIT) for _ in range(n)]
    assert None not in frames, "the source stopped delivering"
    return frames


# -- delivery and buffering ------------------------------------------------------------


def test_frames_arrive_in_order_with_index_and_pts(live):
    camera = FakeCamera(FakeStream(picture(i) for i in range(5)))
    src = live(camera)
    assert src.live and src.source_id == "cam-1"

    frames = take(src, 5)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert all(np.array_equal(f.image, picture(i)) for i, f in enumerate(frames))
    assert all(a.pts <= b.pts for a, b in itertools.pairwise(frames))
    assert {f.source_id for f in frames} == {"cam-1"}
    health = src.health()
    assert (health.state, health.frames, health.dropped, health.reconnects) == ("live", 5, 0, 0)


def test_a_slow_consumer_gets_the_newest_frames_and_drops_are_counted(live):
    stream = FakeStream(picture(i) for i in range(10))
    src = live(FakeCamera(stream), buffer_size=2)
    assert stream.exhausted.wait(WAIT)  # all ten were pushed before the consumer read one

    frames = take(src, 2)
    assert [f.index for f in frames] == [8, 9]
    assert np.array_equal(frames[1].image, picture(9))
    assert src.read(timeout=0.01) is None
    health = src.health()
    assert (health.frames, health.dropped) == (10, 8)


def test_a_consumer_less_than_buffer_s_behind_loses_nothing_and_further_behind_gets_recent_frames(
        live):
    # frames pushed on a clock the test sets (the stream itself sends none): a pipeline
    # busy for 0.36 s of a 25 fps stream (a pass's views read again) finds every frame
    src = live(FakeCamera(FakeStream([], then="stall")), buffer_s=0.5, buffer_size=32)
    t0 = src._t0
    for i in range(10):
        src._push(picture(i), t0 + 0.04 * i)
    assert [f.index for f in take(src, 10)] == list(range(10))
    assert src.health().dropped == 0
    # away for 1.2 s: only the last half second's frames wait for it
    for i in range(10, 40):
        src._push(picture(i), t0 + 0.04 * i)
    frames = take(src, 13)
    assert [f.index for f in frames] == list(range(27, 40))
    assert src.read(timeout=0.01) is None and src.health().dropped == 17


def test_close_ends_a_waiting_iterator_promptly(live):
    camera = FakeCamera(FakeStream([picture(0)]))  # one frame, then silence
    src = live(camera)
    seen: list[int] = []
    finished = threading.Event()

    def consume() -> None:
        for frame in src:
            seen.append(frame.index)
        finished.set()

    threading.Thread(target=consume, daemon=True).start()
    assert src.wait_for_state("live", timeout=WAIT)
    src.close()
    assert finished.wait(WAIT)
    assert seen in ([], [0])
    assert src.health().state == "ended"


def test_close_during_a_long_backoff_returns_at_once(live):
    camera = FakeCamera(ConnectionRefusedError("refused"))
    src = live(camera, backoff_initial=60.0, backoff_max=60.0)
    assert src.wait_for_state("dead", timeout=WAIT)
    started = time.monotonic()
    src.close()
    assert time.monotonic() - started < WAIT  # not the 60 s back-off
    assert list(src) == []


def test_close_waits_for_the_reader_to_finish_its_read_and_release(live):
    # A reader still inside OpenCV's read() when the interpreter exits aborts the
    # process (pthread_exit meets OpenCV's catch (...)): under systemd every stop of a
    # live camera ended in SIGABRT. close() waits for the read in progress.
    stream = FakeStream([picture(0)])  # one frame, then the next is late
    src = live(FakeCamera(stream))
    assert src.wait_for_state("live", timeout=WAIT)
    assert stream.exhausted.wait(WAIT)  # the reader is inside read()
    late_frame = threading.Timer(0.3, stream.unblock.set)
    late_frame.start()
    try:
        src.close(timeout=WAIT)
        assert stream.released.is_set()  # released before close() returned
    finally:
        late_frame.cancel()


# -- failure detection and reconnection ------------------------------------------------


def test_read_failure_reconnects_and_frames_keep_counting(live, caplog):
    first = FakeStream((picture(i) for i in range(3)), then="fail")
    second = FakeStream(picture(i) for i in range(3, 6))
    with caplog.at_level(logging.INFO, logger="edge.node.sources"):
        src = live(FakeCamera(first, second))
        frames = take(src, 6)

    assert [f.index for f in frames] == list(range(6))
    assert np.array_equal(frames[4].image, picture(4))
    assert first.released.wait(WAIT)
    health = src.health()
    assert (health.state, health.reconnects) == ("live", 1)
    assert "read failed" in health.last_error
    assert "read failed" in caplog.text and "live again" in caplog.text


def test_failed_opens_retry_with_doubling_backoff(live):
    camera = FakeCamera(
        OSError("connection refused"),
        FakeStream(opened=False),
        FakeStream(opened=False),
        FakeStream([picture(1)]),
    )
    src = live(camera, backoff_initial=0.02, backoff_max=0.08)
    assert take(src, 1)[0].index == 0

    gaps = [b - a for a, b in itertools.pairwise(camera.opens)]
    # Event waits never return early, so each gap is at least its delay.
    assert [g >= d - 0.001 for g, d in zip(gaps, [0.02, 0.04, 0.08], strict=True)] == [True] * 3
    health = src.health()
    assert (health.state, health.reconnects) == ("live", 3)


def test_a_stream_that_goes_quiet_is_declared_dead_and_reopened(live, caplog):
    quiet = FakeStream([picture(0)])  # one frame, then read() blocks
    camera = FakeCamera(quiet, FakeStream([picture(1), picture(2)]))
    with caplog.at_level(logging.WARNING, logger="edge.node.sources"):
        src = live(camera, stall_timeout=0.1)
        frames = take(src, 3)

    assert [f.index for f in frames] == [0, 1, 2]
    assert "no frame for" in src.health().last_error
    assert "dead" in caplog.text
    # The abandoned reader releases its own capture once the backend read returns.
    assert not quiet.released.is_set()
    quiet.unblock.set()
    assert quiet.released.wait(WAIT)


def test_an_open_that_never_answers_is_abandoned(live):
    hung = threading.Event()
    camera = FakeCamera(FakeStream([picture(0)], gate=hung), FakeStream([picture(1)]))
    src = live(camera, open_timeout=0.1)
    frame = take(src, 1)[0]
    assert np.array_equal(frame.image, picture(1))
    assert "no answer within" in src.health().last_error


@pytest.mark.parametrize(
    ("kind", "frames", "message"),
    [
        ("frozen", lambda: itertools.repeat(picture(7)), "unchanged"),
        ("black", lambda: itertools.repeat(np.zeros((24, 32, 3), np.uint8)), "black"),
    ],
)
def test_frozen_or_black_picture_is_reported_then_reconnected(live, caplog, kind, frames, message):
    gate = threading.Event()
    bad = FakeStream(frames(), pace=0.002)
    camera = FakeCamera(bad, FakeStream([picture(1)], gate=gate))
    with caplog.at_level(logging.WARNING, logger="edge.node.sources"):
        src = live(camera, frozen_after=0.1, black_after=0.1, buffer_size=1)
        # The reopen waits on the gate, so the reported state holds still to be read.
        assert camera.wait_opens(2)
        health = src.health()
        assert health.state == kind
        assert message in health.last_error
        gate.set()
        assert src.wait_for_state("live", timeout=WAIT)
    assert bad.released.wait(WAIT)
    assert f"cam-1: {kind}" in caplog.text
    assert src.health().reconnects == 1


# -- the pieces, without threads -------------------------------------------------------


def test_backoff_doubles_to_the_cap_and_resets():
    backoff = Backoff(1.0, 60.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    backoff.reset()
    assert backoff.next_delay() == 1


def test_backoff_jitter_stays_within_its_spread():
    backoff = Backoff(1.0, 60.0, jitter=0.2, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    bases = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert all(0.8 * b <= d <= min(60, 1.2 * b) for d, b in zip(delays, bases, strict=True))
    assert len(set(delays)) == len(delays)


def test_picture_watch_tells_a_still_scene_from_a_frozen_feed():
    watch = PictureWatch(frozen_after=10, black_after=10, black_level=3)
    scene = np.random.default_rng(0).integers(40, 200, (72, 128, 3), dtype=np.uint8)
    noise = np.random.default_rng(1)
    for t in range(0, 60):  # a minute of a still road with sensor noise
        noisy = np.clip(scene + noise.normal(0, 2, scene.shape), 0, 255).astype(np.uint8)
        assert watch.check(noisy, float(t)) is None
    results = [watch.check(scene, float(t)) for t in range(60, 72)]
    assert results[:10] == [None] * 10
    assert results[10][0] == "frozen"


def test_picture_watch_reports_black_not_frozen_and_a_dark_scene_is_fine():
    watch = PictureWatch(frozen_after=1, black_after=5, black_level=3)
    black = np.zeros((72, 128, 3), np.uint8)
    assert [watch.check(black, float(t)) for t in range(5)] == [None] * 5
    assert watch.check(black, 5.0)[0] == "black"
    night = PictureWatch(frozen_after=None, black_after=1, black_level=3)
    dark = np.full((72, 128, 3), 12, np.uint8)
    assert [night.check(dark, float(t)) for t in range(5)] == [None] * 5


# -- credentials -----------------------------------------------------------------------


def test_credentials_never_reach_logs_errors_repr_or_health(live, caplog):
    camera = FakeCamera(
        RuntimeError(f"could not connect to {URL}"),  # backends do echo the URL
        FakeStream(opened=False),
        FakeStream([picture(0)], then="fail"),
    )
    with caplog.at_level(logging.DEBUG):
        src = open_source(URL, capture_factory=camera, **FAST)
        try:
            assert take(src, 1)
            assert camera.wait_opens(4)
            texts = [repr(src), src.source_id, str(src.health()), caplog.text]
            texts += [r.getMessage() for r in caplog.records]
            texts += [t.name for t in threading.enumerate()]
        finally:
            src.close()
    assert src.source_id == "rtsp://10.1.2.3:554/Streaming/101"
    assert "could not connect to rtsp://***@10.1.2.3" in caplog.text
    assert not [t for t in texts if SECRET in t]


def test_real_backend_failure_leaks_no_credentials(caplog, capfd, monkeypatch):
    # Loopback only: port 9 refuses at once, so this is FFmpeg's real failure path
    # (and its own stderr output) without any network.
    monkeypatch.delenv(FFMPEG_OPTIONS_ENV, raising=False)
    url = f"rtsp://admin:{SECRET}@127.0.0.1:9/stream"
    with caplog.at_level(logging.DEBUG):
        src = open_source(url, open_timeout=2, stall_timeout=2, backoff_initial=30,
                          backoff_max=30)
        try:
            assert src.wait_for_state("dead", timeout=WAIT)
            health = src.health()
        finally:
            src.close()
    out, err = capfd.readouterr()
    assert health.last_error and "could not open" in health.last_error
    for text in (out, err, caplog.text, repr(src), str(health)):
        assert SECRET not in text


def test_exceptions_from_a_bad_url_carry_no_credentials():
    with pytest.raises(Exception) as err:
        open_source(f"rtsp://admin:{SECRET}@", capture_factory=FakeCamera())
    assert SECRET not in "".join(traceback.format_exception(err.value))
