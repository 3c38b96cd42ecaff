"""The units under a real systemd (a Debian tree booted by systemd-nspawn): READY, the
dynamic user's state directory, keys through LoadCredential, a watchdog restart of a hung
pipeline and a clean stop. tests/helpers/systemd_real.py does the work; without root,
debootstrap, systemd-nspawn or the models these tests skip, saying which.

The tests share one booted container and run in file order: the watchdog test restarts
the edge, and the stop test, last, stops both units.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import pytest

_HELPER = Path(__file__).parent / "helpers" / "systemd_real.py"
_spec = importlib.util.spec_from_file_location("systemd_real", _HELPER)
assert _spec is not None and _spec.loader is not None
sr = importlib.util.module_from_spec(_spec)
sys.modules["systemd_real"] = sr  # dataclasses look their module up there
_spec.loader.exec_module(sr)

DYNAMIC_UIDS = range(61184, 65520)  # systemd's range for DynamicUser=


def _log(message: str) -> None:
    print(message, file=sys.stderr)


@pytest.fixture(scope="module")
def node():
    """Both units installed as the README says and started; READY=1 reached by each."""
    try:
        with sr.booted(log=_log) as (container, camera):
            node = sr.Node(container, camera, log=_log)
            node.install()
            for unit in (node.collector, node.edge):
                node.start(unit)  # Type=notify: returns once READY=1 came
            yield node
    except sr.Unavailable as exc:
        pytest.skip(f"no real systemd here: {exc}")


def _lines(text: str, *needles: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in needles)]


def test_both_units_reach_ready_and_say_how_they_are(node):
    c = node.container
    for unit in (node.collector, node.edge):
        assert c.sh("systemctl", "is-active", unit).stdout.strip() == "active"
        shown = c.show(unit, "Type", "NotifyAccess", "ActiveState", "SubState", "NRestarts")
        assert shown == {"Type": "notify", "NotifyAccess": "main", "ActiveState": "active",
                         "SubState": "running", "NRestarts": "0"}, unit
        # systemd logs "Started" only once READY=1 came (Type=notify)
        assert _lines(c.journal(unit), "Started "), unit
    assert c.show(node.collector, "StatusText")["StatusText"] == (
        f"listening on tcp://127.0.0.1:{node.collector_port}")
    # the edge's STATUS= names its camera; live once frames come (LoopWatch updates it)
    status = node.wait_for("the camera live in StatusText", lambda: (
        s if "cam1 live" in (s := c.show(node.edge, "StatusText")["StatusText"]) else None),
        timeout=60)
    assert re.fullmatch(r"1 camera\(s\): cam1 live \d+\.\d fps", status), status


def test_the_dynamic_user_owns_its_state_directory_and_nothing_else(node):
    c = node.container
    for unit, state in ((node.edge, f"anpr-edge/{node.node}"),
                        (node.collector, "anpr-collector")):
        uid = node.proc_uid(node.main_pid(unit))
        assert uid in DYNAMIC_UIDS, (unit, uid)
        assert c.sh("grep", "-c", f":{uid}:", "/etc/passwd", check=False).stdout.strip() == "0"
        assert node.stat(f"/var/lib/private/{state}") == {
            "uid": str(uid), "gid": str(uid), "mode": "700", "type": "directory\n"}, unit
        # /var/lib/private is root's alone: no other user reaches the state through it
        assert node.stat("/var/lib/private") == {"uid": "0", "gid": "0", "mode": "700",
                                                 "type": "directory\n"}
        link = c.sh("readlink", f"/var/lib/{state}").stdout.strip()
        assert link.endswith(f"private/{state}"), link
    uid = node.proc_uid(node.main_pid(node.edge))
    node.wait_for("the outbox in the state directory", lambda: c.sh(
        "test", "-f", f"/var/lib/private/anpr-edge/{node.node}/outbox.db", check=False
    ).returncode == 0, timeout=30)
    owners = c.sh("find", f"/var/lib/private/anpr-edge/{node.node}", "-printf",
                  "%U %p\\n").stdout.split("\n")
    assert all(line.startswith(f"{uid} ") for line in owners if line), owners


def test_keys_come_through_load_credential(node):
    c = node.container
    pid = node.main_pid(node.edge)
    creds = f"/run/credentials/{node.edge}"
    assert node.environ(pid)["CREDENTIALS_DIRECTORY"] == creds
    listed = sorted(c.sh("ls", creds).stdout.split())
    assert listed == ["collector.key", f"{node.node}.key_secret"]
    for name in listed:
        assert node.sha256(f"{creds}/{name}") == node.sha256(
            f"/etc/anpr-edge/credentials/{name}")
    # the folder the config names is root's: the service could not have read the key there
    uid = str(node.proc_uid(pid))
    denied = c.sh("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "cat",
                  f"/etc/anpr-edge/credentials/{node.node}.key_secret", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    collector_creds = f"/run/credentials/{node.collector}"
    assert node.environ(node.main_pid(node.collector))["CREDENTIALS_DIRECTORY"] == (
        collector_creds)
    assert node.sha256(f"{collector_creds}/collector.key_secret") == node.sha256(
        "/etc/anpr-collector/credentials/collector.key_secret")
    # and the keys work: the node's heartbeats reach the collector over CURVE
    heard = node.wait_for("the node's heartbeat at the collector", lambda: [
        n for n in node.nodes() if n["node"] == node.node], timeout=60)
    assert [cam["camera"] for cam in heard[0]["cameras"]] == ["cam1"]


def test_the_sandboxed_edge_reads_the_clip(node):
    """onnxruntime, FFmpeg and SQLite under the unit's sandbox (MemoryDenyWriteExecute,
    the system-call filter, ProtectSystem=strict) read plates of the replayed clip."""
    reads = node.wait_for("a plate of the clip in the outbox", lambda: [
        r for r in node.reads() if r in node.camera.plates], timeout=90)
    assert reads


def test_libzmq_binds_only_with_netlink_allowed(node):
    """Why the collector's unit allows AF_NETLINK: libzmq reads a bind address as an
    interface name first (getifaddrs(), a netlink socket) and aborts when refused."""
    c = node.container
    code = ("import zmq; zmq.Context().socket(zmq.ROUTER).bind('tcp://127.0.0.1:0'); "
            "print('bound')")
    for name, families in (("inet", "AF_UNIX AF_INET AF_INET6"),
                           ("netlink", "AF_UNIX AF_INET AF_INET6 AF_NETLINK")):
        c.sh("sh", "-c", f"cat > /run/systemd/system/anpr-zmq-{name}.service", input=(
            f"[Service]\nType=oneshot\nDynamicUser=yes\nRestrictAddressFamilies={families}\n"
            f'ExecStart=/opt/anpr/.venv/bin/python -c "{code}"\n'))
    c.sh("systemctl", "daemon-reload")
    assert c.sh("systemctl", "start", "anpr-zmq-inet.service", check=False).returncode != 0
    refused = c.journal("anpr-zmq-inet.service")
    assert "Address family not supported by protocol" in refused, refused
    assert "status=6/ABRT" in refused, refused
    c.sh("systemctl", "start", "anpr-zmq-netlink.service")
    assert "bound" in c.journal("anpr-zmq-netlink.service")


def test_a_hung_pipeline_is_killed_by_the_watchdog_and_restarted(node):
    c = node.container
    before = c.show(node.edge, "NRestarts", "MainPID", "WatchdogUSec")
    assert before["NRestarts"] == "0" and before["WatchdogUSec"] == f"{node.watchdog_s}s"
    tracer, said = node.hang_camera_loop()
    try:
        assert said["pid"] == int(before["MainPID"]) and "onnxruntime" in said["in"]
        # the node says so itself: no progress, so LoopWatch stops pinging
        hung = node.wait_for("HUNG in StatusText", lambda: (
            s if (s := c.show(node.edge, "StatusText")["StatusText"]).startswith("HUNG")
            else None), timeout=node.stall_s + node.watchdog_s + 15)
        assert hung.startswith("HUNG: camera cam1: no progress for"), hung
        node.wait_for("the watchdog's restart", lambda: c.show(
            node.edge, "NRestarts")["NRestarts"] == "1", timeout=node.watchdog_s + 30)
        ended = json.loads(tracer.stdout.readline())
        assert ended["ended"] == said["stopped"] and ended["how"] == "killed", ended
    finally:
        tracer.kill()
        tracer.wait(10)
    after = node.wait_for("READY again after the restart", lambda: (
        s if (s := c.show(node.edge, "ActiveState", "SubState", "MainPID"))["SubState"]
        == "running" else None), timeout=120)
    assert after["ActiveState"] == "active" and after["MainPID"] != before["MainPID"]
    journal = c.journal(node.edge)
    old = before["MainPID"]
    for expected in (f"Watchdog timeout (limit {node.watchdog_s}s)!",
                     f"Killing process {old} (anpr-edge) with signal SIGABRT.",
                     "Failed with result 'watchdog'.",
                     "Scheduled restart job, restart counter is at 1."):
        assert expected in journal, expected
    # its own word before the kill, and faulthandler's stacks (SIGABRT) after: the
    # camera thread is inside the model's run
    assert _lines(journal, "hung, so no watchdog pings (systemd restarts the node): "
                  "camera cam1: no progress")
    assert "Fatal Python error: Aborted" in journal
    assert re.search(r"onnxruntime_inference_collection\.py\", line \d+ in run\n"
                     r"(.*\n){0,16}.*edge/node/service\.py\", line \d+ in _consume", journal)


def test_stop_is_clean_and_within_the_stop_timeout(node):
    c = node.container
    # systemd says how the main process ended only at debug level when it ended well
    # (Result=success alone would also take a death by SIGTERM)
    c.sh("systemctl", "log-level", "debug")
    try:
        for unit, said in ((node.edge, f"node {node.node}: stopped"),
                           (node.collector, "collector stopped")):
            limit = c.show(unit, "TimeoutStopUSec")["TimeoutStopUSec"]
            started = time.monotonic()
            c.sh("systemctl", "stop", unit, timeout=120)
            took = time.monotonic() - started
            assert took < float(limit.removesuffix("s")), (unit, took, limit)
            assert c.show(unit, "ActiveState", "SubState", "Result") == {
                "ActiveState": "inactive", "SubState": "dead", "Result": "success"}, unit
            assert c.sh("systemctl", "is-active", unit, check=False).stdout.strip() == (
                "inactive")
            tail = c.journal(unit).split("signal SIGTERM: stopping")[-1]
            assert said in tail, tail[-3000:]
            assert "Main process exited, code=exited, status=0/SUCCESS" in tail, tail[-3000:]
            assert "Deactivated successfully." in tail, tail[-3000:]
            assert "Fatal Python error" not in tail and "ABRT" not in tail, tail[-3000:]
    finally:
        c.sh("systemctl", "log-level", "info")
