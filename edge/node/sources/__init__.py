"""Video sources behind one `open_source(spec)`: files, image folders, streams, USB cameras."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Any

from edge.core.scrub import ScrubbingFilter, scrub_url

from .base import Capture, CaptureFactory, Source, SourceError, SourceHealth, SourceState
from .capture import stream_capture_factory, usb_capture_factory
from .folder import ImageFolderSource
from .live import (
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_STALL_TIMEOUT,
    RECONNECT_MAX_S,
    Backoff,
    LiveSource,
)
from .video import VideoFileSource

__all__ = [
    "RECONNECT_MAX_S",
    "Backoff",
    "Capture",
    "CaptureFactory",
    "ImageFolderSource",
    "LiveSource",
    "ScrubbingFilter",
    "Source",
    "SourceError",
    "SourceHealth",
    "SourceState",
    "VideoFileSource",
    "open_source",
    "scrub_url",
]

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_USB_INDEX = re.compile(r"^usb:(\d+)$", re.IGNORECASE)
_USB_OPTIONS = {"width", "height", "fourcc"}


def open_source(
    spec: str | os.PathLike[str],
    *,
    source_id: str | None = None,
    fps: float | None = None,
    **options: Any,
) -> Source:
    """Open what `spec` names and return it as a `Source`.

    `spec`: a video file, a folder of images, an rtsp://, rtsps://, http:// or
    https:// stream, or a USB camera as "usb:0" or "/dev/video0". `fps` is the
    folder's frame rate (default 10), overrides a file's, or is requested from a
    USB camera. `options` go to the source: `capture_factory` for files and live
    sources, LiveSource's timing and buffer settings, and width/height/fourcc for
    USB cameras, `decode_ahead` (frames decoded ahead on the decoder thread; 0: none)
    for files and folders and `decode_timeout` for files. An unknown option is a
    TypeError that names it.
    """
    text = os.fspath(spec).strip()
    scheme = _SCHEME.match(text)
    if scheme:
        if scheme.group(1).lower() not in STREAM_SCHEMES:
            raise SourceError(
                f"{scrub_url(text)}: unsupported scheme {scheme.group(1)!r} "
                f"(use one of {', '.join(STREAM_SCHEMES)})"
            )
        return _open_stream(text, source_id, fps, options)
    usb = _USB_INDEX.match(text)
    if usb or text.startswith(("/dev/video", "/dev/v4l/")):
        device: int | str = int(usb.group(1)) if usb else text
        return _open_usb(device, source_id or text, fps, options)
    path = Path(text)
    if path.is_dir():
        _check_options("an image folder", options, {"decode_ahead"})
        return ImageFolderSource(path, source_id=source_id, fps=fps, **options)
    _check_options("a video file", options, {"capture_factory", "max_bad_reads",
                                             "decode_ahead", "decode_timeout"})
    return VideoFileSource(path, source_id=source_id, fps=fps, **options)


def _open_stream(
    url: str, source_id: str | None, fps: float | None, options: dict[str, Any]
) -> LiveSource:
    shown = scrub_url(url)
    host = shown.split("://", 1)[1].removeprefix("***@").split("/", 1)[0].split("?", 1)[0]
    if not host:
        raise SourceError(f"{shown}: stream URL has no host")
    _check_options("a stream", options, _live_options())
    factory = options.pop("capture_factory", None) or stream_capture_factory(
        url,
        open_timeout=options.get("open_timeout", DEFAULT_OPEN_TIMEOUT),
        read_timeout=options.get("stall_timeout", DEFAULT_STALL_TIMEOUT),
    )
    # Without credentials or query: the id is shown on dashboards and in events.
    default_id = shown.replace("://***@", "://", 1).split("?", 1)[0]
    return LiveSource(factory, source_id=source_id or default_id, nominal_fps=fps, **options)


def _open_usb(
    device: int | str, source_id: str, fps: float | None, options: dict[str, Any]
) -> LiveSource:
    _check_options("a USB camera", options, _live_options() | _USB_OPTIONS)
    camera = {k: options.pop(k) for k in _USB_OPTIONS if k in options}
    fourcc = camera.get("fourcc")
    if fourcc is not None and (not isinstance(fourcc, str) or len(fourcc) != 4):
        raise ValueError(f"fourcc must be four characters such as 'MJPG', got {fourcc!r}")
    factory = options.pop("capture_factory", None) or usb_capture_factory(device, fps=fps, **camera)
    return LiveSource(factory, source_id=source_id, nominal_fps=fps, **options)


def _live_options() -> set[str]:
    params = inspect.signature(LiveSource.__init__).parameters
    return set(params) - {"self", "source_id", "nominal_fps"}


def _check_options(kind: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"open_source: unknown option(s) for {kind}: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed)) or 'none'}"
        )
