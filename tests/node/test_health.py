"""Camera health: frozen, black, dead and slow cameras noticed and reported, the others going on;
the camera loop's progress as the watchdog sees it; the node's status and its metrics."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from helpers.link import free_port, wait_for
from test_sources_live import FakeStream

from edge.core.notify import Notifier
from edge.core.status import NodeStatus, ProblemKind, QueueStatus
from edge.core.types import Frame
from edge.node.config import CameraConfig, EdgeConfig, HealthConfig
from edge.node.health import CameraHealth, LoopWatch
from edge.node.service import CameraWorker, EdgeService
from edge.node.sources import Backoff, LiveSource, SourceHealth

WAIT = 15.0


# -- judging a camera, without threads ---------------------------------------------------


def health(state: str, fps: float = 25.0, error: str | None = None,
           reconnects: int = 0) -> SourceHealth:
    return SourceHealth(state=state, fps=fps, frames=100, dropped=0,  # type: ignore[arg-type]
                        reconnects=reconnects, last_error=error, since=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_frozen_camera_stays_reported_while_it_reconnects_and_looks_live_again():
    clock = Clock()
    cam = CameraHealth("a", recover_s=60, clock=clock)
    cam.observe(health("live"), 25)
    assert (cam.state, cam.ok) == ("live", True)
    cam.observe(health("frozen", error="picture unchanged for 20.0 s"), 25)
    assert (cam.state, cam.ok) == ("frozen", False)
    assert "unchanged" in cam.detail
    clock.now += 2
    cam.observe(health("connecting"), 25)
    assert cam.state == "frozen" and cam.detail.startswith("reconnecting")
    clock.now += 20  # live for a while: a frozen feed looks so until it is caught again
    cam.observe(health("live"), 25)
    assert (cam.state, cam.ok) == ("frozen", False)
    clock.now += 60
    cam.observe(health("live"), 25)
    assert (cam.state, cam.ok, cam.detail) == ("live", True, "")


def test_black_and_dead_are_reported_as_themselves():
    cam = CameraHealth("a", clock=Clock())
    cam.observe(health("black", error="picture black for 30.0 s"), 25)
    assert (cam.state, cam.ok) == ("black", False)
    cam.observe(health("dead", error="no frame for 10.0 s"), 25)
    assert (cam.state, cam.ok, cam.detail) == ("dead", False, "no frame for 10.0 s")


def test_trouble_between_two_looks_is_read_from_the_reconnect_and_its_reason():
    """A frozen connection, ended and reopened while the loop was busy with a frame:
    the loop finds the source live again, one reconnect later."""
    cam = CameraHealth("a", clock=Clock())
    cam.observe(health("live"), 25)
    cam.observe(health("live", error="picture unchanged for 20.0 s", reconnects=1), 25)
    assert (cam.state, cam.ok) == ("frozen", False)
    other = CameraHealth("b", clock=Clock())
    other.observe(health("connecting", error="picture black for 30.0 s", reconnects=2), 25)
    assert other.state == "black"
    dead = CameraHealth("c", clock=Clock())
    dead.observe(health("live", error="read failed (stream ended or broke)", reconnects=1), 25)
    assert dead.state == "dead"


def test_a_camera_below_its_frame_rate_for_long_is_slow_and_reopened_once():
    clock = Clock()
    cam = CameraHealth("a", min_fps_fraction=0.5, slow_after_s=30, recover_s=60, clock=clock)
    assert not cam.observe(health("live", fps=10), 25)  # 10 < 12.5: slow from now
    clock.now += 29
    assert not cam.observe(health("live", fps=10), 25)
    assert cam.state == "live"  # not yet for long
    clock.now += 1
    assert cam.observe(health("live", fps=10), 25)  # reopen
    assert (cam.state, cam.ok) == ("slow", False)
    assert "10.0 fps" in cam.detail and "expected 25 (configured)" in cam.detail
    clock.now += 1
    assert not cam.observe(health("live", fps=24), 25)  # reopened and fine, recovering
    assert cam.state == "slow"
    clock.now += 61
    cam.observe(health("live", fps=24), 25)
    assert cam.state == "live"


def test_a_short_dip_or_an_unknown_rate_is_not_slow():
    clock = Clock()
    cam = CameraHealth("a", slow_after_s=30, clock=clock)
    cam.observe(health("live", fps=5), 25)
    clock.now += 20
    cam.observe(health("live", fps=25), 25)  # the dip ends
    clock.now += 20
    assert not cam.observe(health("live", fps=5), 25)
    fresh = CameraHealth("b", slow_after_s=30, clock=clock)
    # nothing configured and nothing seen yet: nothing to judge by
    assert not fresh.observe(health("live", fps=1), None)
    assert fresh.state == "live" and fresh.expected_fps is None


def test_a_variable_rate_camera_is_judged_by_what_it_delivers_not_what_it_announces():
    """FFmpeg read 60 fps off a camera that delivers 14-22 (18 on average): against 60 it
    was slow for ever and reopened every half minute. Its own rate is the measure."""
    clock = Clock()
    cam = CameraHealth("vfr", min_fps_fraction=0.5, slow_after_s=30, clock=clock)
    swings = itertools.cycle([14.0, 22.0, 18.0, 16.0, 20.0])
    for _ in range(600):  # ten minutes, a look every second
        assert not cam.observe(health("live", fps=next(swings)), None)
        clock.now += 1
    assert (cam.state, cam.ok) == ("live", True)
    assert cam.expected_fps == 18.0
    # the same camera really slowing down, to 3 fps, is slow after 30 s and reopened
    reopened = [cam.observe(health("live", fps=3.0), None) for _ in range(31)
                if not setattr(clock, "now", clock.now + 1)]
    assert reopened.count(True) == 1 and cam.state == "slow"
    assert "3.0 fps" in cam.detail and "expected 18 (as delivered)" in cam.detail


def test_frames_arriving_with_none_analysed_is_blind_and_not_ok():
    clock = Clock()
    cam = CameraHealth("a", blind_after_s=5, clock=clock)
    cam.observe(health("live"), None, analysed_at=0.0)
    assert cam.state == "live"
    clock.now += 4
    cam.observe(health("live"), None, analysed_at=3.5)
    assert (cam.state, cam.blind_for()) == ("live", 0.0)
    clock.now += 6  # frames come in, the last one analysed at 3.5
    cam.observe(health("live", fps=18.5), None, analysed_at=3.5)
    assert (cam.state, cam.ok) == ("blind", False)
    assert cam.detail == ("processing nothing: frames arrive at 18.5 fps, none analysed "
                          "for 6 s")
    assert cam.blind_for() == 6.5
    cam.observe(health("live"), None, analysed_at=clock.now)  # analysing again
    assert (cam.state, cam.ok, cam.blind_for()) == ("live", True, 0.0)
    # a camera delivering nothing is dead or connecting, never blind
    clock.now += 60
    cam.observe(health("live", fps=0.0), None, analysed_at=clock.now - 60)
    assert cam.state == "live"


def test_connecting_is_fine_at_start_and_not_for_ever():
    clock = Clock()
    cam = CameraHealth("a", grace_s=30, clock=clock)
    cam.observe(health("connecting"), None)
    assert (cam.state, cam.ok) == ("connecting", True)
    clock.now += 31
    assert not cam.ok


# -- real camera loops on scripted cameras -----------------------------------------------

FROZEN = np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def still_scene(i: int) -> np.ndarray:
    """A scene where nothing moves but sensor noise: one pixel differs frame to frame."""
    image = FROZEN.copy()
    image[0, 0] = i % 256
    return image


def frozen() -> Iterator[np.ndarray]:
    return itertools.repeat(FROZEN)


def black() -> Iterator[np.ndarray]:
    return itertools.repeat(np.zeros((48, 64, 3), np.uint8))


def alive() -> Iterator[np.ndarray]:
    return (still_scene(i) for i in itertools.count())


def camera_factory(frames: Callable[[], Iterator[np.ndarray]] | None, opens: list[float], *,
                   pace: float = 0.02, nominal_fps: float | None = None
                   ) -> Callable[[CameraConfig], LiveSource]:
    """A live camera whose every connection plays `frames` (a new FakeStream each time);
    with `frames` None, one that never answers."""

    def open_camera(camera: CameraConfig) -> LiveSource:
        def connect() -> FakeStream:
            opens.append(time.monotonic())
            if frames is None:
                return FakeStream(opened=False)
            return FakeStream(frames(), pace=pace)

        return LiveSource(connect, source_id=camera.id, nominal_fps=nominal_fps,
                          frozen_after=0.3, black_after=0.3, backoff_initial=0.05,
                          backoff_max=0.2, backoff_jitter=0.0, check_interval=0.01)

    return open_camera


def node_config(tmp_path, *ids: str, **health: object) -> EdgeConfig:
    return EdgeConfig.model_validate({
        "node_id": "health-test", "state_dir": str(tmp_path / "state"), "analysis_fps": 2,
        "cameras": [{"id": i, "source": f"rtsp://cam-{i}.invalid/s"} for i in ids],
        "health": health,
    })


@pytest.mark.models
def test_frozen_and_black_cameras_are_reported_and_the_other_goes_on(tmp_path, engines):
    opens: dict[str, list[float]] = {"frozen": [], "black": [], "good": []}
    makers = {"frozen": camera_factory(frozen, opens["frozen"]),
              "black": camera_factory(black, opens["black"]),
              "good": camera_factory(alive, opens["good"], pace=0.04)}
    port = free_port()
    config = node_config(tmp_path, "frozen", "black", "good", metrics_port=port)
    service = EdgeService(config, engines=engines,
                          source_factory=lambda c: makers[c.id](c))
    try:
        service.start()

        def states() -> dict[str, str]:
            return {c: s.state for c, s in service.status().cameras.items()}

        wait_for(lambda: states() == {"frozen": "frozen", "black": "black", "good": "live"},
                 WAIT, "frozen, black and live")
        # each bad camera is retried: the source reconnects, with back-off
        wait_for(lambda: len(opens["frozen"]) >= 3 and len(opens["black"]) >= 3, WAIT,
                 "reconnects")
        frames = service.status().cameras["good"].frames
        wait_for(lambda: service.status().cameras["good"].frames > frames + 10, WAIT,
                 "the good camera to go on")
        status = service.status()
        cams = status.cameras
        assert states() == {"frozen": "frozen", "black": "black", "good": "live"}
        assert "unchanged" in cams["frozen"].detail and "black" in cams["black"].detail
        assert cams["frozen"].reconnects >= 2 and cams["good"].reconnects == 0
        assert (cams["frozen"].ok, cams["black"].ok, cams["good"].ok) == (False, False, True)
        assert cams["good"].fps > 5
        assert not status.health.ok
        kinds = {(p.camera, p.kind) for p in status.health.problems}
        assert {("frozen", ProblemKind.FROZEN), ("black", ProblemKind.BLACK)} <= kinds
        problems = " ".join(str(p) for p in status.health.problems)
        assert "camera frozen: frozen" in problems and "camera black: black" in problems
        assert "good" not in problems
        # the rest of what a heartbeat carries
        assert status.config == service.config_hash and len(status.config) == 12
        assert set(status.models) >= {"plates", "ocr-ppocrv6-small"}
        assert status.queue == QueueStatus(hits_waiting=0, hits_held=0)
        assert status.outbox is not None and status.outbox.backlog == 0
        disk = status.disk
        assert disk is not None
        assert disk.budget_bytes == 2048 * 1024**2 and 0 < disk.used_bytes
        assert disk.used_fraction == round(disk.used_bytes / disk.budget_bytes, 4)
        assert disk.free_bytes > 0
        assert status.heartbeat_s == 10.0 and status.node == "health-test"
        # as the heartbeat carries it, and as the collector reads it back
        assert NodeStatus.model_validate(json.loads(json.dumps(
            status.model_dump(mode="json")))) == status
        assert "frozen frozen" in service.status_line() and "good live" in service.status_line()

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        text = metrics.read().decode()
        assert 'anpr_edge_camera_state{camera="frozen",state="frozen"} 1.0' in text
        assert 'anpr_edge_camera_state{camera="black",state="black"} 1.0' in text
        assert 'anpr_edge_camera_ok{camera="good"} 1.0' in text
        assert 'anpr_edge_camera_reconnects_total{camera="frozen"}' in text
        assert "anpr_edge_healthy 0.0" in text and "anpr_edge_outbox_budget_bytes" in text
        assert "anpr_edge_outbox_hits_in_memory 0.0" in text
        assert "anpr_edge_outbox_dropped_hits_total 0.0" in text
        assert f'config="{service.config_hash}"' in text
    finally:
        service.stop()
    # the metrics endpoint went with the node
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def worker(camera_id: str, engines, factory, stop: threading.Event, fps: float | None = None,
           **health) -> CameraWorker:
    config = EdgeConfig.model_validate({"cameras": [{"id": camera_id, "source": "x",
                                                     "fps": fps}]})
    return CameraWorker(config.cameras[0], engines, lambda *a: None, stop,
                        health=HealthConfig(**health), source_factory=factory,
                        backoff=Backoff(0.05, 0.1, jitter=0.0))


@pytest.mark.models
def test_a_camera_whose_frame_rate_drops_is_reported_slow_and_reopened(engines):
    opens: list[float] = []
    stop = threading.Event()
    # configured 25 fps, delivering about 10
    w = worker("slow", engines, camera_factory(alive, opens, pace=0.1), stop, fps=25,
               slow_after_s=0.5, recover_s=30)
    w.start()
    try:
        wait_for(lambda: w.health.state == "slow" and len(opens) >= 2, WAIT, "slow, reopened")
        assert "expected 25 (configured)" in w.health.detail and w.status.reconnects >= 1
    finally:
        stop.set()
        w.thread.join(WAIT)
    assert w.health.state == "stopped"


class HungFile:
    """A file source whose decoder never returns: the hung pipeline the watchdog is for."""

    live = False
    nominal_fps = 10.0
    source_id = "hung"

    def __init__(self) -> None:
        self.release = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        self.release.wait()
        return iter(())

    def health(self) -> SourceHealth:
        return health("live")

    def close(self) -> None:
        self.release.set()


@pytest.mark.models
def test_a_hung_loop_stops_the_pings_a_camera_being_reconnected_does_not(engines):
    stop = threading.Event()
    hung = HungFile()
    opens: list[float] = []
    dead_camera = camera_factory(None, opens)
    workers = [worker("hung", engines, lambda c: hung, stop),
               worker("away", engines, dead_camera, stop)]
    watch = LoopWatch(Notifier(None), lambda: [w.loop() for w in workers if w.loop()],
                      period_s=0.1, stall_s=1.5)
    for w in workers:
        w.start()
    try:
        # the camera that is away goes round while it waits to reconnect: never hung
        wait_for(lambda: watch.problems(), WAIT, "the hung loop to be noticed")
        assert watch.problems()[0].startswith("camera hung: no progress for")
        assert len(watch.problems()) == 1
        assert not watch.tick()
        end = time.monotonic() + 2.0
        while time.monotonic() < end:  # 2 s > stall_s of a dead camera, reconnecting
            assert not any("away" in p for p in watch.problems())
            time.sleep(0.05)
        assert len(opens) >= 3
        assert workers[1].health.state == "dead"
    finally:
        stop.set()
        hung.release.set()
        for w in workers:
            w.thread.join(WAIT)


class ReopenedCamera:
    """A live camera on its own clock, as a stream reopened by the node is: its frames'
    pts start at `pts0` and go up by `step` a frame; health() says live at `fps`."""

    live = True
    nominal_fps = None

    def __init__(self, camera: str, pts0: float, fps: float, step: float = 0.04) -> None:
        self.source_id = camera
        self.pts, self.fps, self.step = pts0, fps, step
        self.index = 0
        self.closed = False

    def read(self, timeout: float | None = None) -> Frame | None:
        if self.closed:
            return None
        self.index += 1
        self.pts += self.step
        return Frame(still_scene(self.index), self.index, self.pts, time.time(), self.source_id)

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - the worker calls read()
        raise NotImplementedError

    def health(self) -> SourceHealth:
        return health("ended" if self.closed else "live", fps=self.fps)

    def close(self) -> None:
        self.closed = True


@pytest.mark.models
def test_a_reopened_camera_whose_clock_starts_again_is_analysed_at_once(engines):
    """A node up for hours judges its camera slow and reopens it; the new stream's clock
    starts at 0. Analysis must go on at once, not when the new clock passes the old one
    (a node up for a week was blind for a week)."""
    stop = threading.Event()
    opened: list[ReopenedCamera] = []

    def reopen(camera: CameraConfig) -> ReopenedCamera:
        # first a camera up 10,000 s delivering 10 fps of the 25 configured, then a good one
        source = (ReopenedCamera(camera.id, 10_000.0, fps=10.0) if not opened
                  else ReopenedCamera(camera.id, 0.0, fps=25.0))
        opened.append(source)
        return source

    w = worker("cam", engines, reopen, stop, fps=25, slow_after_s=0.3, recover_s=0.1)
    w.start()
    try:
        wait_for(lambda: len(opened) == 2 and opened[1].index > 0, WAIT, "the reopen")
        analysed = w.status.analysed
        wait_for(lambda: w.status.analysed >= analysed + 5, WAIT,
                 "frames of the reopened camera analysed")
        assert w.health.state != "blind"
        assert len(opened) == 2  # the good camera is not judged slow
    finally:
        stop.set()
        w.thread.join(WAIT)


@pytest.mark.models
def test_a_camera_whose_frames_all_go_unanalysed_is_reported_blind(engines, monkeypatch,
                                                                   tmp_path):
    """Whatever the cause, frames coming in and none analysed is said, not hidden behind
    'live 18.5 fps', and lasting as long as a hung loop it ends the watchdog's pings."""
    import edge.node.service

    monkeypatch.setattr(edge.node.service.VideoPipeline, "wants",
                        lambda self, pts: self.last_sampled < 0)  # the first frame only
    opens: list[float] = []
    config = node_config(tmp_path, "cam", blind_after_s=0.3, stall_s=2)
    service = EdgeService(config, engines=engines,
                          source_factory=camera_factory(alive, opens, pace=0.02))
    try:
        service.start()
        wait_for(lambda: service.status().cameras["cam"].state == "blind", WAIT,
                 "blind")
        status = service.status()
        cam = status.cameras["cam"]
        assert not cam.ok and cam.analysed == 1 and cam.frames > 1
        assert not status.health.ok
        assert any(str(p).startswith("camera cam: blind (processing nothing: frames arrive at")
                   for p in status.health.problems)
        wait_for(lambda: service.faults(), WAIT, "blind long enough to be a fault")
        fault = service.faults()[0]
        assert (fault.camera, fault.kind) == ("cam", ProblemKind.BLIND_STALLED)
        assert str(fault).startswith("camera cam: blind for")
    finally:
        service.stop()


def test_cameras_are_probed_every_few_seconds_however_long_they_are_away():
    from edge.node.sources import RECONNECT_MAX_S

    source = LiveSource(lambda: FakeStream(opened=False), source_id="away",
                        backoff_jitter=0.0, open_timeout=60)
    try:
        delays = [source._backoff.next_delay() for _ in range(20)]
    finally:
        source.close()
    assert RECONNECT_MAX_S <= 5 and max(delays) == RECONNECT_MAX_S
    w = CameraWorker(EdgeConfig.model_validate({"cameras": [{"id": "c", "source": "x"}]})
                     .cameras[0], None, lambda *a: None, threading.Event())  # type: ignore[arg-type]
    assert max(w.backoff.next_delay() for _ in range(20)) <= RECONNECT_MAX_S * 1.2
