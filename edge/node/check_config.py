"""`anpr-edge check-config FILE`: is this node ready to run? Config, models, keys, collector,
cameras.

Each check prints one line (ok, FAIL or skip and why); the cameras get a line each
after theirs. The exit status is that of the first check to fail, in this order, so a
script or an installer can tell them apart: 0 all well, 2 the config is invalid (the
message names the key), 3 a model is missing or fails its hash, 4 a key is missing or
unreadable, 5 the collector did not answer (or refused this node's key), 6 a camera
did not give a picture (its line says why: address, password, path). `--offline`
tries neither the collector nor network cameras.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import zmq
from zmq.utils.monitor import recv_monitor_message

from edge.core import keys
from edge.core.types import Frame
from edge.node.config import CameraConfig, ConfigError, EdgeConfig, config_hash, load_config
from edge.node.engines import vehicle_model
from edge.node.models import ModelError, load_manifest
from edge.node.sources import Source, SourceError, open_source, scrub_url
from edge.node.sources.credentials import camera_url, readable_by_others
from edge.node.sources.rtsp_probe import probe

EXIT_OK, EXIT_CONFIG, EXIT_MODELS, EXIT_KEYS, EXIT_COLLECTOR, EXIT_CAMERAS = 0, 2, 3, 4, 5, 6

_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
           | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


@dataclass
class Outcome:
    name: str
    code: int  # the exit status when it fails
    ok: bool | None = None  # None: skipped
    detail: str = ""


def check_config(path: Path, *, offline: bool = False, timeout_s: float = 5.0,
                 out: TextIO) -> int:
    """Run the checks on the config at `path`, print one line each, return the exit status."""
    results: list[Outcome] = []

    def report(result: Outcome) -> Outcome:
        word = {True: "ok", False: "FAIL", None: "skip"}[result.ok]
        print(f"{result.name:<10} {word:<4}  {result.detail}", file=out, flush=True)
        results.append(result)
        return result

    try:
        config = load_config(path)
    except ConfigError as exc:
        report(Outcome("config", EXIT_CONFIG, False, str(exc)))
        for name, code in (("models", EXIT_MODELS), ("keys", EXIT_KEYS),
                           ("collector", EXIT_COLLECTOR), ("cameras", EXIT_CAMERAS)):
            report(Outcome(name, code, None, "the config must be valid first"))
        return EXIT_CONFIG
    cameras = ", ".join(c.id for c in config.cameras) or "none"
    report(Outcome("config", EXIT_CONFIG, True, f"{path}: node {config.node_id}, cameras "
                   f"{cameras}, hash {config_hash(config)}"))
    for warning in _local_sources(config) + _exposed_secrets(path, config):
        print(f"{'':<10} warn  {warning}", file=out)
    report(check_models(config))
    keypair = report(check_keys(config))
    if offline:
        report(Outcome("collector", EXIT_COLLECTOR, None, "--offline"))
    elif keypair.ok is None:
        report(Outcome("collector", EXIT_COLLECTOR, None, "none configured: hits stay here"))
    elif not keypair.ok:
        report(Outcome("collector", EXIT_COLLECTOR, None, "no keys to talk to it with"))
    else:
        report(check_collector(config, timeout_s))
    cameras_checked = [check_camera(config, camera, offline=offline, timeout_s=timeout_s)
                       for camera in config.cameras]
    if not cameras_checked:
        report(Outcome("cameras", EXIT_CAMERAS, None, "none configured"))
    else:
        bad = [c for c in cameras_checked if c.ok is False]
        ok = None if all(c.ok is None for c in cameras_checked) else not bad
        report(Outcome("cameras", EXIT_CAMERAS, ok,
                       f"{len(cameras_checked) - len(bad)} of {len(cameras_checked)} "
                       "gave a picture" if ok is not None else "--offline"))
        for camera in cameras_checked:
            word = {True: "ok", False: "FAIL", None: "skip"}[camera.ok]
            print(f"{'':<10} {word:<4}  {camera.name}: {camera.detail}", file=out, flush=True)
    failed = [r.code for r in results if r.ok is False]
    return failed[0] if failed else EXIT_OK


def check_models(config: EdgeConfig) -> Outcome:
    """Every model the cameras need (the plate detector and recogniser they are set to,
    and the vehicle detector where they look for or describe vehicles) is present and
    matches its recorded hash."""
    names = [config.detect.model, config.ocr.model]
    for camera in config.cameras:
        assert camera.pipeline is not None
        names += [camera.pipeline.detect.model, camera.pipeline.ocr.model]
        if camera.pipeline.needs_vehicles():
            names.append("vehicles")
    try:
        manifest = load_manifest(config.models_dir)
        if "vehicles" in names:
            names.append(vehicle_model(manifest))  # the one the cameras load where prepared
        names = list(dict.fromkeys(names))
        for name in names:
            manifest.path(name)  # checks the sha256
            manifest.dictionary_path(name)
    except ModelError as exc:
        return Outcome("models", EXIT_MODELS, False, str(exc))
    versions = manifest.versions()
    return Outcome("models", EXIT_MODELS, True, ", ".join(
        f"{n} {versions.get(n, '?')}" for n in names) + f" in {manifest.directory}")


def _credentials(config: EdgeConfig) -> tuple[Path, str]:
    return keys.credentials_dir(config.link.credentials_dir), (config.link.node_key
                                                               or config.node_id)


def check_keys(config: EdgeConfig) -> Outcome:
    """The node's key pair and the collector's public key are readable CURVE keys."""
    if not (config.link.collector or config.watchlists.collector):
        return Outcome("keys", EXIT_KEYS, None, "no collector configured: none needed")
    try:
        creds, name = _credentials(config)
        keys.load_keypair(creds, name)
        keys.load_public_key(creds / f"{config.link.collector_key}.key")
    except (ValueError, OSError) as exc:  # KeyFileError is a ValueError
        return Outcome("keys", EXIT_KEYS, False, str(exc))
    return Outcome("keys", EXIT_KEYS, True, f"{name}.key_secret and "
                   f"{config.link.collector_key}.key in {creds}")


def check_collector(config: EdgeConfig, timeout_s: float) -> Outcome:
    """The collector's endpoints complete a CURVE handshake with this node's key."""
    creds, name = _credentials(config)
    public, secret = keys.load_keypair(creds, name)
    server = keys.load_public_key(creds / f"{config.link.collector_key}.key")
    endpoints = [e for e in (config.link.collector, config.watchlists.collector) if e]
    answered = []
    for endpoint in endpoints:
        problem, ms = handshake(endpoint, public, secret, server, timeout_s, node=name)
        if problem is not None:
            return Outcome("collector", EXIT_COLLECTOR, False, f"{endpoint}: {problem}")
        answered.append(f"{endpoint} in {ms:.0f} ms")
    return Outcome("collector", EXIT_COLLECTOR, True, "answered: " + ", ".join(answered))


def handshake(endpoint: str, public: bytes, secret: bytes, server: bytes, timeout_s: float,
              *, node: str = "this node",
              clock: Callable[[], float] = time.monotonic) -> tuple[str | None, float]:
    """Connect to `endpoint` as a CURVE client; (None, ms) once the handshake succeeds,
    else (why, ms). A refused key is told apart from silence."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    monitor = None
    started = clock()
    try:
        keys.make_curve_client(sock, public, secret, server)
        monitor = sock.get_monitor_socket(_EVENTS)
        sock.connect(endpoint)
        connected = False
        deadline = started + timeout_s
        while (left := deadline - clock()) > 0:
            if not monitor.poll(int(left * 1000) + 1):
                continue
            event = recv_monitor_message(monitor)["event"]
            ms = (clock() - started) * 1000
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return None, ms
            if event == zmq.EVENT_CONNECTED:
                connected = True
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                return f"refused this node's key; is {node}.key on its allow-list?", ms
            else:
                return "the CURVE handshake failed; is collector.key the collector's?", ms
        ms = (clock() - started) * 1000
        if connected:
            return (f"connected, but no CURVE handshake within {timeout_s:g} s; is "
                    "collector.key the collector's?"), ms
        return f"no answer within {timeout_s:g} s", ms
    except zmq.ZMQError as exc:
        return f"cannot connect: {exc}", (clock() - started) * 1000
    finally:
        if monitor is not None:
            sock.disable_monitor()
            monitor.close(linger=0)
        sock.close(linger=0)
        ctx.term()


def check_camera(config: EdgeConfig, camera: CameraConfig, *, offline: bool,
                 timeout_s: float) -> Outcome:
    """Open the camera as the node would and take one picture from it."""
    name = f"camera {camera.id}"
    spec = camera.source.strip()
    network = "://" in spec
    if offline and network:
        return Outcome(name, EXIT_CAMERAS, None, "network camera, --offline")
    try:
        url = camera_url(spec, camera.credentials, config.link.credentials_dir)
    except SourceError as exc:
        return Outcome(name, EXIT_CAMERAS, False, scrub_url(str(exc)))
    found = probe(url, timeout=timeout_s) if network else None
    if found is not None and not found.ok:
        return Outcome(name, EXIT_CAMERAS, False, found.reason)
    started = time.monotonic()
    try:
        # one attempt: the back-off outlasts the check
        once = {"open_timeout": timeout_s, "backoff_initial": 3600.0, "backoff_max": 3600.0}
        live = network or spec.lower().startswith(("usb:", "/dev/video", "/dev/v4l/"))
        source = open_source(url, source_id=camera.id, fps=camera.fps, **(once if live else {}))
    except (SourceError, OSError, ValueError) as exc:
        return Outcome(name, EXIT_CAMERAS, False, scrub_url(str(exc)))
    try:
        frame = _first_frame(source, timeout_s + 1.0)
        health = source.health()
    finally:
        source.close()
    if frame is None:
        why = health.last_error or f"no picture within {timeout_s + 1.0:g} s"
        return Outcome(name, EXIT_CAMERAS, False, scrub_url(why))
    h, w = frame.image.shape[:2]
    claimed = f", announces {source.nominal_fps:g} fps" if source.nominal_fps else ""
    return Outcome(name, EXIT_CAMERAS, True, f"{w}x{h} picture in "
                   f"{(time.monotonic() - started) * 1000:.0f} ms{claimed}")


def _first_frame(source: Source, timeout_s: float) -> Frame | None:
    read = getattr(source, "read", None)
    if not (source.live and callable(read)):
        return next(iter(source), None)
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        frame: Frame | None = read(timeout=min(0.1, left))
        if frame is not None:
            return frame
        if source.health().state in ("dead", "frozen", "black"):
            return None  # it said why; the back-off outlasts the check
    return None


def _local_sources(config: EdgeConfig) -> list[str]:
    """Files and devices the cameras name that are not there now (warnings: a USB camera
    may be plugged in later, and the node retries)."""
    found = []
    for camera in config.cameras:
        spec = camera.source.strip()
        if "://" in spec or spec.lower().startswith("usb:"):
            continue
        if not Path(spec).exists():
            found.append(f"camera {camera.id}: {spec} is not there now")
    return found


def _exposed_secrets(path: Path, config: EdgeConfig) -> list[str]:
    """Camera passwords where others can read them."""
    found = []
    inline = [c.id for c in config.cameras if _has_password(c.source)]
    if inline:
        where = " (and anyone on this machine may read the file)" \
            if readable_by_others(path) else ""
        found.append(f"camera(s) {', '.join(inline)}: a password in the URL{where}; put "
                     "'user:password' in a credentials file and name it with credentials:")
    for camera in config.cameras:
        if camera.credentials is None:
            continue
        try:
            creds = keys.credentials_dir(config.link.credentials_dir)
        except ValueError:
            continue  # the camera's own check says so
        if readable_by_others(creds / camera.credentials):
            found.append(f"camera {camera.id}: {creds / camera.credentials} is readable by "
                         "anyone on this machine (chmod 600)")
    return found


def _has_password(source: str) -> bool:
    return "://" in source and scrub_url(source) != source
