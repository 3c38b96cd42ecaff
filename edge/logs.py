"""Log lines for people and journald: one line an event, level and camera in each, no secrets.

Under systemd (stderr is the journal's stream, $JOURNAL_STREAM says so) a line
starts with the syslog priority as `<N>`, which journald takes as the entry's
level, and carries no timestamp of its own (journald stamps it). A traceback is
folded into its line, so that one event stays one journal entry. Each line names
the camera whose thread logged it (`camera=-` for the node's own threads).
Credentials in stream URLs are scrubbed from message, arguments and traceback.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
from typing import TextIO

from edge.sources import ScrubbingFilter, scrub_url
from edge.sources.live import cameras_opening

_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}
# Threads named after their camera: the worker "camera-ID", the source "source-ID[-reader]".
_CAMERA_THREAD = re.compile(r"^(?:camera|source)-(.+?)(?:-reader)?$")

_HANDLER_NAME = "edge-lines"
LINE_FORMAT = "%(levelname)s camera=%(camera)s %(name)s: %(message)s"


class CameraFilter(logging.Filter):
    """Puts `camera` on every record: given with extra={"camera": ...}, else the thread's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "camera", None):
            match = _CAMERA_THREAD.match(record.threadName or "")
            record.camera = match.group(1) if match else "-"
        return True


class OneLineFormatter(logging.Formatter):
    """A record and its traceback on one line; with `journal`, led by its `<priority>`."""

    def __init__(self, fmt: str, *, journal: bool) -> None:
        super().__init__(fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).rstrip("\n").replace("\n", "\\n")
        if self.journal:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"
        return text


def to_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Whether `stream` is connected to journald ($JOURNAL_STREAM names its device:inode)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def setup_logging(level: int = logging.INFO, stream: TextIO | None = None,
                  journal: bool | None = None) -> logging.Handler:
    """Send every log record to `stream` (stderr) as one line; replaces the handler an
    earlier call installed, and leaves others (a test's log capture) alone."""
    stream = stream or sys.stderr
    if journal is None:
        journal = to_journal(stream)
    handler = logging.StreamHandler(stream)
    fmt = LINE_FORMAT if journal else "%(asctime)s " + LINE_FORMAT
    handler.setFormatter(OneLineFormatter(fmt, journal=journal))
    handler.addFilter(CameraFilter())
    handler.addFilter(ScrubbingFilter())
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


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
