"""Read-only SQLite connections to one file, a few, each lent to one thread at a time.

The collector's databases are written by one writer each, in WAL mode; readers (the
console, the operator's CLI) open them read-only (`mode=ro`), so a reader can neither
write nor create the file, and never holds up the writer.  A connection is opened when
first wanted, at most `size` of them; a thread that finds them all lent waits for one.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

_WAIT_S = 30.0  # for a connection another thread has


class ReadPool:
    """Up to `size` read-only connections to `path`; rows come back as `sqlite3.Row`."""

    def __init__(self, path: Path, size: int = 4):
        self.path = Path(path)
        self._free: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._made = 0
        self._size = size
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for this thread until the block ends (FileNotFoundError: no file)."""
        try:
            conn = self._free.get_nowait()
        except queue.Empty:
            with self._lock:
                make = self._made < self._size
                if make:
                    self._made += 1
            if make:
                try:
                    conn = self._open()
                except BaseException:
                    with self._lock:
                        self._made -= 1
                    raise
            else:
                conn = self._free.get(timeout=_WAIT_S)
        try:
            yield conn
        finally:
            self._free.put(conn)

    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: not there (yet)")
        conn = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=5
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
            self._made = 0
        while not self._free.empty():
            self._free.get_nowait()
