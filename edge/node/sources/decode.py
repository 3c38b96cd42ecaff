"""Decoding on its own thread: decode-ahead for recorded sources, and a bound on decoder
threads stuck inside a backend's read().

A recorded source (a file, an image folder) decodes a few frames ahead of its consumer
on a thread of its own, so that decoding overlaps inference; every frame still comes,
in order, and the frames held are bounded (`depth`), so memory is too. A decoder thread
that raises is reported to the consumer; one that blocks inside the backend cannot be
killed, so it is abandoned and counted per source id (`abandon`, `stuck_decoders`): a
camera reopened again and again over a decoder that never returns opens no more once
`MAX_STUCK_DECODERS` of its threads are stuck, instead of leaking one thread per reopen.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Final

from edge.core.scrub import ScrubbingFilter, scrub_url
from edge.core.types import Frame

log = logging.getLogger(__name__)
log.addFilter(ScrubbingFilter())

DEFAULT_DECODE_AHEAD = 4  # frames decoded ahead of the consumer: ~11 MB at 720p, 25 at 1080p
# A decoder thread that delivers nothing this long while its consumer waits is stalled.
DEFAULT_DECODE_TIMEOUT = 10.0
# Threads of one camera left blocked in a backend's read() before it is reopened no more.
MAX_STUCK_DECODERS = 2

_stuck: dict[str, list[threading.Thread]] = {}
_stuck_lock = threading.Lock()
_running: weakref.WeakSet[DecodeAhead] = weakref.WeakSet()
# At exit each decoder still running is stopped and given this long to leave the backend:
# a thread inside OpenCV when the interpreter finalizes aborts the process (see LiveSource).
EXIT_WAIT_S = 1.0


def abandon(source_id: str, thread: threading.Thread) -> None:
    """Count `thread` (a decoder that would not stop) against `source_id` while it lives."""
    with _stuck_lock:
        threads = _stuck.setdefault(source_id, [])
        if thread not in threads:
            threads.append(thread)


def stuck_decoders(source_id: str) -> int:
    """How many of `source_id`'s abandoned decoder threads are still blocked."""
    with _stuck_lock:
        alive = [t for t in _stuck.get(source_id, ()) if t.is_alive()]
        if alive:
            _stuck[source_id] = alive
        else:
            _stuck.pop(source_id, None)
        return len(alive)


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _End:
    """What `DecodeAhead.get` returns once the decoder has delivered its last frame."""


END: Final = _End()


class DecodeAhead:
    """Runs the generator `frames` on its own thread, at most `depth` frames ahead of
    the consumer, who takes them in order with `get`.

    `on_error` is called (on the decoder thread) with what a decoder that raised died
    of; `get` then raises it in the consumer once the frames decoded before it are taken.
    """

    def __init__(self, frames: Iterator[Frame], *, depth: int, name: str,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        if depth < 1:
            raise ValueError(f"decode-ahead depth must be at least 1, got {depth!r}")
        self.depth = depth
        self._frames = frames
        self._on_error = on_error
        self._buffer: deque[Frame] = deque()
        self._changed = threading.Condition()
        self._done = False
        self._stopping = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        _running.add(self)
        self.thread.start()

    def _run(self) -> None:
        try:
            for frame in self._frames:
                with self._changed:
                    self._changed.wait_for(
                        lambda: self._stopping or len(self._buffer) < self.depth)
                    if self._stopping:
                        return
                    self._buffer.append(frame)
                    self._changed.notify_all()
        except BaseException as exc:  # a decoder's death is its consumer's news, not a crash
            log.error("%s: decoder thread died: %s", self.thread.name, scrub_url(describe(exc)))
            self.error = exc
            if self._on_error is not None:
                self._on_error(exc)
        finally:
            close = getattr(self._frames, "close", None)
            if callable(close):
                try:
                    close()  # the generator's own finally: release what it holds
                except Exception as exc:
                    log.debug("%s: closing the decoder failed: %s", self.thread.name,
                              describe(exc))
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def get(self, timeout: float | None = None) -> Frame | _End | None:
        """The next frame; END after the last one; None if none came within `timeout`.
        Raises what the decoder died of, once its frames are taken."""
        with self._changed:
            self._changed.wait_for(lambda: self._buffer or self._done or self._stopping,
                                   timeout)
            if self._buffer:
                frame = self._buffer.popleft()
                self._changed.notify_all()
                return frame
            if self._stopping or self._done:
                if self.error is not None and not self._stopping:
                    raise self.error
                return END
            return None

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self.get()
            if isinstance(item, _End):
                return
            if item is not None:
                yield item

    @property
    def buffered(self) -> int:
        with self._changed:
            return len(self._buffer)

    def _halt(self) -> None:
        with self._changed:
            self._stopping = True
            self._buffer.clear()
            self._changed.notify_all()

    def stop(self, timeout: float, source_id: str) -> bool:
        """Stop decoding and drop what is buffered; True if the thread ended within
        `timeout`. One that did not (blocked in the backend) is abandoned to
        `source_id`'s count of stuck decoders; it ends when its read returns."""
        self._halt()
        if self.thread is threading.current_thread():
            return True
        self.thread.join(timeout)
        if self.thread.is_alive():
            abandon(source_id, self.thread)
            log.warning("%s: decoder thread still blocked in read() after %.1f s; left to "
                        "finish on its own", source_id, timeout)
            return False
        return True


@atexit.register
def _stop_all() -> None:
    running = list(_running)
    for ahead in running:
        ahead._halt()
    for ahead in running:
        ahead.thread.join(EXIT_WAIT_S)
