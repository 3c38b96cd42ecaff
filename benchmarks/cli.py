"""`python -m benchmarks SUITE ...`: one entry point for every benchmark, and `compare`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.datasets import DatasetError
from benchmarks.engines import add_pipeline_options

EXTERNAL = ("watchlist", "link", "exchange", "search", "search-node", "alert-latency")


def _common(p: argparse.ArgumentParser, *, repeat: int | None = 3) -> None:
    p.add_argument("--out", help="output folder (default: bench-results/<suite>-<timestamp>)")
    if repeat is not None:
        p.add_argument("--repeat", type=int, default=repeat,
                       help=f"timed runs after the warm-up; speed figures are their median "
                       f"(default {repeat})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__,
        epilog="Every suite writes result.json and summary.md into its output folder.")
    parser.add_argument("-v", "--verbose", action="store_true", help="the pipeline's log too")
    sub = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")

    p = sub.add_parser("replay", help="recorded videos through the pipeline, as fast as "
                       "possible and at real-time pace")
    p.add_argument("videos", nargs="*", help="video files or folders (default: "
                   "../shared/data/video)")
    p.add_argument("--no-paced", action="store_true", help="skip the real-time-paced replays")
    p.add_argument("--warmup-s", type=float, default=2.0,
                   help="seconds of each video replayed untimed first (default 2)")
    _common(p)
    add_pipeline_options(p)

    p = sub.add_parser("stills", help="labelled photos: detection and reading accuracy")
    p.add_argument("data", nargs="*", help="labelled folders, openalpr .txt or Pascal VOC "
                   ".xml (default: ../shared/data/plates-eu-dev)")
    p.add_argument("--worst", type=int, default=12, help="examples on the image sheet")
    _common(p)
    add_pipeline_options(p)

    p = sub.add_parser("drive-by", help="a labelled video built from labelled photos, "
                       "scored per vehicle")
    p.add_argument("data", nargs="?", help="labelled folder with plate text (default: "
                   "../shared/data/plates-eu-dev)")
    p.add_argument("--variants", default="day,night",
                   help="day, night, glare (night with headlight glare), comma-separated "
                   "(default day,night)")
    p.add_argument("--frames", type=int, default=20, help="frames per vehicle (default 20)")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of the built video "
                   "(default 10)")
    p.add_argument("--gap-s", "--gaps", default="1",
                   help="empty road between two passes, seconds; several, comma-separated "
                   "(0.2,0.5,1), run each variant at each (default 1)")
    p.add_argument("--side-by-side", action="store_true",
                   help="two cars in one frame: photos in pairs, left and right lane")
    p.add_argument("--size", help="render frames at 720p, 1080p or WIDTHxHEIGHT (default: "
                   "each photo's own size; 720p with --realtime)")
    p.add_argument("--realtime", action="store_true",
                   help="write the clip as an mp4 and replay it at its own frame rate, late "
                   "frames dropped as `replay`'s paced runs do; reports analysed frames lost")
    p.add_argument("--limit", type=int, help="use only the first N photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worst", type=int, default=12, help="failed vehicles on the image sheet")
    p.add_argument("--save-video", action="store_true", help="also write each variant as "
                   "an MP4 (frames letterboxed to one size) for a person to watch")
    _common(p, repeat=None)
    add_pipeline_options(p)

    p = sub.add_parser("backends", help="stills and replay with each detector and OCR "
                       "backend, side by side")
    p.add_argument("--data", help="labelled folder (default: ../shared/data/plates-eu-dev)")
    p.add_argument("--video", action="append", help="video to replay (repeatable; default: "
                   "the first video in ../shared/data/video)")
    p.add_argument("--no-replay", action="store_true", help="stills only")
    p.add_argument("--ocr", help="comma-separated OCR backends (default: every PP-OCR model "
                   "in the manifest, and easyocr)")
    p.add_argument("--detectors", default="onnxruntime,ultralytics",
                   help="comma-separated detector backends (default: onnxruntime,ultralytics)")
    _common(p)
    add_pipeline_options(p)

    p = sub.add_parser("search-load", help="one node's pipeline replaying a clip while "
                       "signed search queries arrive: the camera's cost of the search")
    p.add_argument("video", nargs="?", help="video file (default: "
                   "../shared/data/video/tollbooth-vn-720p.mp4)")
    p.add_argument("--reads", type=int, default=86_400,
                   help="reads in the node's outbox, one a second (default 86400: 24 h)")
    p.add_argument("--interval-s", type=float, default=2.0,
                   help="one query every this many seconds from a run's start; 0: none "
                   "(default 2)")
    p.add_argument("--burst", type=int, default=10,
                   help="queries sent at once at --burst-at-s (default 10)")
    p.add_argument("--burst-at-s", type=float, default=1.0, help="default 1")
    p.add_argument("--modes", default="exact,wildcard,fuzzy",
                   help="query modes, taken in turn (default exact,wildcard,fuzzy)")
    p.add_argument("--seconds", type=float, help="replay only the first S seconds of the video")
    p.add_argument("--no-paced", action="store_true", help="skip the real-time-paced runs")
    p.add_argument("--warmup-s", type=float, default=2.0,
                   help="seconds of video replayed untimed first, queries answered (default 2)")
    p.add_argument("--seed", type=int, default=14)
    _common(p, repeat=2)
    add_pipeline_options(p)

    for name, module in (("watchlist", "benchmarks.watchlist_bench"),
                         ("link", "benchmarks.link_bench"),
                         ("exchange", "benchmarks.exchange_bench"),
                         ("search", "benchmarks.search_bench"),
                         ("search-node", "benchmarks.search_node_bench"),
                         ("alert-latency", "benchmarks.alert_latency")):
        p = sub.add_parser(name, help=f"run `python -m {module}` and keep its result",
                           usage=f"python -m benchmarks {name} [--out OUT] [--timeout S] "
                           f"[--] [{module} arguments ...]",
                           description=f"Runs `python -m {module} ARGS...` and records the "
                           "JSON object on its last line of output. Arguments this command "
                           "does not know (or all after --) go to the module.")
        p.add_argument("--timeout", type=float, default=1800.0, help="seconds (default 1800)")
        _common(p, repeat=None)
        p.set_defaults(module=module)

    p = sub.add_parser("compare", help="ratio B/A of every figure of two result.json files")
    p.add_argument("a", help="result.json, the baseline")
    p.add_argument("b", help="result.json to compare with it")
    p.add_argument("--match", help="only figures whose name matches this regular expression")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    own, passed = argv, []
    suite = next((a for a in argv if not a.startswith("-")), None)
    if suite in EXTERNAL and "--" in argv:
        cut = argv.index("--")
        own, passed = argv[:cut], argv[cut + 1:]
    args, unknown = parser.parse_known_args(own)
    if unknown and args.suite not in EXTERNAL:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.args = [*unknown, *passed]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from edge.node.config import ConfigError
    from edge.node.models import ModelError
    from edge.node.sources import SourceError

    try:
        if args.suite == "compare":
            from benchmarks.results import print_comparison

            return print_comparison(args.a, args.b, match=args.match)
        result = _suite(args.suite).run(args, argv)
    except (DatasetError, ConfigError, ModelError, SourceError, ValueError) as exc:
        if args.verbose:
            raise
        print(f"benchmarks {args.suite}: {exc}", file=sys.stderr)
        return 2
    output = Path(result["output"])
    print((output.parent / "summary.md").read_text(encoding="utf-8"))
    print(output)
    return 0


def _suite(name: str):  # noqa: ANN202 - a module
    if name == "replay":
        from benchmarks import replay_bench as module
    elif name == "stills":
        from benchmarks import stills as module
    elif name == "drive-by":
        from benchmarks import driveby as module
    elif name == "backends":
        from benchmarks import backends as module
    elif name == "search-load":
        from benchmarks import search_load_bench as module
    else:
        from benchmarks import external as module
    return module
