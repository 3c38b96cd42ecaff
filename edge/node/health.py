"""How the node judges itself: each camera's health over time, and the gate on the watchdog."""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from statistics import median
from typing import NamedTuple

from edge.core.notify import Notifier
from edge.core.status import CameraState, Problem
from edge.node.sources import SourceHealth

log = logging.getLogger(__name__)

# what a live source reports when its picture is lost
TROUBLE = (CameraState.FROZEN, CameraState.BLACK, CameraState.DEAD)
GOOD = (CameraState.LIVE, CameraState.ENDED, CameraState.STOPPED)
# what the node judges a camera to be when its source has not said it is in trouble
JUDGED = (CameraState.SLOW, CameraState.FAILED, CameraState.BLIND)


class DeliveredRate:
    """The frame rate a camera has shown it delivers: the median of one sample a second
    over the last `window_s`, once `min_s` of samples are in.

    Streams announce rates they do not keep (FFmpeg read 60 fps off a variable-rate
    camera delivering 18), so a camera is judged against what it has delivered, or
    against the rate its configuration states. A median over minutes shrugs off a
    variable rate's swings and a slow spell of under half the window; a camera whose
    rate really changes for good is judged by its new rate once that fills the window.
    """

    def __init__(self, *, window_s: float = 300.0, min_s: float = 10.0,
                 every_s: float = 1.0) -> None:
        self.window_s, self.min_s, self.every_s = window_s, min_s, every_s
        self._samples: deque[tuple[float, float]] = deque()
        self._expected: float | None = None  # the samples' median, kept as they change

    def add(self, now: float, fps: float) -> None:
        """Note the rate measured now (0, a source delivering nothing, is not a rate)."""
        if fps <= 0 or (self._samples and now - self._samples[-1][0] < self.every_s):
            return
        self._samples.append((now, fps))
        while now - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        enough = len(self._samples) * self.every_s >= self.min_s
        self._expected = median(fps for _, fps in self._samples) if enough else None

    def expected(self) -> float | None:
        """The rate to judge by, or None while too little has been seen."""
        return self._expected


class CameraHealth:
    """One camera judged from its source's health, observed on every turn of its loop.

    The source says what it sees now; this remembers. A camera that froze, went
    black or died is reported so until it has been live again for `recover_s`: a
    frozen camera reconnects, looks live for a while and freezes again, and
    should not look well for most of that cycle. A live camera delivering less
    than `min_fps_fraction` of its expected frame rate (the configured one, else
    what it has delivered: `DeliveredRate`) for `slow_after_s` is slow, and
    `observe` asks for it to be reopened. A live camera whose frames arrive while
    none has been analysed for `blind_after_s` is blind: the node sees nothing and
    must not say it is fine.

    A source whose decoder thread died or is stuck (`SourceHealth.decoder_failed`), or
    one that says it is live while its consumer has waited `decoder_stall_s` for a
    frame without getting one (`waited`), is dead and reopened. None: no such limit.
    """

    def __init__(self, camera: str, *, min_fps_fraction: float = 0.5,
                 slow_after_s: float = 30.0, recover_s: float = 60.0, grace_s: float = 30.0,
                 blind_after_s: float = 5.0, rate: DeliveredRate | None = None,
                 decoder_stall_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.camera = camera
        self.min_fps_fraction = min_fps_fraction
        self.slow_after_s = slow_after_s
        self.recover_s = recover_s
        self.grace_s = grace_s
        self.blind_after_s = blind_after_s
        self.decoder_stall_s = decoder_stall_s
        self.rate = rate or DeliveredRate()
        self.expected_fps: float | None = None  # what the last look judged the rate by
        self._clock = clock
        self.started = clock()
        self.state = CameraState.STARTING
        self.detail = ""
        self.since = time.time()
        self._problem: CameraState | None = None
        self._problem_detail = ""
        self._problem_at = 0.0
        self._slow_since: float | None = None
        self._live_since: float | None = None  # this stretch of frames arriving began
        self._blind_since: float | None = None
        self._reconnects = 0  # the source's count when last observed
        self._waiting_since: float | None = None  # the consumer has had no frame since

    @property
    def ok(self) -> bool:
        if self.state in GOOD:
            return True
        return self.state in (CameraState.STARTING, CameraState.CONNECTING) and (
            self._clock() - self.started < self.grace_s)

    def waited(self, got_frame: bool) -> None:
        """The consumer asked its source for a frame and got one, or did not."""
        if got_frame:
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = self._clock()

    def _decoder_trouble(self, now: float, health: SourceHealth) -> str | None:
        """Why the source's decoder cannot deliver, or None."""
        if health.decoder_failed:
            return health.decoder_failed
        if health.state != CameraState.LIVE:
            self._waiting_since = None  # a camera away is waited for by its source
            return None
        since = self._waiting_since
        limit = self.decoder_stall_s
        if since is None or limit is None or now - since < limit:
            return None
        return f"decoder stalled: no frame for {now - since:.1f} s while the source is live"

    def observe(self, health: SourceHealth, configured_fps: float | None = None, *,
                live: bool = True, analysed_at: float | None = None) -> bool:
        """Take the source's latest health; True when the camera should be reopened.

        `configured_fps`: the rate the camera's configuration states, if any. `live`:
        False for a file, whose rate is the replay's and is not judged. `analysed_at`:
        when (on this object's clock) the pipeline last analysed one of its frames; None
        (nothing analysed yet, or a caller that does not say) judges no blindness.
        """
        now = self._clock()
        stalled = self._decoder_trouble(now, health)
        if stalled is not None:
            # the source cannot recover by itself: dead, reported, and reopened
            self._problem, self._problem_at = CameraState.DEAD, now
            self._problem_detail = stalled
            self._slow_since = self._live_since = self._blind_since = None
            self._waiting_since = None
            self._reconnects = health.reconnects
            self._set(CameraState.DEAD, stalled)
            return True
        reopen = False
        source = CameraState(health.state)
        state: CameraState
        # A connection that froze and was reopened may be live again before this loop
        # looks: its trouble shows in the count of reconnects and the reason it gave.
        lost = health.reconnects > self._reconnects
        self._reconnects = health.reconnects
        if lost and source not in TROUBLE:
            self._problem, self._problem_at = trouble_of(health.last_error), now
            self._problem_detail = health.last_error or ""
            self._slow_since = None
        arriving = source == CameraState.LIVE and health.fps > 0
        if not arriving:
            self._live_since = self._blind_since = None
        elif self._live_since is None or lost:
            self._live_since = now
        if source in TROUBLE:
            self._problem, self._problem_at = source, now
            self._problem_detail = health.last_error or ""
            self._slow_since = None
            state, detail = source, self._problem_detail
        elif source == CameraState.LIVE:
            state, detail = CameraState.LIVE, ""
            reopen = live and self._judge_rate(now, health.fps, configured_fps)
            blind = (self._blind(now, health.fps, analysed_at)
                     if arriving and analysed_at is not None else None)
            if blind is not None:
                state, detail = CameraState.BLIND, blind
            elif self._problem is not None:
                if now - self._problem_at < self.recover_s:
                    state, detail = self._problem, f"recovering: {self._problem_detail}"
                else:
                    self._problem = None
        elif source == CameraState.CONNECTING and self._problem is not None:
            state, detail = self._problem, f"reconnecting: {self._problem_detail}"
        else:
            state, detail = source, ""
        if reopen:
            state, detail = CameraState.SLOW, self._problem_detail
        self._set(state, detail)
        return reopen

    def _judge_rate(self, now: float, fps: float, configured_fps: float | None) -> bool:
        """Slow for `slow_after_s` against the expected rate: True, once, to reopen."""
        self.rate.add(now, fps)
        expected = configured_fps or self.rate.expected()
        self.expected_fps = expected
        floor = self.min_fps_fraction * (expected or 0.0)
        if not (floor > 0 and fps < floor):
            self._slow_since = None
            return False
        if self._slow_since is None:
            self._slow_since = now
            return False
        if now - self._slow_since < self.slow_after_s:
            return False
        origin = "configured" if configured_fps else "as delivered"
        self._problem, self._problem_at = CameraState.SLOW, now
        self._problem_detail = (f"{fps:.1f} fps for {now - self._slow_since:.0f} s, "
                                f"expected {expected:.3g} ({origin})")
        self._slow_since = None
        return True

    def _blind(self, now: float, fps: float, analysed_at: float) -> str | None:
        """Why the camera is blind (frames arriving, none analysed for long), or None."""
        assert self._live_since is not None
        since = max(self._live_since, analysed_at)
        if now - since < self.blind_after_s:
            self._blind_since = None
            return None
        self._blind_since = since
        return (f"processing nothing: frames arrive at {fps:.1f} fps, none analysed for "
                f"{now - since:.0f} s")

    def blind_for(self) -> float:
        """How long the camera has been blind, counted from its last analysed frame (0: it
        is not blind)."""
        if self.state != CameraState.BLIND or self._blind_since is None:
            return 0.0
        return self._clock() - self._blind_since

    def set(self, state: CameraState, detail: str = "") -> None:
        """A state the loop knows better than the source (starting, stopped, failed)."""
        self._set(state, detail)

    def _set(self, state: CameraState, detail: str) -> None:
        self.detail = detail
        if state == self.state:
            return
        previous, self.state, self.since = self.state, state, time.time()
        if state in TROUBLE or state in JUDGED:
            log.warning("camera %s: %s (%s)", self.camera, state, detail or "no detail")
        elif state == CameraState.LIVE and previous in (*TROUBLE, CameraState.SLOW,
                                                        CameraState.BLIND):
            log.info("camera %s: live again after being %s", self.camera, previous)
        else:
            log.debug("camera %s: %s -> %s", self.camera, previous, state)


def trouble_of(reason: str | None) -> CameraState:
    """Which trouble ended a live source's connection, from the reason it gave."""
    text = (reason or "").lower()
    if "unchanged" in text:  # PictureWatch: "picture unchanged for 20.0 s"
        return CameraState.FROZEN
    if "black" in text:  # "picture black for 30.0 s"
        return CameraState.BLACK
    return CameraState.DEAD


class Loop(NamedTuple):
    """A loop the watchdog watches: its name, when it last went round (monotonic), its thread."""

    name: str
    last: float
    thread_id: int | None = None


class LoopWatch:
    """Pings systemd's watchdog every `period_s` while every watched loop makes progress.

    `loops()` gives the loops running now; one that has not gone round for
    `stall_s` is hung, and `faults()` names anything else that should end the
    pings (a delivery thread that died). Without pings systemd kills the process
    (SIGABRT: faulthandler prints every thread's stack) and starts it again, so a
    hung pipeline is restarted, not only a dead process. The stack of a hung loop
    is logged when it is first noticed. STATUS= carries `status()` for
    `systemctl status`.
    """

    def __init__(self, notifier: Notifier, loops: Callable[[], Iterable[Loop]], *,
                 period_s: float | None, stall_s: float,
                 faults: Callable[[], Sequence[Problem | str]] | None = None,
                 status: Callable[[], str] | None = None, status_every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.loops = loops
        self.period_s = period_s
        self.stall_s = stall_s
        self.faults = faults
        self.status = status
        self.interval_s = min(period_s, status_every_s) if period_s else status_every_s
        self._clock = clock
        self._problems: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0

    def problems(self) -> list[str]:
        """Why the watchdog would not be pinged now (empty: all well)."""
        now = self._clock()
        found = []
        for loop in self.loops():
            quiet = now - loop.last
            if quiet >= self.stall_s:
                found.append(f"{loop.name}: no progress for {quiet:.0f} s")
        if self.faults is not None:
            found.extend(str(fault) for fault in self.faults())
        return found

    def tick(self) -> bool:
        """Check once; ping if all is well. True if a ping went out."""
        problems = self.problems()
        if problems != self._problems:
            if problems:
                log.error("hung, so no watchdog pings (systemd restarts the node): %s; %s",
                          "; ".join(problems), self._stacks())
            elif self._problems:
                log.warning("progress again: watchdog pings resume")
            self._problems = problems
        if self.status is not None:
            self.notifier.status(self.status() if not problems else
                                 "HUNG: " + "; ".join(problems))
        if problems or not self.period_s:
            return False
        self.pings += 1
        return self.notifier.watchdog()

    def _stacks(self) -> str:
        now, frames = self._clock(), sys._current_frames()
        parts = []
        for loop in self.loops():
            if now - loop.last < self.stall_s or loop.thread_id not in frames:
                continue
            stack = traceback.format_stack(frames[loop.thread_id])[-6:]
            where = " <- ".join(line.strip().splitlines()[0] for line in reversed(stack))
            parts.append(f"{loop.name} is at {where}")
        return "; ".join(parts) or "no stack"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("watch already started")
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a broken check must not end the pings silently: it ends them loudly
                log.exception("watchdog check failed; no ping this time")
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
