"""What C libraries print straight to descriptor 2 (FFmpeg, OpenCV), logged as the node's own
lines: time, level, camera, no credentials."""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
from typing import TextIO

from edge.core.scrub import scrub_url
from edge.node.sources.live import cameras_opening

# OpenCV's own lines: "[ WARN:0@1.105] global cap_v4l.cpp:914 open ...".
_OPENCV_LINE = re.compile(r"^\[\s*(?P<level>[A-Z]+):[^\]]*\]\s*(?P<text>.*)$")
_OPENCV_LEVELS = {"FATAL": logging.CRITICAL, "ERROR": logging.ERROR, "WARN": logging.WARNING,
                  "INFO": logging.INFO, "DEBUG": logging.DEBUG, "VERBOSE": logging.DEBUG}
# FFmpeg's: "[rtsp @ 0x55d0c8a1b2c0] method DESCRIBE failed: 401 Unauthorized".
_FFMPEG_LINE = re.compile(r"^\[(?P<component>[\w.-]+) @ 0x[0-9a-f]+\]\s*(?P<text>.*)$")
_native = logging.getLogger("native")


def route_native_stderr() -> TextIO:
    """Lines that C libraries write straight to file descriptor 2 (FFmpeg, OpenCV) become
    log records like any other: time, level, camera, scrubbed of credentials.

    Descriptor 2 becomes a pipe read by a thread; Python's own sys.stderr (and so every
    log handler, faulthandler and tracebacks) moves to a copy of the real stderr, which
    is returned. The camera is named when one camera alone is opening its source (where
    FFmpeg says most of what it has to say); else `camera=-`. Call once, early.
    """
    real = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    read_end, write_end = os.pipe()
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = real
    pump = threading.Thread(target=_pump_native, args=(read_end,), name="native-stderr",
                            daemon=True)
    pump.start()

    def restore() -> None:
        # Descriptor 2 back to the real stderr closes the pipe: the pump logs what is
        # left and ends before the interpreter does (a daemon thread still writing at
        # shutdown aborts the process, and the reason would vanish down the pipe).
        os.dup2(real.fileno(), 2)
        pump.join(2.0)

    atexit.register(restore)
    return real


def _pump_native(fd: int) -> None:
    with os.fdopen(fd, "rb") as lines:
        for raw in lines:
            try:
                log_native_line(raw.decode("utf-8", "replace").rstrip())
            except Exception:  # never let the pipe fill: a full pipe blocks FFmpeg itself
                pass


def log_native_line(text: str) -> None:
    """Log one line a C library printed, at the level it gave, naming the library."""
    if not text.strip():
        return
    level, name = logging.WARNING, "native"
    if match := _OPENCV_LINE.match(text):
        level = _OPENCV_LEVELS.get(match.group("level"), logging.WARNING)
        name, text = "opencv", match.group("text")
    elif match := _FFMPEG_LINE.match(text):
        name, text = f"ffmpeg.{match.group('component')}", match.group("text")
    opening = cameras_opening()
    camera = opening[0] if len(opening) == 1 else "-"
    _native.getChild(name).log(level, "%s", scrub_url(text), extra={"camera": camera})
