"""Frames from a video file, stamped with their position in the video."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from edge.core.scrub import ScrubbingFilter
from edge.core.status import CameraState
from edge.core.types import Frame

from .base import Capture, CaptureFactory, SourceBase, SourceError, as_bgr, usable_fps
from .decode import (
    DEFAULT_DECODE_AHEAD,
    DEFAULT_DECODE_TIMEOUT,
    END,
    MAX_STUCK_DECODERS,
    DecodeAhead,
    describe,
    stuck_decoders,
)

log = logging.getLogger(__name__)
log.addFilter(ScrubbingFilter())

# close() waits this long for a decoder inside read() before leaving it to finish alone
CLOSE_WAIT_S = 2.0


class VideoFileSource(SourceBase):
    """Decodes a video file once, front to back.

    `pts` is the frame index / fps (`fps` overrides the container's rate), or the
    decoder's position when neither is known. A frame that fails to decode is
    skipped and counted; `max_bad_reads` failures in a row end the file.

    Decoding runs on its own thread, `decode_ahead` frames ahead of the consumer (0:
    on the consumer's thread), so that it overlaps inference; every frame still comes,
    in order. A decoder that raises is reported in health() (dead, `decoder_failed`)
    and iteration raises what it died of; `read()` takes one frame with a timeout, for
    a consumer that watches for a decoder that stalls (`decode_timeout`).
    """

    live = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        source_id: str | None = None,
        fps: float | None = None,
        capture_factory: CaptureFactory | None = None,
        max_bad_reads: int = 25,
        decode_ahead: int = DEFAULT_DECODE_AHEAD,
        decode_timeout: float = DEFAULT_DECODE_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        _check_file(self.path)
        if fps is not None and usable_fps(fps) is None:
            raise ValueError(f"fps must be between 0 and 1000, got {fps!r}")
        if decode_ahead < 0 or decode_timeout <= 0:
            raise ValueError("decode_ahead must be >= 0 and decode_timeout positive, got "
                             f"{decode_ahead!r}, {decode_timeout!r}")
        stuck = stuck_decoders(source_id or self.path.stem)
        if stuck >= MAX_STUCK_DECODERS:
            # each reopen over a decoder that never returns would leak one more thread
            raise SourceError(f"{self.path}: {stuck} decoder thread(s) of this source are "
                              "still blocked in read(); not opened again until one returns")
        if capture_factory is None:
            # FFmpeg explicitly: CAP_ANY would also try the image-sequence reader,
            # which reads names like "cam%02d.jpg" as patterns.
            cap: Capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        else:
            cap = capture_factory()
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"{self.path}: not a video that OpenCV/FFmpeg can open "
                f"({self.path.stat().st_size} bytes; unknown container, or corrupt)"
            )
        nominal = usable_fps(fps) or usable_fps(cap.get(cv2.CAP_PROP_FPS))
        super().__init__(source_id or self.path.stem, nominal, CameraState.CONNECTING)
        self._cap: Capture | None = cap
        self._max_bad_reads = max_bad_reads
        self._frame_count = int(max(0.0, cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0))
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._iterating = False
        self._first_index = 0
        self._decode_ahead = decode_ahead
        self.decode_timeout = decode_timeout
        self._ahead: DecodeAhead | None = None
        # Read one frame now so that a file that opens but holds no decodable
        # video fails here, where the caller can still handle it.
        self._first: np.ndarray | None = self._read_first()

    def _read_first(self) -> np.ndarray:
        assert self._cap is not None
        for bad in range(self._max_bad_reads + 1):
            ok, raw = self._cap.read()
            image = as_bgr(raw) if ok else None
            if image is not None:
                self._first_index = bad
                if bad:
                    self._health.count_skipped(bad)
                return image
        self._cap.release()
        self._cap = None
        raise SourceError(
            f"{self.path}: no decodable video frames (not a video, or a codec OpenCV lacks)"
        )

    def _start(self, depth: int) -> DecodeAhead | None:
        with self._lock:
            if self._iterating:
                raise RuntimeError(f"{self.source_id}: already being read")
            self._iterating = True
        if depth:
            self._ahead = DecodeAhead(self._decode(), depth=depth,
                                      name=f"decode-{self.source_id}")
        return self._ahead

    def __iter__(self) -> Iterator[Frame]:
        ahead = self._start(self._decode_ahead)
        try:
            yield from self._decode() if ahead is None else ahead
        except Exception as exc:
            if ahead is not None:  # said where the frames decoded before it are taken
                self._decoder_died(exc)
            raise
        finally:
            self._stop_decoder(CLOSE_WAIT_S)
            self._release(CLOSE_WAIT_S)
            if self._health.state != CameraState.DEAD:
                self._health.set_state(CameraState.ENDED)

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, decoded ahead on the decoder thread; None if none came within
        `timeout`, after the last one (health() then says ended) or once the decoder
        has died and its last frames are taken (health() says dead, and why)."""
        ahead = self._ahead or self._start(max(1, self._decode_ahead))
        assert ahead is not None
        try:
            item = ahead.get(timeout)
        except BaseException as exc:  # the frames decoded before it are taken: say it
            self._decoder_died(exc)
            return None
        if item is END:
            self._health.set_state(CameraState.ENDED)
            return None
        return item if isinstance(item, Frame) else None

    def _decoder_died(self, exc: BaseException) -> None:
        why = f"decoder thread died: {describe(exc)}"
        self._health.set_state(CameraState.DEAD, why)
        self._health.set_decoder_failed(why)

    def _decode(self) -> Iterator[Frame]:
        try:
            yield from self._frames()
        finally:
            self._release()

    def _frames(self) -> Iterator[Frame]:
        self._health.set_state(CameraState.LIVE)
        index = self._first_index
        bad = 0  # unreadable frames since the last good one
        while not self._closed.is_set():
            with self._lock:
                # Read under the lock so that close() on another thread waits for
                # this read instead of releasing the capture beneath it.
                if self._cap is None:
                    return
                raw: np.ndarray | None
                if self._first is not None:
                    ok, raw = True, self._first
                    self._first = None
                else:
                    ok, raw = self._cap.read()
                pos_msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            image = as_bgr(raw) if ok else None
            if image is None:
                if not ok and self._frame_count and index + bad >= self._frame_count:
                    return
                bad += 1
                if bad > self._max_bad_reads:
                    self._give_up(index, bad)
                    return
                continue
            if bad:
                # The failed reads consumed frames: keep later pts on the timeline.
                log.warning(
                    "%s: skipped %d undecodable frame(s) before frame %d",
                    self.source_id,
                    bad,
                    index + bad,
                )
                self._health.count_skipped(bad)
                index += bad
                bad = 0
            pts = index / self.nominal_fps if self.nominal_fps else max(0.0, pos_msec / 1000)
            self._health.count_frame()
            yield Frame(image, index, pts, time.time(), self.source_id)
            index += 1

    def _give_up(self, index: int, bad: int) -> None:
        # Past the container's frame count (or without one) this is just the end of the
        # file. Before it, the reads that follow the last frame decode nothing: the file
        # is cut short, or its header overstates its length (OpenCV cannot tell the two
        # apart: both end in reads that fail and leave the position where it was).
        if self._frame_count and index + bad < self._frame_count:
            message = (
                f"{self.path}: ended at frame {index}, {self._frame_count - index} short "
                f"of the {self._frame_count} its header gives ({bad} reads after it decoded "
                f"nothing: a file cut short, or a header that overstates its length)"
            )
            log.warning("%s", message)
            self._health.set_state(CameraState.ENDED, message)

    def close(self, timeout: float | None = None) -> None:
        """Stop decoding and release the file. A decoder blocked in read() longer than
        `timeout` (CLOSE_WAIT_S) is left to release the capture itself when its read
        returns."""
        timeout = CLOSE_WAIT_S if timeout is None else timeout
        self._closed.set()
        self._stop_decoder(timeout)
        self._release(timeout)
        if self._health.state != CameraState.DEAD:
            self._health.set_state(CameraState.ENDED)

    def _stop_decoder(self, timeout: float) -> None:
        if self._ahead is not None:
            self._ahead.stop(timeout, self.source_id)

    def _release(self, timeout: float | None = None) -> None:
        """Release the capture; with `timeout`, give up waiting for a read in progress
        after so long (the decoder releases it when its read returns: `_decode`)."""
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return
        try:
            cap, self._cap = self._cap, None
        finally:
            self._lock.release()
        if cap is not None:
            cap.release()


def _check_file(path: Path) -> None:
    """Raise SourceError naming `path` and the reason when it cannot be a video."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot access ({exc.strerror or exc})") from None
    if path.is_dir():
        raise SourceError(f"{path}: is a directory, not a video file")
    if st.st_size == 0:
        raise SourceError(f"{path}: file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise SourceError(f"{path}: not readable (permission denied)")
