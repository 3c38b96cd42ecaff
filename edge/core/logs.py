"""Log lines for people and journald: one line an event, level and camera in each, no secrets.

Under systemd (stderr is the journal's stream, $JOURNAL_STREAM says so) a line
starts with the syslog priority as `<N>`, which journald takes as the entry's
level, and carries no timestamp of its own (journald stamps it). A traceback is
folded into its line, so that one event stays one journal entry. Each line names
the camera whose thread logged it (`camera=-` for the node's own threads).
Credentials in stream URLs are scrubbed from message, arguments and traceback.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TextIO

from edge.core.scrub import ScrubbingFilter

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
