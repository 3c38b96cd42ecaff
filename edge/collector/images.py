"""Hit pictures in append-only segment files, written once and synced before the hits commit.

Pictures are nine tenths of what the collector writes.  As SQLite blobs each byte
is written twice (to the WAL, then to the database at the checkpoint); here it is
written once, a whole batch in one `writev` and one `fdatasync`.  The database
keeps (segment, offset, length) for each picture.  A crash between the sync and
the commit leaves unreferenced bytes at the end of a segment, which harm nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

SEGMENT_BYTES = 1024**3  # a new segment file after this many bytes
_MAX_IOV = 512  # writev takes at most IOV_MAX (1024 on Linux) buffers


class ImageLog:
    """The segment files under `directory`: `append` for the collector, `read` for anyone."""

    def __init__(
        self, directory: Path, *, readonly: bool = False, segment_bytes: int = SEGMENT_BYTES
    ):
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self._readonly = readonly
        self._fd = -1
        self._segment = -1
        self._size = 0
        self._read_fds: dict[int, int] = {}
        self._lock = threading.Lock()
        if not readonly:
            self.directory.mkdir(parents=True, exist_ok=True)
            existing = sorted(int(p.stem) for p in self.directory.glob("*.seg") if p.stem.isdigit())
            self._open(existing[-1] if existing else 0)

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:06d}.seg"

    def _open(self, segment: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        path = self._path(segment)
        new = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._segment = segment
        self._size = os.fstat(self._fd).st_size  # past any torn tail a crash left
        if new:  # the new file's name must survive a power cut too
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def append(self, blobs: Sequence[bytes]) -> list[tuple[int, int, int]]:
        """Write `blobs` durably; returns (segment, offset, length) for each, in order."""
        if self._readonly:
            raise RuntimeError("image log opened read-only")
        if self._size >= self.segment_bytes:
            self._open(self._segment + 1)
        where = []
        offset = self._size
        for b in blobs:
            where.append((self._segment, offset, len(b)))
            offset += len(b)
        for i in range(0, len(blobs), _MAX_IOV):
            chunk = blobs[i : i + _MAX_IOV]
            want = sum(len(b) for b in chunk)
            done = os.writev(self._fd, chunk)
            if done != want:  # a short write: finish it (a full disk raises OSError)
                rest = b"".join(chunk)[done:]
                while rest:
                    rest = rest[os.write(self._fd, rest) :]
        os.fdatasync(self._fd)
        self._size = offset
        return where

    def read(self, segment: int, offset: int, length: int) -> bytes:
        with self._lock:
            fd = self._read_fds.get(segment)
            if fd is None:
                fd = os.open(self._path(segment), os.O_RDONLY)
                self._read_fds[segment] = fd
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise OSError(f"{self._path(segment)}: picture cut short at {offset}+{length}")
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with self._lock:
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
