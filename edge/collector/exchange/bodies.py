"""The outbox's bodies of hits: append-only segment files next to its database.

A hit's body (~135 KB with its pictures) written into SQLite is written twice (the WAL,
then the checkpoint into the file) in pages the size of the database's; here it is
written once, with one `fdatasync` for all the bodies of a transaction, before the
transaction that names them (segment, offset, length) commits.  One `BodyLog` writes
(the outbox's connection that forward_hits uses); it starts a segment of its own when
opened and another every `segment_bytes`.  A segment it no longer writes and no row
names is deleted (`Outbox.reclaim`).  Bytes a crash or a rolled-back transaction left
behind belong to no row and go with their segment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

SEGMENT_BYTES = 64 << 20
_SUFFIX = ".body"


class BodyLost(OSError):
    """A body's segment is gone, or shorter than the row says."""


class BodyLog:
    """Segment files `NNNNNNNN.body` in `directory`; appends only if `writer`."""

    def __init__(self, directory: Path, *, writer: bool = False,
                 segment_bytes: int = SEGMENT_BYTES):
        self.directory = Path(directory)
        self.writer, self.segment_bytes = writer, segment_bytes
        self._fd = -1
        self.segment = -1  # the one being written
        self._size = 0
        self._unsynced = False
        self._readers: dict[int, int] = {}
        self._known = set(self.segments()) if writer else set()  # the files there are

    def path(self, segment: int) -> Path:
        return self.directory / f"{segment:08d}{_SUFFIX}"

    def segments(self) -> list[int]:
        """The segment files there are, in order."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.stem) for p in self.directory.glob("*" + _SUFFIX)
                      if p.stem.isdigit())

    def append(self, body: bytes | Sequence[bytes]) -> tuple[int, int]:
        """Write `body` (or the pieces it is made of, written as they are, not joined);
        (segment, offset).  Durable after `sync()`."""
        assert self.writer, "a BodyLog opened to read"
        if self._fd < 0 or self._size >= self.segment_bytes:
            self._next_segment()
        offset = self._size
        parts = [body] if isinstance(body, bytes) else [p for p in body if p]
        want = sum(map(len, parts))
        n = os.pwritev(self._fd, parts, self._size) if parts else 0
        if n != want:  # a short write: the rest one piece at a time
            view = memoryview(b"".join(parts))[n:]
            at = self._size + n
            while view:
                n = os.pwrite(self._fd, view, at)
                if n <= 0:
                    raise OSError(f"{self.path(self.segment)}: wrote nothing at {at}")
                view, at = view[n:], at + n
        self._size += want
        self._unsynced = True
        return self.segment, offset

    def sync(self) -> None:
        if self._unsynced:
            os.fdatasync(self._fd)
            self._unsynced = False

    def _next_segment(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1
        self.directory.mkdir(parents=True, exist_ok=True)
        have = self.segments()
        segment = max(self.segment, have[-1] if have else 0) + 1
        self._fd = os.open(self.path(segment), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self.segment, self._size = segment, 0
        self._known.add(segment)
        dir_fd = os.open(self.directory, os.O_RDONLY)  # the new name survives a power cut
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def read(self, segment: int, offset: int, length: int) -> bytes:
        fd = self._readers.get(segment)
        if fd is None:
            try:
                fd = self._readers[segment] = os.open(self.path(segment), os.O_RDONLY)
            except FileNotFoundError as e:
                raise BodyLost(f"{self.path(segment)}: no such file") from e
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise BodyLost(f"{self.path(segment)}: {len(data)} of {length} bytes at {offset}")
        return data

    def closed_before(self, segment: int | None) -> list[int]:
        """The segments this log (a writer) found or made and does not write now, below
        `segment` (all where None)."""
        return sorted(s for s in self._known if s != self.segment
                      and (segment is None or s < segment))

    def delete(self, segments: list[int]) -> None:
        for s in segments:
            fd = self._readers.pop(s, None)
            if fd is not None:
                os.close(fd)
            self.path(s).unlink(missing_ok=True)
            self._known.discard(s)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
