"""What every video source shares: the protocol, its health report, errors and frame checks."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, Self, runtime_checkable

import cv2
import numpy as np

from edge.core.scrub import scrub_url
from edge.core.status import CameraState
from edge.core.types import Frame

# The camera states a source itself reports; the node's judgement adds the others.
SourceState = Literal[CameraState.CONNECTING, CameraState.LIVE, CameraState.FROZEN,
                      CameraState.BLACK, CameraState.DEAD, CameraState.ENDED]


class SourceError(Exception):
    """A source that cannot be opened or read; the message names it and says why,
    and never contains URL credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(scrub_url(message))


@dataclass(frozen=True)
class SourceHealth:
    """A snapshot of how a source is doing.

    `state`: connecting, live, frozen, black or dead (live sources), ended (a file
    read to its end, or any source after close()). `since` is the UNIX time the
    state began; `fps` is measured over the last frames, 0 when none are arriving.
    `dropped` counts frames thrown away because the consumer fell behind;
    `skipped` counts frames or images that could not be decoded. `decoder_failed`
    says why the source's decoding thread died or is stuck where the source cannot
    recover by itself: the node reopens it.
    """

    state: SourceState
    fps: float
    frames: int
    dropped: int
    reconnects: int
    last_error: str | None
    since: float
    skipped: int = 0
    decoder_failed: str | None = None


class Capture(Protocol):
    """The part of cv2.VideoCapture a source uses; fakes in tests provide the same."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def isOpened(self) -> bool: ...

    def release(self) -> None: ...

    def get(self, prop_id: int) -> float: ...


CaptureFactory = Callable[[], Capture]


@runtime_checkable
class Source(Protocol):
    """Frames from a file, an image folder, a stream or a camera.

    Iterating yields frames; a file ends at its end, a live source runs until
    close(). Sources are also context managers that close on exit.
    """

    source_id: str
    live: bool
    nominal_fps: float | None

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...

    def health(self) -> SourceHealth: ...


def usable_fps(value: float | None) -> float | None:
    """`value` if it is a believable frame rate, else None."""
    # Containers and streams without timing report 0, NaN or rates such as 90000.
    if value is None or not math.isfinite(value) or value <= 0 or value > 1000:
        return None
    return float(value)


def as_bgr(image: object) -> np.ndarray | None:
    """Return `image` as a contiguous H x W x 3 uint8 BGR array, or None if it is not
    a usable picture (missing, empty, too small, or of an unknown layout)."""
    if not isinstance(image, np.ndarray) or image.size == 0:
        return None
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim != 3 or image.shape[2] != 3:
        return None
    if image.shape[0] < 8 or image.shape[1] < 8:
        return None
    return np.ascontiguousarray(image)


class HealthTracker:
    """Thread-safe counters and state behind `Source.health()`."""

    # Frame times kept for the fps estimate: about a second of video at 25-30 fps.
    _FPS_WINDOW = 30

    def __init__(
        self,
        state: SourceState = CameraState.CONNECTING,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._changed = threading.Condition()
        self._clock = clock
        self._wall = wall
        self._state: SourceState = state
        self._since = wall()
        self._frames = 0
        self._dropped = 0
        self._skipped = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._decoder_failed: str | None = None
        self._stamps: deque[float] = deque(maxlen=self._FPS_WINDOW)

    @property
    def state(self) -> SourceState:
        return self._state

    def set_state(self, state: SourceState, error: str | None = None) -> bool:
        """Move to `state` (recording `error` if given); True if the state changed."""
        with self._changed:
            if error is not None:
                self._last_error = scrub_url(error)
            changed = state != self._state
            if changed:
                self._state = state
                self._since = self._wall()
            self._changed.notify_all()
            return changed

    def set_decoder_failed(self, why: str) -> None:
        """The decoding thread died or is stuck and will not recover: `why`."""
        with self._changed:
            self._decoder_failed = scrub_url(why)
            self._changed.notify_all()

    def count_frame(self) -> None:
        with self._changed:
            self._frames += 1
            self._stamps.append(self._clock())

    def count_dropped(self, n: int = 1) -> None:
        with self._changed:
            self._dropped += n

    def count_skipped(self, n: int = 1) -> None:
        with self._changed:
            self._skipped += n

    def count_reconnect(self) -> None:
        with self._changed:
            self._reconnects += 1
            self._changed.notify_all()

    def wait_for(self, states: tuple[str, ...], timeout: float | None) -> bool:
        """Block until the state is one of `states`; False if `timeout` ran out first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._state in states, timeout)

    def _fps(self) -> float:
        stamps = self._stamps
        if len(stamps) < 2:
            return 0.0
        span = stamps[-1] - stamps[0]
        if span <= 0:
            return 0.0
        # A source that has stopped delivering reports 0, not its last good rate.
        interval = span / (len(stamps) - 1)
        if self._clock() - stamps[-1] > max(2.0, 3 * interval):
            return 0.0
        return (len(stamps) - 1) / span

    def snapshot(self) -> SourceHealth:
        with self._changed:
            return SourceHealth(
                state=self._state,
                fps=round(self._fps(), 2),
                frames=self._frames,
                dropped=self._dropped,
                reconnects=self._reconnects,
                last_error=self._last_error,
                since=self._since,
                skipped=self._skipped,
                decoder_failed=self._decoder_failed,
            )


class SourceBase:
    """Shared plumbing: identity, health, repr and the context-manager protocol."""

    live: bool = False

    def __init__(self, source_id: str, nominal_fps: float | None, state: SourceState) -> None:
        self.source_id = scrub_url(source_id)
        self.nominal_fps = nominal_fps
        self._health = HealthTracker(state)

    def health(self) -> SourceHealth:
        return self._health.snapshot()

    def close(self) -> None:  # pragma: no cover - every source overrides it
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = str(self._health.state)
        return f"{type(self).__name__}(source_id={self.source_id!r}, state={state!r})"
