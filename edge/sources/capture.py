"""OpenCV capture factories for network streams (FFmpeg) and USB cameras (V4L2)."""

from __future__ import annotations

import os
import threading
from urllib.parse import urlsplit

import cv2

from .base import Capture, CaptureFactory

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"

_env_lock = threading.Lock()
_env_we_set: str | None = None


def ffmpeg_options(url: str, read_timeout: float) -> str:
    """The OPENCV_FFMPEG_CAPTURE_OPTIONS value for `url`: "key;value|key;value"."""
    micros = int(read_timeout * 1_000_000)
    if urlsplit(url).scheme.lower() in ("rtsp", "rtsps"):
        # TCP: UDP loses packets on busy links and smears the picture; "timeout"
        # bounds FFmpeg's socket reads (microseconds, FFmpeg 5 and later).
        return f"rtsp_transport;tcp|timeout;{micros}"
    return f"timeout;{micros}"


def _set_ffmpeg_env(value: str) -> None:
    global _env_we_set
    with _env_lock:
        current = os.environ.get(FFMPEG_OPTIONS_ENV)
        if current is not None and current != _env_we_set:
            return  # the operator set it: theirs wins
        os.environ[FFMPEG_OPTIONS_ENV] = value
        _env_we_set = value


def stream_capture_factory(
    url: str, *, open_timeout: float = 15.0, read_timeout: float = 10.0
) -> CaptureFactory:
    """Open `url` (rtsp, rtsps, http, https) with FFmpeg, with bounded open and read.

    The URL lives only inside the returned closure, never on a source object.
    """

    def open_stream() -> Capture:
        # OpenCV reads the variable when the capture opens. It is process-wide, so
        # sources opening at once may see each other's value; all differ at most
        # in the timeout, and the per-capture timeouts below are exact anyway.
        _set_ffmpeg_env(ffmpeg_options(url, read_timeout))
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(read_timeout * 1000),
        ]
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)

    return open_stream


def usb_capture_factory(
    device: int | str,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    fourcc: str | None = None,
) -> CaptureFactory:
    """Open a V4L2 camera by index (0) or device path ("/dev/video0")."""

    def open_camera() -> Capture:
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if cap.isOpened():
            # Format before size: many UVC cameras offer large sizes only as MJPG.
            if fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
            if width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if fps:
                cap.set(cv2.CAP_PROP_FPS, fps)
        return cap

    return open_camera
