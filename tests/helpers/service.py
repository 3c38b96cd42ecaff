"""Helpers for the node tests: a drive-by clip made in code, a node config, the node as a child."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.node.models import ModelError, load_manifest
from edge.synthetic.drive_by import SyntheticDriveBy
from helpers.link import child_env

CLIP_FPS = 15.0


def drive_by_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """Five day-time passes, overlapping (about 100 frames at 15 fps), and their truth;
    made once a session."""
    clip = SyntheticDriveBy.default(0, vehicles=5, night=0, fps=CLIP_FPS)
    path = tmp_path_factory.getbasetemp() / "drive-by-5.mp4"
    if not path.exists():
        clip.write_video(path.with_suffix(".part.mp4")).rename(path)
    return path, clip.truth


def models_or_skip() -> None:
    try:
        load_manifest().path("plates")
    except ModelError as exc:
        pytest.skip(f"models not prepared ({exc}); run: make models")


def node_config(root: Path, source: Path | str, **extra: str) -> Path:
    """A node with one camera and no collector: passes are kept in its outbox only."""
    path = root / "edge.yaml"
    lines = ["node_id: test-node", f"state_dir: {root / 'state'}",
             *(f"{k}: {v}" for k, v in extra.items()),
             "cameras:", "  - id: lane-1", f"    source: {source}"]
    path.write_text("\n".join(lines) + "\n")
    return path


class NodeProcess:
    """`anpr-edge run --config` as a child process; its event lines collected as they come."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.lines: list[dict] = []
        self._changed = threading.Condition()
        with log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
                stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
                env=env or child_env())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(json.loads(line))
                self._changed.notify_all()

    def wait_lines(self, n: int, timeout: float = 60.0) -> list[dict]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.lines) >= n or
                                          self.proc.poll() is not None, timeout):
                raise AssertionError(f"no {n} event lines within {timeout} s:\n"
                                     + self.log.read_text())
            return list(self.lines)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """The exit status, once the process has ended and its last lines are read."""
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.wait(10)


def stored_reads(state_dir: Path) -> list[tuple[str, str]]:
    """(plate, seen_at) of every read in a node's outbox, opened read-only."""
    db = sqlite3.connect(f"file:{state_dir / 'outbox.db'}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in db.execute("SELECT plate, seen_at FROM reads ORDER BY id")]
    finally:
        db.close()

