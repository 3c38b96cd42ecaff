"""The `anpr-edge` command line."""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys
import threading
from pathlib import Path

import cv2

from edge.core.keys import KeyFileError
from edge.core.logs import setup_logging
from edge.core.notify import Notifier, watchdog_period
from edge.node import models
from edge.node.check_config import __doc__ as check_doc
from edge.node.check_config import check_config
from edge.node.config import ConfigError, EdgeConfig, PipelineConfig, load_config
from edge.node.engines import Engines
from edge.node.health import LoopWatch
from edge.node.native_log import route_native_stderr
from edge.node.output import read_json
from edge.node.pipeline import StillReader
from edge.node.replay import replay
from edge.node.service import EdgeService
from edge.node.timing import StageTimer
from edge.synthetic.demo import run_demo

log = logging.getLogger("edge")


def _pipeline_config(args: argparse.Namespace) -> tuple[EdgeConfig, PipelineConfig]:
    config = load_config(args.config) if args.config else EdgeConfig()
    pipeline = config.global_pipeline()
    if getattr(args, "mode", None):
        pipeline.detect.mode = args.mode
    if getattr(args, "tiles", None) is not None:
        pipeline.detect.tiles = args.tiles
    if getattr(args, "countries", None):
        pipeline.countries = [c.strip().upper() for c in args.countries.split(",") if c.strip()]
    return config, pipeline


def _engines(config: EdgeConfig, pipeline: PipelineConfig, *, video: bool = True):  # noqa: ANN202

    manifest = models.load_manifest(config.models_dir)
    return Engines.load(manifest, ocr_model=pipeline.ocr.model, plate_model=pipeline.detect.model,
                        vehicles=pipeline.needs_vehicles(video=video),
                        threads=config.threads or None)


def _read(args: argparse.Namespace) -> int:


    config, pipeline = _pipeline_config(args)
    reader = StillReader(_engines(config, pipeline, video=False), pipeline)
    failures = 0
    for path in args.images:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            log.error("cannot read image %s: missing, unreadable or not an image", path)
            print(json.dumps({"image": path, "error": "unreadable image", "plates": []}),
                  flush=True)
            failures += 1
            continue
        timer = StageTimer()
        reads = reader.read(image, timer)
        print(json.dumps(read_json(path, reads, timer.ms)), flush=True)
    return 1 if failures == len(args.images) else 0


def _replay(args: argparse.Namespace) -> int:

    config, pipeline = _pipeline_config(args)
    return replay(args.source, _engines(config, pipeline), pipeline, fps=args.fps,
                  realtime=args.realtime, reads_out=args.reads)


def _prepare_models(args: argparse.Namespace) -> int:
    try:
        done = models.prepare(args.names or None, include_optional=args.all, force=args.force)
    except models.ModelError as exc:
        logging.getLogger("edge").error("%s", exc)
        return 1
    for name, path in done.items():
        print(f"{name}: {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:

    config, pipeline = _pipeline_config(args)
    return run_demo(_engines(config, pipeline), pipeline, sys.stdout, seed=args.seed)


def _run(args: argparse.Namespace) -> int:


    # systemd's watchdog kills a hung node with SIGABRT: every thread's stack goes to the log
    faulthandler.enable()
    notifier = Notifier.from_env()
    config = load_config(args.config)
    if not config.cameras:
        raise ConfigError(args.config, None, "no cameras configured")
    stopping = threading.Event()
    services: list[EdgeService] = []

    def stop(signum: int, _frame: object) -> None:
        if stopping.is_set():
            log.info("signal %s: already stopping", signal.Signals(signum).name)
            return
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stopping.set()
        for service in services:
            service.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    notifier.status("loading models")
    service = EdgeService(config, events_out=sys.stdout if args.events == "stdout" else None)
    services.append(service)
    failed = False
    try:
        if stopping.is_set():
            return 0
        service.start()
        watch = LoopWatch(notifier, service.loops, period_s=watchdog_period(),
                          stall_s=config.health.stall_s, faults=service.faults,
                          status=service.status_line)
        notifier.ready(service.status_line())
        watch.start()
        try:
            failed = service.wait()
        finally:
            watch.stop()  # no ping may follow STOPPING
    finally:
        notifier.stopping("stopping: finishing the passes in flight")
        service.stop(timeout=args.stop_timeout)
        notifier.close()
    return 1 if failed else 0


def _check_config(args: argparse.Namespace) -> int:

    return check_config(args.file, offline=args.offline, timeout_s=args.timeout, out=sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anpr-edge", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare-models", help="fetch and check the model files (offline after)")
    p.add_argument("names", nargs="*", help="models to prepare (default: the default set)")
    p.add_argument("--all", action="store_true", help="also the optional comparison models")
    p.add_argument("--force", action="store_true", help="prepare again even if present")
    p.set_defaults(func=_prepare_models)

    def pipeline_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="edge YAML config (pipeline settings)")
        p.add_argument("--mode", choices=["full", "vehicles", "both"],
                       help="where plates are searched (overrides the config)")
        p.add_argument("--tiles", type=int, help="extra square tiles for small plates")
        p.add_argument("--countries", help="expected countries, e.g. LT,LV,PL (a prior)")

    p = sub.add_parser("read", help="print the plates in photos, one JSON line per image")
    p.add_argument("images", nargs="+")
    pipeline_options(p)
    p.set_defaults(func=_read)

    p = sub.add_parser("replay", help="replay a video or image folder, one JSON line per "
                       "vehicle pass")
    p.add_argument("source", help="video file or folder of images")
    p.add_argument("--fps", type=float, help="frame rate of an image folder (default 10)")
    p.add_argument("--realtime", action="store_true",
                   help="pace the replay at the source's frame rate, dropping frames when behind")
    p.add_argument("--reads", action="store_true", help="also print every frame's reads")
    pipeline_options(p)
    p.set_defaults(func=_replay)

    p = sub.add_parser("run", help="run the cameras a config names (the unattended node)")
    p.add_argument("--config", type=Path, required=True, help="edge YAML config")
    p.add_argument("--events", choices=["stdout", "none"], default="stdout",
                   help="one JSON line per pass on stdout, or none (under systemd: the "
                   "journal would keep every plate read past the store's retention)")
    p.add_argument("--stop-timeout", type=float, default=20.0,
                   help="seconds to finish and flush after SIGTERM (below the unit's "
                   "TimeoutStopSec)")
    p.set_defaults(func=_run)


    p = sub.add_parser("check-config", help="check a node's config, models, keys and collector",
                       description=check_doc,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="edge YAML config")
    p.add_argument("--offline", action="store_true",
                   help="try neither the collector nor network cameras")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for the collector's handshake and each camera")
    p.set_defaults(func=_check_config)

    p = sub.add_parser("demo", help="make a drive-by clip in code (day and night), replay it "
                       "through the real pipeline and show what was read against what was there")
    p.add_argument("--seed", type=int, default=0, help="which made-up clip")
    pipeline_options(p)
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("run", "check-config") and argv is None:
        # a process of its own (not a caller's, such as a test's): FFmpeg's and OpenCV's
        # lines are logged with time, level and camera, not printed bare
        route_native_stderr()
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, models.ModelError, KeyFileError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
