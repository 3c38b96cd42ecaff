"""Helpers for the link and collector tests: keys, hits, a collector in a thread or a process."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq

from edge.collector.config import CollectorConfig
from edge.collector.service import CollectorService
from edge.core.keys import generate_keypair, load_keypair
from edge.core.link_protocol import (
    JPEG_MAGIC,
    CameraLocation,
    HitMessage,
    HitPlate,
    WatchlistMatch,
)

REPO = Path(__file__).resolve().parents[2]
RUN_ID = uuid.UUID("6f1c0b1e-8d1e-4f55-9a63-5b1f2f0c9a01")


def wait_for(cond: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    """Poll `cond` until it is truthy; fail the test after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def hit_id(n: int, run: str = "") -> str:
    """Deterministic hit ids, so a test knows which hit is which after a crash."""
    return str(uuid.uuid5(RUN_ID, f"{run}-{n}"))


def fake_jpeg(size: int, fill: bytes = b"\x55") -> bytes:
    return JPEG_MAGIC + fill * (size - len(JPEG_MAGIC) - 2) + b"\xff\xd9"


def make_hit(
    n: int = 0,
    *,
    node: str = "edge1",
    priority: int = 0,
    run: str = "",
    crop: int = 2048,
    scene: int = 8192,
    camera: str = "cam1",
) -> HitMessage:
    return HitMessage(
        node=node,
        camera=camera,
        seen_at=dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=n),
        plate=HitPlate(text=f"AB{n:05d}", raw=f"AB {n:05d}", formatted=f"AB {n:05d}",
                       country="DE", confidence=0.9),
        match=WatchlistMatch(watchlist="stolen", entry_id=f"e{n}", kind="exact",
                             entry_plate=f"AB{n:05d}", priority=priority, reason="stolen car"),
        location=CameraLocation(52.52, 13.40, "A4 km 112", "eastbound"),
        crop_jpeg=fake_jpeg(crop) if crop else b"",
        scene_jpeg=fake_jpeg(scene) if scene else b"",
        hit_id=hit_id(n, run),
    )  # fmt: skip


@dataclass
class Keys:
    """A collector key pair, edge key pairs, and an allow-list holding some of the edges."""

    root: Path
    server_public: bytes

    @property
    def collector_dir(self) -> Path:
        return self.root / "collector-creds"

    @property
    def allowed_dir(self) -> Path:
        return self.root / "allowed"

    def edge_dir(self, name: str) -> Path:
        return self.root / f"edge-{name}"

    def edge(self, name: str, *, allowed: bool = True) -> tuple[bytes, bytes]:
        """Make (once) and return the (public, secret) pair of edge `name`."""
        d = self.edge_dir(name)
        if not (d / f"{name}.key_secret").exists():
            generate_keypair(d, name)
            if allowed:
                shutil.copy(d / f"{name}.key", self.allowed_dir / f"{name}.key")
        return load_keypair(d, name)


def make_keys(root: Path) -> Keys:
    (root / "allowed").mkdir(parents=True, exist_ok=True)
    public, _ = generate_keypair(root / "collector-creds", "collector")
    return Keys(root, public)


def collector_config(root: Path, keys: Keys, listen: str = "tcp://127.0.0.1:0") -> CollectorConfig:
    return CollectorConfig(
        listen=listen,
        data_dir=root / "collector-data",
        credentials_dir=str(keys.collector_dir),
        allowed_keys_dir=keys.allowed_dir,
        heartbeat_flush_s=0.05,
    )


def start_collector(root: Path, keys: Keys, ctx: zmq.Context, **kw: object) -> CollectorService:
    service = CollectorService(collector_config(root, keys, **kw), ctx=ctx)  # type: ignore[arg-type]
    service.start()
    return service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stored_ids(db_path: Path) -> list[str]:
    """Hit ids in the collector's database, in the order they were stored."""
    if not db_path.exists():
        return []
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        return [r[0] for r in db.execute("SELECT hit_id FROM hits ORDER BY rowid")]
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


def child_env() -> dict[str, str]:
    """The environment of a child process: this tree's edge/, and tests/ (for a test file
    run as a script, wherever it sits, to import helpers)."""
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"),
                                         env.get("PYTHONPATH", "")])  # fmt: skip
    return env


class CollectorProcess:
    """`anpr-collector run` in its own process, on a fixed port so it can come back."""

    def __init__(self, root: Path, keys: Keys, port: int):
        self.root = root
        self.port = port
        self.config = root / "collector.yaml"
        self.log = root / "collector.log"
        cfg = collector_config(root, keys, f"tcp://127.0.0.1:{port}")
        self.db = cfg.db_path
        self.config.write_text(
            f"listen: {cfg.listen}\n"
            f"data_dir: {cfg.data_dir}\n"
            f"credentials_dir: {cfg.credentials_dir}\n"
            f"allowed_keys_dir: {cfg.allowed_keys_dir}\n"
            "heartbeat_flush_s: 0.05\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def start(self) -> None:
        self._starts += 1
        marker = "collector listening on"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge.collector.cli", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(),
            )
        wait_for(
            lambda: (
                self.log.read_text(errors="replace").count(marker) >= self._starts
                or self.proc.poll() is not None
            ),  # type: ignore[union-attr]
            20,
            "the collector to listen",
        )
        if self.proc.poll() is not None:
            raise AssertionError(f"collector exited: {self.log.read_text(errors='replace')}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def ids(self) -> list[str]:
        return stored_ids(self.db)

