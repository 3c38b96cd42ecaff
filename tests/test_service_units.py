"""The systemd units: what they promise, and `systemd-analyze verify` where it is installed."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.cli import build_parser

UNITS = Path(__file__).resolve().parents[1] / "systemd"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, value = line.split("=", 1)
        current.setdefault(key, []).append(value)
    return sections


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


@pytest.mark.parametrize("name", ["anpr-edge@.service", "anpr-collector.service"])
def test_units_notify_restart_and_are_hardened(name):
    service = unit(name)["Service"]
    one = {k: v[-1] for k, v in service.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["Restart"] == "always" and seconds(one["RestartSec"]) >= 1
    assert seconds(one["WatchdogSec"]) >= 10
    assert one["DynamicUser"] == "yes" and one["ProtectSystem"] == "strict"
    assert one["NoNewPrivileges"] == "yes" and one["StateDirectory"].startswith("anpr-")
    # IP and Unix sockets; the collector also netlink, which libzmq's bind needs
    # (tests/test_systemd_real.py shows it under a real systemd)
    families = set(one["RestrictAddressFamilies"].split())
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= families
    assert families - {"AF_UNIX", "AF_INET", "AF_INET6"} == (
        {"AF_NETLINK"} if name == "anpr-collector.service" else set())
    assert service["LoadCredential"]
    assert one["ExecStart"].startswith("/opt/anpr/.venv/bin/anpr-")
    limits = unit(name)["Unit"]
    assert int(limits["StartLimitBurst"][0]) >= 5 and seconds(limits["StartLimitIntervalSec"][0])


def test_the_edge_unit_runs_one_config_an_instance_within_its_stop_timeout():
    sections = unit("anpr-edge@.service")
    service = {k: v[-1] for k, v in sections["Service"].items()}
    argv = service["ExecStart"].split()
    assert argv[0] == "/opt/anpr/.venv/bin/anpr-edge"
    args = build_parser().parse_args(argv[1:])  # the unit's command line is one the CLI takes
    assert args.command == "run" and str(args.config) == "/etc/anpr-edge/%i.yaml"
    assert args.events == "none"  # plate reads never reach the journal
    assert args.stop_timeout + 5 <= seconds(service["TimeoutStopSec"])
    assert service["StateDirectory"] == "anpr-edge/%i"
    assert {c.split(":")[0] for c in sections["Service"]["LoadCredential"]} == {
        "%i.key_secret", "collector.key"}
    # cameras and nothing else of /dev
    assert service["DevicePolicy"] == "closed"
    assert sections["Service"]["DeviceAllow"] == ["char-video4linux rw"]
    assert service["SupplementaryGroups"] == "video"


def test_units_parse_as_ini_files():
    for path in UNITS.glob("*.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(path)
        assert {"Unit", "Service", "Install"} <= set(parser.sections()), path


@pytest.fixture
def root(tmp_path):
    """A file system root with the units installed and the venv's scripts in place."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    if not SYSTEM_UNITS.is_dir():
        pytest.skip(f"no {SYSTEM_UNITS} to verify against")
    shutil.copytree(SYSTEM_UNITS, tmp_path / "usr/lib/systemd/system", symlinks=True)
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    for path in UNITS.glob("*.service"):
        shutil.copy(path, units)
    bin_dir = tmp_path / "opt/anpr/.venv/bin"
    bin_dir.mkdir(parents=True)
    for script in ("anpr-edge", "anpr-collector"):
        (bin_dir / script).write_text("#!/bin/sh\n")
        (bin_dir / script).chmod(0o755)
    return tmp_path


def test_systemd_analyze_verify_passes(root):
    names = ["anpr-edge@lt-a2-in.service", "anpr-collector.service"]
    done = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *names],
                          capture_output=True, text=True, timeout=60)
    # unknown keys and bad values are warnings on stderr, with status 0: both must be clean
    assert (done.returncode, done.stderr.strip(), done.stdout.strip()) == (0, "", "")


def test_systemd_analyze_security_rates_them_ok(root):
    for name in ("anpr-edge@lt-a2-in.service", "anpr-collector.service"):
        done = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={root}",
                               name], capture_output=True, text=True, timeout=60)
        if done.returncode != 0 and "offline" in done.stderr:
            pytest.skip("this systemd-analyze cannot rate units offline")
        level = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
        assert level is not None, done.stdout + done.stderr
        assert float(level.group(1)) <= 2.0, done.stdout  # "OK" is below 2.5
