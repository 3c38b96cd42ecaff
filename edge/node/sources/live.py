"""Live streams and cameras: newest-frame buffering, a watchdog, reconnection with back-off."""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator

import cv2
import numpy as np

from edge.core.scrub import ScrubbingFilter, scrub_url
from edge.core.status import CameraState
from edge.core.types import Frame

from .base import Capture, CaptureFactory, SourceBase, SourceState, as_bgr, usable_fps
from .decode import MAX_STUCK_DECODERS, abandon, stuck_decoders

log = logging.getLogger(__name__)
log.addFilter(ScrubbingFilter())

DEFAULT_OPEN_TIMEOUT = 15.0
DEFAULT_STALL_TIMEOUT = 10.0
# How far (seconds of frames) a consumer may fall behind a live stream before the oldest
# frames are dropped: up to ~80 MB of 1080p frames at 25 fps, held only while it lags.
LIVE_BUFFER_S = 0.5
# Reconnection back-off stops growing here: a camera is probed every few seconds for as
# long as it is away, so that the node reads again within seconds of its return (at a
# 60 s cap a node stayed blind 34 s after its camera was back).
RECONNECT_MAX_S = 5.0


_opening: dict[str, int] = {}  # source id -> its readers inside the backend's open now
_opened_at: dict[str, float] = {}  # source id -> when its last open returned
_opening_lock = threading.Lock()
# What a library printed while opening reaches its reader a moment after the open returns.
_OPENING_TAIL_S = 0.5


def cameras_opening() -> list[str]:
    """The sources whose streams are being opened now, or were a moment ago (to tell whose
    lines FFmpeg prints)."""
    now = time.monotonic()
    with _opening_lock:
        recent = {s for s, t in _opened_at.items() if now - t < _OPENING_TAIL_S}
        return sorted(set(_opening) | recent)


class Backoff:
    """Delays between reconnection attempts: `initial`, doubling up to `maximum`, each
    spread by +/- `jitter` (a fraction) so that many cameras behind one failed
    switch do not all retry in the same instant."""

    def __init__(
        self,
        initial: float = 1.0,
        maximum: float = 60.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError(f"need 0 < initial <= maximum, got {initial!r}, {maximum!r}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter is a fraction in [0, 1), got {jitter!r}")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._base = initial

    def next_delay(self) -> float:
        base = self._base
        self._base = min(base * 2, self.maximum)
        # Spread within [base - jitter, base + jitter] but never past the cap:
        # clipping instead would put every camera at exactly `maximum` again.
        low = base * (1 - self.jitter)
        high = min(self.maximum, base * (1 + self.jitter))
        return low if high <= low else self._rng.uniform(low, high)

    def reset(self) -> None:
        self._base = self.initial


class PictureWatch:
    """Notices a picture that has stopped changing (frozen) or gone dark (black),
    from a small grey thumbnail of each frame. None disables a check."""

    # Large enough that sensor noise on a still scene still changes some cells;
    # small enough to cost well under a millisecond a frame.
    THUMB = (64, 36)

    def __init__(
        self, frozen_after: float | None, black_after: float | None, black_level: float
    ) -> None:
        self.frozen_after = frozen_after
        self.black_after = black_after
        self.black_level = black_level
        self._digest: int | None = None
        self._same_since = 0.0
        self._dark_since: float | None = None

    def check(self, image: np.ndarray, now: float) -> tuple[SourceState, str] | None:
        """Return ("frozen" | "black", why) once a condition has lasted long enough."""
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        thumb = cv2.resize(grey, self.THUMB, interpolation=cv2.INTER_AREA)
        if float(thumb.mean()) <= self.black_level:
            # A black picture is naturally identical frame to frame: report it as
            # black, never as frozen.
            self._digest = None
            if self._dark_since is None:
                self._dark_since = now
            elif self.black_after is not None and now - self._dark_since >= self.black_after:
                return CameraState.BLACK, f"picture black for {now - self._dark_since:.1f} s"
            return None
        self._dark_since = None
        digest = zlib.crc32(thumb.tobytes())
        if digest != self._digest:
            self._digest = digest
            self._same_since = now
        elif self.frozen_after is not None and now - self._same_since >= self.frozen_after:
            return CameraState.FROZEN, f"picture unchanged for {now - self._same_since:.1f} s"
        return None


class _Connection:
    """One attempt at a stream, from opening to failure; shared by its reader thread
    and the watchdog, which each may end it."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.opened_at: float | None = None
        self.first_frame_at: float | None = None
        self.last_frame_at: float | None = None
        self.ended = threading.Event()
        self.state: SourceState = CameraState.DEAD
        self.reason = ""
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return not self.ended.is_set()

    def end(self, state: SourceState, reason: str) -> None:
        with self._lock:
            if self.ended.is_set():
                return  # the first reason is the real one
            self.state, self.reason = state, reason
            self.ended.set()


class LiveSource(SourceBase):
    """A stream or camera read continuously on its own thread.

    The frames of the last `buffer_s` seconds are kept (at most `buffer_size`); when the
    consumer falls further behind, the oldest is dropped (and counted), so the consumer
    always gets recent pictures. Half a second rides out a burst of work (a pass's
    views read again as it ends takes ~0.2 s on two cores) without losing a frame the
    pipeline would analyse, and a consumer that keeps up holds no frame there.
    A stream that fails to open, fails a read, sends nothing for `stall_timeout`
    seconds, repeats one picture for `frozen_after` seconds or stays black for
    `black_after` seconds is logged, reported in health() and reopened after a
    back-off delay, forever until close(). Meanwhile iteration simply waits.
    A reader thread that dies of anything ends its connection at once, reported and
    reopened as a failed read is. A reader left blocked inside the backend's read()
    cannot be stopped: it is abandoned, and while `max_stuck` of this camera's readers
    are (across reopens of the camera), no new one is started: the camera is
    reported dead until one returns, instead of leaking a thread per stall. If the
    watchdog itself dies, health() says so in `decoder_failed`: the node reopens.

    `capture_factory` opens the stream: a zero-argument callable returning an
    object with cv2.VideoCapture's read()/isOpened()/release()/get().
    `pts` is seconds since the source was created; `index` counts every frame
    taken from the stream, so gaps show drops.
    """

    live = True

    def __init__(
        self,
        capture_factory: CaptureFactory,
        *,
        source_id: str,
        nominal_fps: float | None = None,
        buffer_s: float = LIVE_BUFFER_S,
        buffer_size: int = 32,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        frozen_after: float | None = 20.0,
        black_after: float | None = 30.0,
        black_level: float = 3.0,
        backoff_initial: float = 1.0,
        backoff_max: float = RECONNECT_MAX_S,
        backoff_jitter: float = 0.2,
        healthy_after: float = 30.0,
        check_interval: float | None = None,
        rng: random.Random | None = None,
        max_stuck: int = MAX_STUCK_DECODERS,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size!r}")
        if buffer_s < 0:
            raise ValueError(f"buffer_s must not be negative, got {buffer_s!r}")
        if open_timeout <= 0 or stall_timeout <= 0:
            raise ValueError("open_timeout and stall_timeout must be positive")
        super().__init__(source_id, nominal_fps, CameraState.CONNECTING)
        self._factory = capture_factory
        self._open_timeout = open_timeout
        self._stall_timeout = stall_timeout
        self._frozen_after = frozen_after
        self._black_after = black_after
        self._black_level = black_level
        self._healthy_after = healthy_after
        self._check_interval = check_interval or min(1.0, max(0.005, stall_timeout / 4))
        self._max_stuck = max_stuck
        # a consumer that waits longer than this for a frame while the source says live
        # has a source whose own watchdog has failed
        self.decode_timeout = stall_timeout + 2 * self._check_interval + 1.0
        self._backoff = Backoff(backoff_initial, backoff_max, backoff_jitter, rng)
        self._clock = time.monotonic
        self._t0 = self._clock()

        self._buffer: deque[Frame] = deque(maxlen=buffer_size)
        self._buffer_s = buffer_s
        self._ready = threading.Condition()
        self._closed = False
        self._next_index = 0
        self._closing = threading.Event()
        self._conn: _Connection | None = None
        self._reader: threading.Thread | None = None
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"source-{self.source_id}", daemon=True
        )
        self._supervisor.start()

    # -- consumer side -------------------------------------------------------------

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._buffer or self._closed)
                if self._closed:
                    return
                frame = self._buffer.popleft()
            yield frame

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None if none came within `timeout` or the source closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._buffer or self._closed, timeout)
            if self._closed or not self._buffer:
                return None
            return self._buffer.popleft()

    def wait_for_state(self, *states: SourceState, timeout: float | None = None) -> bool:
        """Block until health().state is one of `states`; False on timeout."""
        return self._health.wait_for(states, timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Stop reading and end iteration now; within `timeout`, wait for the reader to
        finish its read() and release the capture. A reader stuck inside the backend's
        read() longer is left to finish on its own; it releases its capture when it does."""
        with self._ready:
            if self._closed:
                return
            self._closed = True
            self._buffer.clear()
            self._ready.notify_all()
        self._closing.set()
        conn = self._conn
        if conn is not None:
            conn.end(CameraState.ENDED, "closed")
        if threading.current_thread() is not self._supervisor:
            deadline = self._clock() + timeout
            self._supervisor.join(timeout)
            # A reader still inside OpenCV when the interpreter exits aborts the process:
            # returning into a finalizing Python ends the thread with pthread_exit, whose
            # unwinding OpenCV's catch (...) stops ("FATAL: exception not rethrown",
            # SIGABRT; under systemd every stop of a live camera failed the unit).
            reader = self._reader
            if reader is not None and reader is not threading.current_thread():
                reader.join(max(0.0, deadline - self._clock()))
                if reader.is_alive():
                    abandon(self.source_id, reader)
        self._health.set_state(CameraState.ENDED)
        log.info("%s: closed", self.source_id)

    # -- watchdog --------------------------------------------------------------------

    def _supervise(self) -> None:
        try:
            self._reconnect_forever()
        except BaseException as exc:  # a bug: said, so that the node reopens the camera
            why = f"source watchdog died: {_describe(exc)}"
            log.exception("%s: %s", self.source_id, why)
            self._health.set_state(CameraState.DEAD, why)
            self._health.set_decoder_failed(why)

    def _reconnect_forever(self) -> None:
        attempts = 0
        while not self._closing.is_set():
            stuck = stuck_decoders(self.source_id)
            if stuck >= self._max_stuck:
                why = (f"{stuck} reader thread(s) still blocked in the backend's read(); "
                       "not reopened until one returns")
                if self._health.set_state(CameraState.DEAD, why):
                    log.warning("%s: %s", self.source_id, why)
                self._closing.wait(self._backoff.next_delay())
                continue
            if attempts:
                self._health.count_reconnect()
            attempts += 1
            conn = _Connection(self._clock())
            self._conn = conn
            if self._closing.is_set():
                return  # close() ran before it could see this connection
            reader = threading.Thread(
                target=self._reader_main,
                args=(conn,),
                name=f"source-{self.source_id}-reader",
                daemon=True,
            )
            self._reader = reader
            reader.start()
            self._watch(conn, reader)
            reader.join(min(0.1, self._check_interval))  # a reader that ended its conn exits
            if reader.is_alive():
                abandon(self.source_id, reader)  # counted while it stays blocked
            if self._closing.is_set():
                return
            self._health.set_state(conn.state, conn.reason)
            # Reset only after a long good run, so that a camera which connects,
            # sends a frame and dies again is not retried every second.
            first = conn.first_frame_at
            if first is not None and self._clock() - first >= self._healthy_after:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            log.warning(
                "%s: %s (%s); reconnecting in %.1f s",
                self.source_id,
                conn.state,
                conn.reason,
                delay,
            )
            self._closing.wait(delay)

    def _watch(self, conn: _Connection, reader: threading.Thread) -> None:
        """Return once `conn` has ended, ending it if it has gone quiet."""
        while not conn.ended.wait(self._check_interval):
            if self._closing.is_set():
                conn.end(CameraState.ENDED, "closed")
                return
            if not reader.is_alive():
                conn.end(CameraState.DEAD, "reader thread ended without a reason")
                return
            now = self._clock()
            if conn.opened_at is None:
                if now - conn.started_at >= self._open_timeout:
                    conn.end(CameraState.DEAD,
                             f"no answer within {self._open_timeout:g} s of opening")
                continue
            last = conn.last_frame_at or conn.opened_at
            if now - last >= self._stall_timeout:
                conn.end(CameraState.DEAD, f"no frame for {now - last:.1f} s")

    # -- reader thread ---------------------------------------------------------------

    def _reader_main(self, conn: _Connection) -> None:
        try:
            self._read_stream(conn)
        except BaseException as exc:  # not only Exception: any death is reported at once
            conn.end(CameraState.DEAD, f"reader thread died: {scrub_url(_describe(exc))}")
            log.error("%s: reader thread died: %s", self.source_id,
                      scrub_url(_describe(exc)))

    def _read_stream(self, conn: _Connection) -> None:
        with _opening_lock:
            _opening[self.source_id] = _opening.get(self.source_id, 0) + 1
        try:
            cap = self._factory()
        except Exception as exc:  # any backend failure to open is a dead stream, retried
            conn.end(CameraState.DEAD, f"could not open: {scrub_url(_describe(exc))}")
            return
        finally:
            with _opening_lock:
                _opened_at[self.source_id] = time.monotonic()
                if _opening[self.source_id] > 1:
                    _opening[self.source_id] -= 1
                else:
                    del _opening[self.source_id]
        try:
            if not conn.active:
                return
            if not cap.isOpened():
                conn.end(CameraState.DEAD, f"could not open the stream: {self._why_not_open()}")
                return
            conn.opened_at = self._clock()
            if self.nominal_fps is None:
                self.nominal_fps = usable_fps(cap.get(cv2.CAP_PROP_FPS))
            self._pump(cap, conn)
        except Exception as exc:  # a backend raising mid-stream is a dead stream, not a dead thread
            conn.end(CameraState.DEAD, f"capture error: {scrub_url(_describe(exc))}")
        finally:
            try:
                cap.release()
            except Exception as exc:
                log.debug("%s: release failed: %s", self.source_id, scrub_url(_describe(exc)))

    def _why_not_open(self) -> str:
        diagnose = getattr(self._factory, "diagnose", None)
        why = None
        if callable(diagnose):
            try:
                why = diagnose()
            except Exception as exc:  # a diagnosis must never cost the reconnect
                log.debug("%s: diagnosis failed: %s", self.source_id, _describe(exc))
        return scrub_url(why) if why else "address, credentials or network"  # nothing said

    def _pump(self, cap: Capture, conn: _Connection) -> None:
        watch = PictureWatch(self._frozen_after, self._black_after, self._black_level)
        while conn.active:
            ok, raw = cap.read()
            if not conn.active:
                return  # abandoned by the watchdog or closed while blocked in read()
            if not ok:
                conn.end(CameraState.DEAD, "read failed (stream ended or broke)")
                return
            image = as_bgr(raw)
            if image is None:
                self._health.count_skipped()
                continue
            now = self._clock()
            problem = watch.check(image, now)
            if problem is not None:
                conn.end(*problem)
                return
            if conn.first_frame_at is None:
                conn.first_frame_at = now
                self._went_live()
            conn.last_frame_at = now
            self._push(image, now)

    def _went_live(self) -> None:
        if self._health.set_state(CameraState.LIVE):
            health = self._health.snapshot()
            if health.reconnects:
                log.info(
                    "%s: live again after %d reconnect attempt(s)",
                    self.source_id,
                    health.reconnects,
                )
            else:
                log.info("%s: live", self.source_id)

    def _push(self, image: np.ndarray, now: float) -> None:
        with self._ready:
            if self._closed:
                return
            frame = Frame(image, self._next_index, now - self._t0, time.time(), self.source_id)
            self._next_index += 1
            if len(self._buffer) == self._buffer.maxlen:
                self._health.count_dropped()
            self._buffer.append(frame)
            while frame.pts - self._buffer[0].pts > self._buffer_s:
                self._buffer.popleft()  # older than the consumer may fall behind
                self._health.count_dropped()
            self._ready.notify()
        self._health.count_frame()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
