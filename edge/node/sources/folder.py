"""Frames from a folder of still images, in natural name order, at a fixed rate."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2

from edge.core.scrub import ScrubbingFilter
from edge.core.status import CameraState
from edge.core.types import Frame

from .base import SourceBase, SourceError, as_bgr
from .decode import DEFAULT_DECODE_AHEAD, DecodeAhead

log = logging.getLogger(__name__)
log.addFilter(ScrubbingFilter())

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}
)
DEFAULT_FOLDER_FPS = 10.0

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[list[int | str], str]:
    """Sort key that puts "img2.jpg" before "img10.jpg"."""
    # re.split with a group alternates text and digits, so like compares with like.
    parts: list[int | str] = [
        int(p) if i % 2 else p.lower() for i, p in enumerate(_DIGITS.split(name))
    ]
    return parts, name


class ImageFolderSource(SourceBase):
    """Reads the images of one folder (not its sub-folders) as a video.

    Frame `index` is the image's place in the sorted listing and `pts` is
    index / fps, so an unreadable image leaves a gap rather than shifting time.
    Images are decoded on a thread of their own, `decode_ahead` ahead of the consumer
    (0: on the consumer's thread), every one in order.
    """

    live = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        source_id: str | None = None,
        fps: float | None = None,
        decode_ahead: int = DEFAULT_DECODE_AHEAD,
    ) -> None:
        self.path = Path(path)
        if decode_ahead < 0:
            raise ValueError(f"decode_ahead must be >= 0, got {decode_ahead!r}")
        self._decode_ahead = decode_ahead
        rate = DEFAULT_FOLDER_FPS if fps is None else float(fps)
        if not rate > 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        try:
            names = [
                entry.name
                for entry in os.scandir(self.path)
                if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
            ]
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot list folder ({exc.strerror or exc})") from None
        if not names:
            kinds = ", ".join(sorted(IMAGE_SUFFIXES))
            raise SourceError(f"{self.path}: folder holds no images (looked for {kinds})")
        self.files = [self.path / n for n in sorted(names, key=natural_key)]
        super().__init__(source_id or self.path.name, rate, CameraState.CONNECTING)
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        if not self._decode_ahead:
            yield from self._frames()
            return
        ahead = DecodeAhead(self._frames(), depth=self._decode_ahead,
                            name=f"decode-{self.source_id}")
        try:
            yield from ahead
        finally:
            ahead.stop(2.0, self.source_id)
            self._health.set_state(CameraState.ENDED)

    def _frames(self) -> Iterator[Frame]:
        fps = self.nominal_fps or DEFAULT_FOLDER_FPS
        self._health.set_state(CameraState.LIVE)
        try:
            for index, file in enumerate(self.files):
                if self._closed.is_set():
                    return
                image = as_bgr(cv2.imread(str(file), cv2.IMREAD_COLOR))
                if image is None:
                    log.warning("%s: skipped unreadable image %s", self.source_id, file.name)
                    self._health.count_skipped()
                    self._health.set_state(CameraState.LIVE, f"unreadable image {file.name}")
                    continue
                self._health.count_frame()
                yield Frame(image, index, index / fps, time.time(), self.source_id)
        finally:
            self._health.set_state(CameraState.ENDED)

    def close(self) -> None:
        self._closed.set()
        self._health.set_state(CameraState.ENDED)
