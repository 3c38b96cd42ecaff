"""Hit pictures in segment files, written once at known offsets and synced before the hits commit.

Pictures are nine tenths of what the collector writes.  As SQLite blobs each byte
is written twice (to the WAL, then to the database at the checkpoint); here it is
written once, a whole batch in one `pwritev` and one `fdatasync`.  The database
keeps (segment, offset, length) for each picture.

Every write goes to an explicit offset, the end of what is known to be good, never
to wherever the file happens to end (`O_APPEND`): a write that fails half-way (a full
disk) is cut off again, and even if that cut fails the next write lands over it, so
a picture's recorded offset is always where its bytes are.  Bytes past the last
committed picture (a crash between the sync and the commit, a failed cut) are cut
off at start-up by the hit store (`HitStore`), which knows where that is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

SEGMENT_BYTES = 1024**3  # a new segment file after this many bytes
_MAX_IOV = 512  # pwritev takes at most IOV_MAX (1024 on Linux) buffers
_SWEEP_S = 60.0  # how often readers let go of segment files deleted under them


class ImageLog:
    """The segment files under `directory`: `append` for the collector, `read` for anyone.

    Written by one thread alone.  `open_for_append(segment)` says which segment the
    next pictures go to (the hit store decides, after its start-up check); until then
    the last segment found is used.  `on_new_segment(n)` is called before segment
    `n` is first written, so the store can note that the segment is its own.
    """

    def __init__(
        self,
        directory: Path,
        *,
        readonly: bool = False,
        segment_bytes: int = SEGMENT_BYTES,
        on_new_segment: Callable[[int], None] | None = None,
    ):
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.on_new_segment = on_new_segment
        self._readonly = readonly
        self._fd = -1
        self._segment = -1
        self._size = 0  # the end of what is known good in the current segment
        self._read_fds: dict[int, int] = {}
        self._swept = time.monotonic()
        self._lock = threading.Lock()
        if not readonly:
            self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, segment: int) -> Path:
        return self.directory / f"{segment:06d}.seg"

    def sizes(self) -> dict[int, int]:
        """Every segment file here and its size in bytes."""
        out = {}
        for p in self.directory.glob("*.seg"):
            if p.stem.isdigit():
                try:
                    out[int(p.stem)] = p.stat().st_size
                except FileNotFoundError:  # deleted meanwhile
                    continue
        return dict(sorted(out.items()))

    @property
    def segment(self) -> int:
        """The segment the next pictures go to (-1 before the first)."""
        return self._segment

    @property
    def size(self) -> int:
        """The good end of the current segment."""
        return self._size

    def open_for_append(self, segment: int) -> None:
        """Write the next pictures to `segment`, from its end (created when first written)."""
        if self._readonly:
            raise RuntimeError("image log opened read-only")
        self._close_writer()
        self._segment = segment
        path = self.path(segment)
        self._size = path.stat().st_size if path.exists() else 0

    def _writer(self) -> int:
        if self._fd < 0:
            if self._segment < 0:
                existing = list(self.sizes())
                self.open_for_append(existing[-1] if existing else 0)
            path = self.path(self._segment)
            new = not path.exists()
            if new and self.on_new_segment is not None:
                self.on_new_segment(self._segment)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
            if new:  # the new file's name must survive a power cut too
                self._size = 0
                _sync_dir(self.directory)
        return self._fd

    def _close_writer(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def append(self, blobs: Sequence[bytes], *, drop_cache: bool = False
               ) -> list[tuple[int, int, int]]:
        """Write `blobs` durably; returns (segment, offset, length) for each, in order.

        On any error the segment is cut back to where it was, and the error raised.
        `drop_cache`: once durable, their pages leave the page cache (POSIX_FADV_DONTNEED),
        for pictures no one reads soon: the next writes reuse those pages, not new ones
        (on this VM, half the CPU of writing them).
        """
        if self._readonly:
            raise RuntimeError("image log opened read-only")
        if not blobs:
            return []
        if self._segment >= 0 and self._size >= self.segment_bytes:
            self.open_for_append(self._segment + 1)
        fd = self._writer()
        start = self._size
        where = []
        offset = start
        for b in blobs:
            where.append((self._segment, offset, len(b)))
            offset += len(b)
        try:
            at = start
            for i in range(0, len(blobs), _MAX_IOV):
                chunk = blobs[i : i + _MAX_IOV]
                want = sum(len(b) for b in chunk)
                done = os.pwritev(fd, chunk, at)
                if done != want:  # a short write: finish it (a full disk raises OSError)
                    rest = memoryview(b"".join(chunk))[done:]
                    pos = at + done
                    while rest:
                        n = os.pwrite(fd, rest, pos)
                        if n <= 0:
                            raise OSError(f"{self.path(self._segment)}: wrote nothing at {pos}")
                        rest, pos = rest[n:], pos + n
                at += want
            os.fdatasync(fd)
        except BaseException:
            self._cut(start)
            raise
        self._size = offset
        if drop_cache and offset > start:
            with contextlib.suppress(OSError):  # only advice
                os.posix_fadvise(fd, start, offset - start, os.POSIX_FADV_DONTNEED)
        return where

    def _cut(self, end: int) -> None:
        """Cut the current segment back to `end` after a failed write."""
        try:
            os.ftruncate(self._fd, end)
        except OSError as e:  # the next write goes to `end` all the same
            log.error("%s: could not cut a failed write back to %d: %s",
                      self.path(self._segment), end, e)  # fmt: skip

    def undo(self, where: Sequence[tuple[int, int, int]]) -> bool:
        """Take back the pictures of the last `append` (their rows were not stored).

        Only when they are still the last thing written; returns whether it was done.
        """
        if self._readonly or not where or self._fd < 0:
            return False
        segment, start, _ = where[0]
        last_seg, last_off, last_len = where[-1]
        if segment != self._segment or last_seg != segment or last_off + last_len != self._size:
            return False
        self._cut(start)
        self._size = start
        return True

    def cut(self, segment: int, end: int) -> None:
        """Cut a segment file back to `end` (the start-up check's repair of a torn tail)."""
        with self._lock:
            fd = self._read_fds.pop(segment, None)
        if fd is not None:
            os.close(fd)
        os.truncate(self.path(segment), end)
        if segment == self._segment:
            self._size = min(self._size, end)

    def delete(self, segment: int) -> int:
        """Delete a segment file no picture is in any more; returns the bytes freed."""
        if segment == self._segment:
            raise ValueError(f"segment {segment} is being written")
        with self._lock:
            fd = self._read_fds.pop(segment, None)
        if fd is not None:
            os.close(fd)
        path = self.path(segment)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        _sync_dir(self.directory)
        return size

    def read(self, segment: int, offset: int, length: int) -> bytes:
        self._sweep()
        with self._lock:
            fd = self._read_fds.get(segment)
            if fd is None:
                fd = os.open(self.path(segment), os.O_RDONLY)
                self._read_fds[segment] = fd
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise OSError(f"{self.path(segment)}: picture cut short at {offset}+{length}")
        return data

    def _sweep(self) -> None:
        """Close files of segments deleted by the collector, so their space is given back."""
        now = time.monotonic()
        if now - self._swept < _SWEEP_S:
            return
        self._swept = now
        with self._lock:
            gone = [s for s, fd in self._read_fds.items() if os.fstat(fd).st_nlink == 0]
            for s in gone:
                os.close(self._read_fds.pop(s))

    def close(self) -> None:
        self._close_writer()
        with self._lock:
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()


def _sync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
