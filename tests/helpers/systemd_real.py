"""The units under a real systemd: a Debian tree booted with systemd-nspawn, on loopback.

    python tests/helpers/systemd_real.py tree   # build (once) the cached Debian tree
    python tests/helpers/systemd_real.py run    # boot it, install, show what systemd does

The tree is made by debootstrap from the Debian mirror apt uses here (the host's own
release), kept in .cache/systemd-tree (or $ANPR_SYSTEMD_TREE), and booted with
`systemd-nspawn --boot --volatile=overlay`: every run starts from the clean tree and
nothing it writes is kept. The container shares the host's network, so the edge's camera
(the synthetic drive-by, looped as an HTTP MJPEG stream by this process) and the
collector are on loopback. The repository, the venv's site-packages and the models are
bound read-only; a venv inside the tree, made by the tree's own python3, imports them.

Inside, the units are installed as the README says (units in /etc/systemd/system, configs
in /etc, key pairs made by `anpr-collector keygen` into root-only credentials folders)
and started by systemctl. A drop-in shortens WatchdogSec for the test's sake; nothing
else of the units is changed. Where a real systemd cannot be had, `Unavailable` says why.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HANG = "/opt/anpr/src/tests/helpers/hang_thread.py"  # the tracer, as the container sees it
TREE_VERSION = "2"  # bump when PACKAGES or _prepare_tree change: the cached tree is rebuilt
PACKAGES = ("systemd", "systemd-sysv", "libnss-systemd", "python3")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
Log = Callable[[str], None]


class Unavailable(Exception):
    """A real systemd cannot be had here; the message says exactly why."""


# --------------------------------------------------------------------------- the tree


def tree_path() -> Path:
    return Path(os.environ.get("ANPR_SYSTEMD_TREE") or REPO / ".cache" / "systemd-tree")


def host_release() -> str:
    """The host's Debian codename: the tree is the same release (the same Python)."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError as exc:
        raise Unavailable(f"/etc/os-release: {exc}") from None
    fields = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', text, re.M))
    if fields.get("ID") != "debian" or not fields.get("VERSION_CODENAME"):
        raise Unavailable(f"the host is {fields.get('PRETTY_NAME', 'not Debian')}: the tree "
                          "is made by Debian's debootstrap for the host's own release")
    return fields["VERSION_CODENAME"]


def debian_mirror() -> str:
    """The Debian mirror apt uses here (a deb822 .sources file or a sources.list line)."""
    candidates: list[str] = []
    apt = Path("/etc/apt")
    for path in sorted(apt.glob("sources.list.d/*.sources")):
        candidates += re.findall(r"^URIs:\s*(\S+)", path.read_text(), re.M)
    for path in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        if path.is_file():
            candidates += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", path.read_text(), re.M)
    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    return "http://deb.debian.org/debian"


def _run(argv: list[str], *, timeout: float, check: bool = True,
         **kw: Any) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"{' '.join(argv[:4])} ... took over {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip())[-3000:]
        raise Unavailable(f"{' '.join(argv[:4])} ... exited {done.returncode}: {said}")
    return done


def check_host() -> None:
    """What the host must give before anything is built or booted."""
    if os.geteuid() != 0:
        raise Unavailable(f"debootstrap and systemd-nspawn need root; this runs as uid "
                          f"{os.geteuid()}")
    _need("systemd-nspawn", "nsenter", "setpriv")
    if sys.implementation.name != "cpython":
        raise Unavailable(f"the venv is {sys.implementation.name}, not CPython")


def _need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise Unavailable(f"not installed: {', '.join(missing)} (`make systemd-tools` "
                          "installs debootstrap and systemd-container)")


def build_tree(log: Log = print) -> Path:
    """The cached Debian tree with systemd and python3; made once by debootstrap."""
    tree = tree_path()
    stamp = tree / ".anpr-tree"
    if stamp.is_file() and stamp.read_text().strip() == TREE_VERSION:
        return tree
    check_host()
    tree.parent.mkdir(parents=True, exist_ok=True)
    with open(tree.with_name(tree.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once: one builds, one waits
        if stamp.is_file() and stamp.read_text().strip() == TREE_VERSION:
            return tree
        return _debootstrap(tree, log)


def _debootstrap(tree: Path, log: Log) -> Path:
    _need("debootstrap", "chroot")
    release = host_release()
    mirror = debian_mirror()
    partial = tree.with_name(tree.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(tree, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {release} from {mirror} into {partial} (once; about a minute)")
    started = time.monotonic()
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
          release, str(partial), mirror], timeout=1800)
    _prepare_tree(partial)
    stamp_tmp = partial / ".anpr-tree"
    stamp_tmp.write_text(TREE_VERSION + "\n")
    partial.rename(tree)  # a tree half made is never taken for a cached one
    log(f"tree ready in {time.monotonic() - started:.0f} s: {tree}")
    return tree


def _prepare_tree(tree: Path) -> None:
    # systemd makes a machine id at each boot of a tree without one
    (tree / "etc/machine-id").write_text("")
    # as on any Debian install; the edge finds its collector by name
    (tree / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost\n")
    for mount_point in ("opt/anpr/src", "opt/anpr/host-site-packages", "opt/anpr/models",
                        "run/anpr-setup"):
        (tree / mount_point).mkdir(parents=True, exist_ok=True)
    # The venv is the tree's own (its python3, as `make` would make it on a Debian node);
    # it imports the repository and the packages of the venv running this, bound read-only.
    _run(["chroot", str(tree), "python3", "-m", "venv", "--without-pip", "/opt/anpr/.venv"],
         timeout=300)
    site = next((tree / "opt/anpr/.venv/lib").glob("python3.*/site-packages"))
    (site / "anpr.pth").write_text("/opt/anpr/src\n/opt/anpr/host-site-packages\n")
    for script, module in (("anpr-edge", "edge.cli"), ("anpr-collector", "edge.collector.cli")):
        path = tree / "opt/anpr/.venv/bin" / script
        path.write_text(f"#!/opt/anpr/.venv/bin/python\n"
                        f"# the entry point pip writes from pyproject.toml\n"
                        f"import sys\nfrom {module} import main\nsys.exit(main())\n")
        path.chmod(0o755)
    (tree / "opt/anpr").chmod(0o755)


def tree_python(tree: Path) -> str:
    found = sorted(p.name for p in (tree / "usr/bin").glob("python3.*")
                   if re.fullmatch(r"python3\.\d+", p.name))
    return found[-1] if found else "none"


def host_site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def models_dir() -> Path:
    path = Path(os.environ.get("ANPR_MODELS_DIR") or REPO / "models")
    if not list(path.glob("*.onnx")):
        raise Unavailable(f"no prepared models in {path} (make models)")
    return path


# --------------------------------------------------------------------------- the camera


class MjpegCamera:
    """The synthetic drive-by, looped, as an HTTP MJPEG camera on 127.0.0.1.

    Frames are rendered and encoded once; each client gets them at `fps`, paced by the
    clock as a camera sends them (one `multipart/x-mixed-replace` part a frame).
    """

    def __init__(self, *, fps: float = 10.0, seed: int = 0, vehicles: int = 3) -> None:
        import cv2

        from edge.synthetic.drive_by import SyntheticDriveBy

        clip = SyntheticDriveBy.default(seed, vehicles=vehicles, night=0, fps=fps)
        self.plates = [t.plate for t in clip.truth]
        self.fps = fps
        self.frames = [cv2.imencode(".jpg", clip.render(i), [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
                       .tobytes() for i in range(len(clip))]
        self._stop = threading.Event()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                camera._serve(self.wfile)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cam.mjpg"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _serve(self, out: Any) -> None:
        period = 1.0 / self.fps
        due = time.monotonic()
        index = 0
        while not self._stop.is_set():
            data = self.frames[index % len(self.frames)]
            try:
                out.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(data) + data + b"\r\n")
                out.flush()
            except OSError:
                return  # the client went away
            index += 1
            due += period
            self._stop.wait(max(0.0, due - time.monotonic()))

    def start(self) -> MjpegCamera:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- the container


class Container:
    """A booted tree: `systemd-nspawn --boot`, commands run inside it through nsenter."""

    def __init__(self, tree: Path, binds: dict[str, Path], workdir: Path) -> None:
        self.tree = tree
        self.binds = binds
        self.workdir = workdir
        self.console = workdir / "console.log"
        self.name = f"anpr-test-{os.getpid()}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None

    def boot(self, timeout: float = 120.0) -> None:
        # setpriv --pdeathsig: should this process die, nspawn gets SIGTERM (a poweroff)
        argv = ["setpriv", "--pdeathsig", "TERM", "--", "systemd-nspawn", "--quiet",
                "--boot", "--register=no", "--keep-unit",
                f"--directory={self.tree}", "--volatile=overlay", f"--machine={self.name}",
                "--console=read-only"]
        argv += [f"--bind-ro={src}:{dst}" for dst, src in self.binds.items()]
        # cgroup v2 inside, as on a Debian 12 host (nspawn's default follows this host,
        # whose cgroups are mixed v1/v2)
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        with self.console.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.leader is None:
            if self.proc.poll() is not None:
                raise Unavailable(f"systemd-nspawn exited {self.proc.returncode}: "
                                  f"{self.console_tail()}")
            if time.monotonic() > deadline:
                raise Unavailable(f"systemd-nspawn started no init within {timeout:.0f} s: "
                                  f"{self.console_tail()}")
            self.leader = _child_init(self.proc.pid)
            if self.leader is None:
                time.sleep(0.1)
        # `is-system-running --wait` answers once the boot is over; before the manager
        # listens it fails at once, so it is asked again
        state = ""
        while time.monotonic() < deadline:
            done = self.sh("systemctl", "is-system-running", "--wait", check=False,
                           timeout=max(1.0, deadline - time.monotonic()))
            state = done.stdout.strip()
            if state in ("running", "degraded"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        said = state or "no answer"
        raise Unavailable(f"the container's systemd did not finish booting ({said}): "
                          f"{self.console_tail()}")

    def console_tail(self, chars: int = 2500) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return re.sub(r"\x1b\[[0-9;]*m", "", text)[-chars:].strip() or "(no console output)"

    def sh(self, *argv: str, timeout: float = 60.0, check: bool = True,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the container as its root (all of its namespaces)."""
        assert self.leader is not None
        full = ["nsenter", f"--target={self.leader}", "--all", "--", "env", "-i",
                f"PATH={CONTAINER_PATH}", "LANG=C.UTF-8", "SYSTEMD_COLORS=0",
                "SYSTEMD_PAGER=cat", *argv]
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"in the container: {' '.join(argv)} exited "
                                 f"{done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def popen(self, *argv: str) -> subprocess.Popen[str]:
        assert self.leader is not None
        full = ["nsenter", f"--target={self.leader}", "--all", "--", "env", "-i",
                f"PATH={CONTAINER_PATH}", "LANG=C.UTF-8", *argv]
        return subprocess.Popen(full, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh("systemctl", "show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.sh("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout

    def close(self, timeout: float = 45.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # SIGTERM to nspawn: an orderly poweroff of the container (SIGRTMIN+3 to its init)
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _child_init(nspawn_pid: int) -> int | None:
    """The container's init: a child of nspawn that is PID 1 in its own namespace."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = re.search(r"^PPid:\s*(\d+)", status, re.M)
        nspid = re.search(r"^NSpid:\s*([\d\t ]+)$", status, re.M)
        if ppid and nspid and int(ppid.group(1)) == nspawn_pid:
            if nspid.group(1).split()[-1] == "1":
                return int(entry.name)
    return None


# --------------------------------------------------------------------------- the node


@dataclass
class Node:
    """A collector and one edge, installed and run by the container's systemd."""

    container: Container
    camera: MjpegCamera
    node: str = "lt-test-1"
    watchdog_s: int | None = 10  # a drop-in's WatchdogSec=; None keeps the unit's
    stall_s: float = 5.0
    collector_port: int = field(default_factory=free_port)
    log: Log = print

    @property
    def edge(self) -> str:
        return f"anpr-edge@{self.node}.service"

    collector = "anpr-collector.service"

    def edge_yaml(self) -> str:
        return "\n".join([
            f"node_id: {self.node}",
            f"state_dir: /var/lib/anpr-edge/{self.node}",
            # onnxruntime in the camera's own thread: the thread to hang is the one that
            # runs the models
            "threads: 1",
            "countries: [LT, LV, PL, EE, FI, DE, NL, BG, RO]",
            "analysis_fps: 4",
            "motion: {enabled: false}",
            "link:",
            f"  collector: tcp://localhost:{self.collector_port}",  # a name, as in the field
            "  credentials_dir: /etc/anpr-edge/credentials",  # root's alone: the keys come
            "  heartbeat_s: 2",                              # through LoadCredential
            "health:",
            f"  stall_s: {self.stall_s:g}",
            "cameras:",
            "  - id: cam1",
            f"    source: {self.camera.url}",
            f"    fps: {self.camera.fps:g}",
            "",
        ])

    def collector_yaml(self) -> str:
        return "\n".join([
            f"listen: tcp://127.0.0.1:{self.collector_port}",
            "data_dir: /var/lib/anpr-collector",
            "credentials_dir: /etc/anpr-collector/credentials",
            "key_name: collector",
            "allowed_keys_dir: /etc/anpr-collector/edges",
            "",
        ])

    def install(self) -> None:
        """The README's steps, as root inside the container."""
        setup = self.container.binds["/run/anpr-setup"]
        (setup / f"{self.node}.yaml").write_text(self.edge_yaml())
        (setup / "collector.yaml").write_text(self.collector_yaml())
        dropin = ""
        if self.watchdog_s is not None:
            dropin = (f"install -d /etc/systemd/system/anpr-edge@.service.d\n"
                      f"printf '[Service]\\nWatchdogSec={self.watchdog_s}s\\n' "
                      f"> /etc/systemd/system/anpr-edge@.service.d/test-watchdog.conf\n")
        script = f"""set -eu
install -d -m 0755 /etc/anpr-edge /etc/anpr-collector /etc/anpr-collector/edges
install -d -m 0700 /etc/anpr-edge/credentials /etc/anpr-collector/credentials
install -m 0644 /run/anpr-setup/{self.node}.yaml /etc/anpr-edge/{self.node}.yaml
install -m 0644 /run/anpr-setup/collector.yaml /etc/anpr-collector/collector.yaml
/opt/anpr/.venv/bin/anpr-collector keygen --dir /etc/anpr-collector/credentials collector
/opt/anpr/.venv/bin/anpr-collector keygen --dir /etc/anpr-edge/credentials {self.node}
cp /etc/anpr-edge/credentials/{self.node}.key /etc/anpr-collector/edges/
cp /etc/anpr-collector/credentials/collector.key /etc/anpr-edge/credentials/
cp /opt/anpr/src/systemd/anpr-edge@.service /opt/anpr/src/systemd/anpr-collector.service \
   /etc/systemd/system/
{dropin}systemctl daemon-reload
"""
        self.container.sh("sh", "-c", script, timeout=120)

    def start(self, unit: str, timeout: float = 240.0) -> float:
        """`systemctl start`: for Type=notify it returns once READY=1 came. Seconds taken."""
        started = time.monotonic()
        done = self.container.sh("systemctl", "start", unit, check=False, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"systemctl start {unit} exited {done.returncode}: "
                                 f"{done.stderr.strip()}\n{self.container.journal(unit)[-4000:]}")
        return time.monotonic() - started

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float,
                 every: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout:.0f} s: {what}")
            time.sleep(every)

    # ---- what the test looks at

    def main_pid(self, unit: str) -> int:
        return int(self.container.show(unit, "MainPID")["MainPID"])

    def proc_uid(self, pid: int) -> int:
        status = self.container.sh("cat", f"/proc/{pid}/status").stdout
        return int(re.search(r"^Uid:\s*(\d+)", status, re.M).group(1))  # type: ignore[union-attr]

    def stat(self, path: str) -> dict[str, str]:
        out = self.container.sh("stat", "-c", "%u %g %a %F", path).stdout.split(maxsplit=3)
        return dict(zip(("uid", "gid", "mode", "type"), out, strict=True))

    def environ(self, pid: int) -> dict[str, str]:
        raw = self.container.sh("cat", f"/proc/{pid}/environ").stdout
        return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)

    def sha256(self, path: str) -> str:
        return self.container.sh("sha256sum", path).stdout.split()[0]

    def nodes(self) -> list[dict[str, Any]]:
        done = self.container.sh("/opt/anpr/.venv/bin/anpr-collector", "nodes", "--json",
                                 "--config", "/etc/anpr-collector/collector.yaml", check=False)
        if done.returncode != 0:
            return []
        data = json.loads(done.stdout or "[]")
        return list(data.get("nodes", data) if isinstance(data, dict) else data)

    def reads(self) -> list[str]:
        """The plates the edge has stored in its outbox (read as root, read-only)."""
        db = f"/var/lib/private/anpr-edge/{self.node}/outbox.db"
        code = (f"import json, sqlite3; c = sqlite3.connect('file:{db}?mode=ro', uri=True); "
                "print(json.dumps([r[0] for r in c.execute('SELECT plate FROM reads')]))")
        done = self.container.sh("python3", "-c", code, check=False)
        return json.loads(done.stdout) if done.returncode == 0 else []

    def hang_camera_loop(self, timeout: float = 60.0) -> tuple[subprocess.Popen[str], dict]:
        """Stop the camera thread (ptrace, that thread alone) while it runs the models.

        Returns the tracer, which holds the thread stopped until the process dies, and
        what it said. Killing the tracer lets the thread go on.
        """
        pid = self.main_pid(self.edge)
        tracer = self.container.popen("python3", HANG, str(pid), "onnxruntime",
                                      "--timeout", str(timeout))
        assert tracer.stdout is not None
        line = tracer.stdout.readline()
        if not line:
            tracer.wait(10)
            raise AssertionError(f"the tracer said nothing: {tracer.stderr.read()}")  # type: ignore[union-attr]
        said = json.loads(line)
        if "stopped" not in said:
            raise AssertionError(f"the camera thread was not stopped: {said}")
        return tracer, said


@contextmanager
def booted(log: Log = print) -> Iterator[tuple[Container, MjpegCamera]]:
    """The tree, built if need be, booted, with the camera streaming; all undone after."""
    check_host()
    models = models_dir()
    tree = build_tree(log)
    if tree_python(tree) != f"python{sys.version_info[0]}.{sys.version_info[1]}":
        raise Unavailable(f"the venv runs Python {sys.version_info[0]}.{sys.version_info[1]}"
                          f" but the {host_release()} tree has {tree_python(tree)}: its "
                          "compiled packages cannot be shared")
    binds = {"/opt/anpr/src": REPO, "/opt/anpr/host-site-packages": host_site_packages(),
             "/opt/anpr/models": models}
    camera = MjpegCamera().start()
    with tempfile.TemporaryDirectory(prefix="anpr-systemd-") as tmp:
        work = Path(tmp)
        setup = work / "setup"
        setup.mkdir()
        binds["/run/anpr-setup"] = setup
        container = Container(tree, binds, work)
        try:
            started = time.monotonic()
            container.boot()
            log(f"booted {container.name} in {time.monotonic() - started:.1f} s "
                f"(init is host pid {container.leader})")
            yield container, camera
        finally:
            container.close()
            camera.close()


# --------------------------------------------------------------------------- the CLI


def _demo(watchdog_s: int | None, log: Log = print) -> int:
    """What tests/test_systemd_real.py checks, shown step by step."""
    def lines(unit: str, *needles: str) -> str:
        return "\n    ".join(line for line in container.journal(unit).splitlines()
                             if any(n in line for n in needles))

    with booted(log) as (container, camera):
        node = Node(container, camera, watchdog_s=watchdog_s, log=log)
        node.install()
        for unit in (node.collector, node.edge):
            log(f"{unit}: READY after {node.start(unit):.1f} s: " + str(container.show(
                unit, "ActiveState", "SubState", "StatusText")))
        log(f"edge WatchdogSec={container.show(node.edge, 'WatchdogUSec')['WatchdogUSec']}")
        pid = node.main_pid(node.edge)
        uid = node.proc_uid(pid)
        log(f"edge pid {pid}, dynamic uid {uid}; /var/lib/private/anpr-edge/{node.node}: "
            f"{node.stat(f'/var/lib/private/anpr-edge/{node.node}')}")
        creds = node.environ(pid).get("CREDENTIALS_DIRECTORY", "(none)")
        log(f"CREDENTIALS_DIRECTORY={creds}: {container.sh('ls', creds).stdout.split()}")
        heard = node.wait_for("the edge's heartbeats at the collector", lambda: [
            n for n in node.nodes() if n.get("node") == node.node], 60)
        log(f"the collector hears {node.node} over CURVE: {heard[0].get('verdict')}")
        log(f"plates read: {node.wait_for('a read', node.reads, 90)}")
        tracer, said = node.hang_camera_loop()
        log(f"camera thread stopped (ptrace): {said}")
        try:
            node.wait_for("a watchdog restart", lambda: container.show(
                node.edge, "NRestarts")["NRestarts"] == "1", (watchdog_s or 60) + 60)
        finally:
            tracer.kill()
            tracer.wait(10)
        node.wait_for("READY again", lambda: container.show(
            node.edge, "SubState")["SubState"] == "running", 120)
        log("watchdog:\n    " + lines(node.edge, "hung, so", "atchdog", "SIGABRT", "restart"))
        container.sh("systemctl", "log-level", "debug")
        for unit in (node.edge, node.collector):
            started = time.monotonic()
            container.sh("systemctl", "stop", unit, timeout=60)
            log(f"{unit} stopped in {time.monotonic() - started:.1f} s: " + str(
                container.show(unit, "ActiveState", "Result")) + "\n    " +
                lines(unit, "stopped", "Main process exited", "Deactivated"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["tree", "run"])
    parser.add_argument("--watchdog-sec", type=int, default=10,
                        help="run: WatchdogSec= of a drop-in (default 10; 0 keeps the unit's)")
    args = parser.parse_args(argv)
    try:
        if args.command == "tree":
            print(build_tree())
            return 0
        return _demo(args.watchdog_sec or None)
    except Unavailable as exc:
        print(f"no real systemd here: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())


