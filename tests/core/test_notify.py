"""The sd_notify protocol against a real datagram socket, and the watchdog gate on camera loops.

The socket is the test's own AF_UNIX datagram socket, given to the code as
NOTIFY_SOCKET, exactly as systemd does; last a real `anpr-edge run` process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from helpers.link import child_env, free_port

from edge.core.notify import Notifier, watchdog_period
from edge.node.health import Loop, LoopWatch

WAIT = 10.0


class NotifySocket:
    """What systemd listens on: a datagram socket, at a path or an abstract '@' name."""

    def __init__(self, tmp_path: Path, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"anpr-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = tmp_path / "notify.sock"
            self.sock.bind(str(path))
            self.address = str(path)
        self.messages: list[dict[str, str]] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            with self._changed:
                self.messages.append(fields)
                self._changed.notify_all()

    def kinds(self) -> list[str]:
        """READY, WATCHDOG, STOPPING (or STATUS, when alone) in the order they came."""
        with self._changed:
            return self._kinds()

    def _kinds(self) -> list[str]:
        return [next((k for k in ("READY", "WATCHDOG", "STOPPING") if k in m), "STATUS")
                for m in self.messages]

    def wait_for(self, cond, what: str, timeout: float = WAIT) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: cond(self._kinds()), timeout):
                raise AssertionError(f"timed out waiting for {what}; got {self._kinds()}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=[False, True], ids=["path", "abstract"])
def notify_socket(request, tmp_path):
    sock = NotifySocket(tmp_path, abstract=request.param)
    yield sock
    sock.close()


def test_messages_arrive_as_systemd_reads_them(notify_socket):
    notifier = Notifier(notify_socket.address)
    assert notifier.enabled
    assert notifier.ready("2 camera(s): a live\nb dead")
    assert notifier.watchdog()
    assert notifier.status("still here")
    assert notifier.extend_timeout(2.5)
    assert notifier.stopping("bye")
    notify_socket.wait_for(lambda k: len(k) == 5, "five messages")
    ready, ping, status, extend, stopping = notify_socket.messages
    # one line a field: the newline inside the status does not start a field of its own
    assert ready == {"READY": "1", "STATUS": "2 camera(s): a live b dead",
                     "MAINPID": str(os.getpid())}
    assert ping == {"WATCHDOG": "1"}
    assert status == {"STATUS": "still here"}
    assert extend == {"EXTEND_TIMEOUT_USEC": "2500000"}
    assert stopping == {"STOPPING": "1", "STATUS": "bye"}
    notifier.close()


def test_without_systemd_nothing_is_sent():
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.watchdog() and not notifier.stopping()


def test_a_gone_socket_is_reported_once_and_survived(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    assert not notifier.watchdog()
    assert not notifier.watchdog()
    assert [r.levelname for r in caplog.records].count("WARNING") == 1


def test_watchdog_period_is_half_of_watchdog_usec_for_this_process():
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_period({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}) == 0.1
    assert watchdog_period({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period({}) is None
    assert watchdog_period({"WATCHDOG_USEC": "soon"}) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_stalled_loop_stops_the_pings_and_progress_resumes_them(notify_socket, caplog):
    clock = FakeClock()
    loops = {"camera a": clock.now, "camera b": clock.now}
    faults: list[str] = []
    watch = LoopWatch(Notifier(notify_socket.address),
                      lambda: [Loop(name, last, threading.get_ident())
                               for name, last in loops.items()],
                      period_s=5.0, stall_s=20.0, faults=lambda: list(faults), clock=clock)
    assert watch.tick()
    clock.now += 15
    loops["camera a"] = clock.now  # a goes round; b has been quiet 15 s: not yet hung
    assert watch.tick()
    clock.now += 10
    loops["camera a"] = clock.now
    assert not watch.tick()  # b quiet 25 s
    assert watch.problems() == ["camera b: no progress for 25 s"]
    hung = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(hung) == 1 and "camera b" in hung[0].getMessage()
    assert "test_notify.py" in hung[0].getMessage()  # where the hung thread is
    assert not watch.tick()
    loops["camera b"] = clock.now
    assert watch.tick()
    faults.append("hit sender died")
    assert not watch.tick()
    notify_socket.wait_for(lambda k: k.count("WATCHDOG") == 3, "three pings")
    assert watch.pings == 3


def test_without_a_watchdog_the_watch_only_reports_status(notify_socket):
    watch = LoopWatch(Notifier(notify_socket.address), lambda: [], period_s=None, stall_s=1.0,
                      status=lambda: "1 camera(s): a live")
    assert not watch.tick()
    notify_socket.wait_for(lambda k: k == ["STATUS"], "a status")
    assert notify_socket.messages == [{"STATUS": "1 camera(s): a live"}]


def _write_config(tmp_path: Path, source: str) -> Path:
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"node_id: notify-test\nstate_dir: {tmp_path / 'state'}\n"
        f"cameras:\n  - id: gate\n    source: {source}\n")
    return config


@pytest.mark.models
def test_node_says_ready_pings_while_its_camera_is_away_and_says_stopping(tmp_path):
    """The real node under a systemd-like environment: its only camera cannot be reached,
    and the loop waiting for it to come back is not hung, so the pings go on."""
    from edge.node.models import ModelError, load_manifest

    try:
        load_manifest().path("plates")
    except ModelError as exc:
        pytest.skip(f"models not prepared ({exc})")
    listener = NotifySocket(tmp_path, abstract=True)
    config = _write_config(tmp_path, f"rtsp://127.0.0.1:{free_port()}/nobody-here")
    env = child_env() | {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    log = (tmp_path / "edge.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        listener.wait_for(lambda k: "READY" in k, "READY", timeout=60)
        started = time.monotonic()
        # pings every 0.2 s; five of them take a second, while the camera is dead
        listener.wait_for(lambda k: k.count("WATCHDOG") >= 5, "five pings")
        assert time.monotonic() - started < 5
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        listener.close()
    kinds = [k for k in listener.kinds() if k != "STATUS"]
    ready, stopping = kinds.index("READY"), kinds.index("STOPPING")
    assert "WATCHDOG" not in kinds[:ready]
    assert kinds[ready + 1:stopping] == ["WATCHDOG"] * (stopping - ready - 1)
    assert kinds[stopping:] == ["STOPPING"]  # nothing after it
    ready_msg = next(m for m in listener.messages if "READY" in m)
    assert ready_msg["MAINPID"] == str(proc.pid)
    assert "gate" in ready_msg["STATUS"]
    text = (tmp_path / "edge.log").read_text()
    assert "camera=gate" in text and "signal SIGTERM: stopping" in text


def test_collector_says_ready_pings_and_says_stopping(tmp_path):
    from helpers.link import collector_config, make_keys

    keys = make_keys(tmp_path / "pki")
    cfg = collector_config(tmp_path / "pki", keys, f"tcp://127.0.0.1:{free_port()}")
    config = tmp_path / "collector.yaml"
    config.write_text(f"listen: {cfg.listen}\ndata_dir: {cfg.data_dir}\n"
                      f"credentials_dir: {cfg.credentials_dir}\n"
                      f"allowed_keys_dir: {cfg.allowed_keys_dir}\n")
    listener = NotifySocket(tmp_path)
    env = child_env() | {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000"}
    log = (tmp_path / "collector.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edge.collector.cli", "run", "--config",
                             str(config)], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        listener.wait_for(lambda k: k.count("WATCHDOG") >= 3, "READY and three pings", 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        listener.close()
    kinds = listener.kinds()
    assert kinds[0] == "READY" and kinds[-1] == "STOPPING"
    assert set(kinds[1:-1]) == {"WATCHDOG"}
    assert cfg.listen in listener.messages[0]["STATUS"]
