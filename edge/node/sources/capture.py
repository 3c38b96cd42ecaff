"""OpenCV capture factories for network streams (FFmpeg) and USB cameras (V4L2)."""

from __future__ import annotations

import os
import threading
from urllib.parse import urlsplit

import cv2

from .base import Capture, CaptureFactory
from .rtsp_probe import probe

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


class StreamCapture:
    """Opens `url` (rtsp, rtsps, http, https) with FFmpeg, with bounded open and read, and
    says why it did not open where an RTSP probe can tell (`diagnose`).

    The URL lives only here, never on a source object.
    """

    def __init__(self, url: str, *, open_timeout: float = 15.0,
                 read_timeout: float = 10.0) -> None:
        self._url = url
        self._open_timeout, self._read_timeout = open_timeout, read_timeout

    def __call__(self) -> Capture:
        # OpenCV reads the variable when the capture opens. It is process-wide, so
        # sources opening at once may see each other's value; all differ at most
        # in the timeout, and the per-capture timeouts below are exact anyway.
        _set_ffmpeg_env(ffmpeg_options(self._url, self._read_timeout))
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self._open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self._read_timeout * 1000),
        ]
        return cv2.VideoCapture(self._url, cv2.CAP_FFMPEG, params)

    def diagnose(self) -> str | None:
        """Why the stream does not open, in words, or None where a probe cannot tell."""
        result = probe(self._url, timeout=min(5.0, self._open_timeout))
        if result is None:
            return None
        if result.ok:
            return ("the camera answers and describes its stream, but the stream could not "
                    "be played (codec, transport, or a firewall on the media ports)")
        return result.reason

    def __repr__(self) -> str:
        return "StreamCapture(<url hidden>)"


def stream_capture_factory(
    url: str, *, open_timeout: float = 15.0, read_timeout: float = 10.0
) -> CaptureFactory:
    """Open `url` with FFmpeg: a `StreamCapture`."""
    return StreamCapture(url, open_timeout=open_timeout, read_timeout=read_timeout)


class UsbCapture:
    """Opens a V4L2 camera by index (0) or device path ("/dev/video0")."""

    def __init__(self, device: int | str, *, width: int | None = None,
                 height: int | None = None, fps: float | None = None,
                 fourcc: str | None = None) -> None:
        self.device = device
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc

    def __call__(self) -> Capture:
        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if cap.isOpened():
            # Format before size: many UVC cameras offer large sizes only as MJPG.
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc))
            if self.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            if self.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
        return cap

    def diagnose(self) -> str:
        """Why the camera does not open, as far as the device node tells."""
        path = self.device if isinstance(self.device, str) else f"/dev/video{self.device}"
        if not os.path.exists(path):
            return f"{path} does not exist (camera unplugged, or not this index)"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"{path}: no permission (the node's user needs the video group)"
        return f"{path} exists but does not open as a V4L2 capture device (busy, or not a camera)"


def usb_capture_factory(
    device: int | str,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    fourcc: str | None = None,
) -> CaptureFactory:
    """Open a V4L2 camera: a `UsbCapture`."""
    return UsbCapture(device, width=width, height=height, fps=fps, fourcc=fourcc)
