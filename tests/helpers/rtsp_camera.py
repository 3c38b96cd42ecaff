"""The tests' side of rtsp_server.py: a real RTSP camera on loopback, started, steered, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from urllib.parse import quote

SERVER = Path(__file__).with_name("rtsp_server.py")
# GObject introspection (python3-gi) is a Debian package for Debian's python, not the venv's.
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = "python3-gi and gir1.2-gst-rtsp-server-1.0 (`make rtsp` installs them)"


def unavailable() -> str | None:
    """Why a real RTSP server cannot run here, or None where it can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is absent; the RTSP server needs Debian's python3 and {PACKAGES}"
    try:
        probe = subprocess.run([SYSTEM_PYTHON, str(SERVER), "--check"], capture_output=True,
                               text=True, timeout=60, env=_server_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} could not run {SERVER.name} --check: {exc}"
    if probe.returncode == 0:
        return None
    said = (probe.stdout.strip() or probe.stderr.strip() or "no answer").splitlines()[-1]
    return f"GStreamer's RTSP server is not usable from {SYSTEM_PYTHON} ({said}); " \
           f"it needs {PACKAGES}"


def _server_env() -> dict[str, str]:
    # Not the venv's PYTHONPATH or PYTHONHOME: the server runs on Debian's own python.
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


class RtspCamera:
    """GStreamer's RTSP server serving the JPEG frames in `frames`, looped, as H.264 at
    rtsp://USER:PASSWORD@127.0.0.1:PORT/cam. It can stop, as a camera losing power, and
    start again on the same port; `rate` and `vfr` change how it delivers meanwhile.

    Its output is kept in `log`; `wait_for_line` waits on what it says."""

    def __init__(self, frames: Path, port: int, log: Path, *, user: str = "viewer",
                 password: str, rate: float = 18.0, vfr_tick: float = 0.0,
                 claim: str | None = None, push_log: Path | None = None,
                 then: Path | None = None) -> None:
        self.frames, self.port, self.log = frames, port, log
        self.user, self.password = user, password
        self.rate, self.vfr_tick, self.claim = rate, vfr_tick, claim
        # `push_log`: the server's `client index wall` line per frame pushed; `then`: a
        # JPEG served after the first time through instead of looping (rtsp_server.py)
        self.push_log, self.then = push_log, then
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None

    def url(self, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"rtsp://{quote(self.user, safe='')}:{quote(secret, safe='')}" \
               f"@127.0.0.1:{self.port}/cam"

    # -- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RtspCamera:
        """Start the server; return once it listens."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        args = [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), "--frames",
                str(self.frames), "--user", self.user, "--rate", str(self.rate)]
        if self.vfr_tick:
            args += ["--vfr-tick", str(self.vfr_tick)]
        if self.claim:
            args += ["--claim", self.claim]
        if self.push_log is not None:
            args += ["--push-log", str(self.push_log)]
        if self.then is not None:
            args += ["--then", str(self.then)]
        with self._changed:
            self.lines = []
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                bufsize=1, env=_server_env() | {"RTSP_PASSWORD": self.password})
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait_for_line("listening", timeout)
        return self

    def stop(self) -> None:
        """Gone at once, as a camera whose power is cut: the kernel closes its sockets."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()

    def __enter__(self) -> RtspCamera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- steering ---------------------------------------------------------------------

    def command(self, line: str, timeout: float = 10.0) -> None:
        """Send a command (`rate 3`, `vfr 18 60`) and wait for the server to take it."""
        assert self.proc is not None and self.proc.stdin is not None
        seen = len(self.lines)
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        self.wait_for_line(f"ok {line}", timeout, after=seen)

    def said(self, prefix: str) -> bool:
        """Whether the server, since it last started, said a line starting with `prefix`."""
        with self._changed:
            return any(line.startswith(prefix) for line in self.lines)

    def wait_for_line(self, prefix: str, timeout: float, after: int = 0) -> str:
        """The first line from the server starting with `prefix` (after the first `after`)."""

        def found() -> str | None:
            return next((ln for ln in self.lines[after:] if ln.startswith(prefix)), None)

        with self._changed:
            ok = self._changed.wait_for(
                lambda: found() is not None or self.proc is None or self.proc.poll() is not None,
                timeout)
            line = found()
        if line is None:
            why = "it exited" if ok else f"not within {timeout} s"
            raise AssertionError(f"RTSP server never said {prefix!r} ({why}); it said "
                                 f"{self.lines[-5:]}, stderr: {self.log.read_text()[-1500:]}")
        return line

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._changed:
                if proc is self.proc:
                    self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        proc.stdout.close()
        with self._changed:
            self._changed.notify_all()
