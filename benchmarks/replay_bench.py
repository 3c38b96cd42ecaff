"""The replay suite: recorded videos through VideoPipeline, unpaced and at real-time pace.

Per video: a short untimed warm-up, then `repeat` unpaced runs and `repeat` paced runs,
each with a fresh pipeline and a fresh decoder; every figure is the median over the runs.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2

from benchmarks import plots, results
from benchmarks.datasets import resolve, videos
from benchmarks.engines import engines_for, pipeline_config
from benchmarks.optional import progress
from benchmarks.scoring import repeated_passes
from edge.core.types import Frame, PlateEvent
from edge.node.config import PipelineConfig
from edge.node.engines import Engines
from edge.node.pipeline import FrameResult, VideoPipeline
from edge.node.replay import ReplayStats, replay_events
from edge.node.sources import open_source
from edge.node.sources.base import SourceHealth

DEFAULT_DATA = "video"
MAX_FRAME_MS = 60.0  # the pipeline's target, ms per processed frame at the median


# --------------------------------------------------------------------------- memory


def peak_rss_mb() -> float | None:
    """The process's peak resident memory since start or since the last reset_peak()."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(r"VmHWM:\s+(\d+)\s+kB", status)
    return round(int(found.group(1)) / 1024, 1) if found else None


def reset_peak() -> bool:
    """Start measuring the peak afresh (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- a source wrapper


class WatchedSource:
    """A Source, or any iterable of Frames, that stops at `until_s` and ticks a progress bar.

    replay_events needs iteration and close(); the rest of the Source protocol is here so
    the wrapper can stand wherever a Source does.
    """

    live = False

    def __init__(self, frames: Iterable[Frame], *, source_id: str = "",
                 nominal_fps: float | None = None, until_s: float | None = None,
                 bar: Any = None, close: Callable[[], None] | None = None):
        self.frames = frames
        self.source_id = source_id
        self.nominal_fps = nominal_fps
        self.until_s = until_s
        self.bar = bar
        self._close = close
        self._count = 0

    def __iter__(self) -> Iterator[Frame]:
        for frame in self.frames:
            if self.until_s is not None and frame.pts > self.until_s:
                break
            self._count += 1
            if self.bar is not None:
                self.bar.update(1)
            yield frame

    def close(self) -> None:
        if self._close is not None:
            self._close()
        if self.bar is not None:
            self.bar.close()

    def health(self) -> SourceHealth:
        return SourceHealth("ended", 0.0, self._count, 0, 0, None, time.time())


# --------------------------------------------------------------------------- one replay


def replay_run(engines: Engines, config: PipelineConfig, source: WatchedSource, *,
               realtime: bool) -> tuple[dict[str, Any], list[PlateEvent]]:
    """Replay `source` once through a fresh pipeline; its figures and its events."""
    pipeline = VideoPipeline(engines, config, camera=source.source_id)
    stats = ReplayStats()
    peak_reset = reset_peak()
    searched = {"whole": 0, "windows": 0, "area": 0.0}

    def count_search(result: FrameResult) -> None:
        # how the plate detector searched each processed frame: whole, or only windows
        if result.processed:
            finder = pipeline.reader.finder
            searched["whole" if finder.whole else "windows"] += 1
            searched["area"] += finder.searched_area

    cpu0, wall0 = os.times(), time.perf_counter()
    events = list(replay_events(source, pipeline, realtime=realtime, stats=stats,  # type: ignore[arg-type]
                                on_result=count_search))
    wall = time.perf_counter() - wall0
    cpu1 = os.times()
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    fps = source.nominal_fps
    video_s = stats.frames / fps if fps else stats.video_s
    figures = {
        "frames": stats.frames,
        "video_s": round(video_s, 3),
        "wall_s": round(wall, 3),
        "fps": round(stats.frames / wall, 2) if wall else None,
        "realtime_factor": round(video_s / wall, 3) if wall else None,
        "analysed": stats.analysed,
        "processed": stats.processed,
        "dropped": stats.dropped,
        "events": len(events),
        # processed frames the plate detector searched whole / only in windows, and the
        # mean fraction of the frame's pixels it searched a processed frame
        "searched_whole": searched["whole"],
        "searched_windows": searched["windows"],
        "searched_area": (round(searched["area"] / stats.processed, 3) if stats.processed
                          else None),
        "frame_ms": results.spread(stats.frame_ms),
        "stages": {s: results.spread(v) for s, v in sorted(stats.stage_ms.items())},
        "cpu_percent": round(100 * cpu_s / wall, 1) if wall else None,
        "cpu_ms_per_analysed": round(1000 * cpu_s / stats.analysed, 1) if stats.analysed else None,
        "cpu_ms_per_processed": (round(1000 * cpu_s / stats.processed, 1) if stats.processed
                                 else None),
        # one car in two or more events: events of one plate that overlap in time
        "split_passes": repeated_passes([(e.text, e.first_seen, e.last_seen) for e in events]),
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_scope": "this run" if peak_reset else "process lifetime",
    }
    return figures, events


def decode_run(path: Path) -> dict[str, Any]:
    """The video decoded once through the node's own source (its decoder thread, frames
    to BGR) and nothing else: what the codec costs, apart from the pipeline."""
    src = open_source(path)
    cpu0, wall0 = os.times(), time.perf_counter()
    try:
        frames = sum(1 for _ in src)
    finally:
        src.close()
    wall = time.perf_counter() - wall0
    cpu1 = os.times()
    cpu_ms = 1000 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system))
    return {"frames": frames, "wall_s": round(wall, 3),
            "fps": round(frames / wall, 1) if wall else None,
            "cpu_ms": round(cpu_ms, 1),
            "cpu_ms_per_frame": round(cpu_ms / frames, 2) if frames else None}


def frame_count(path: Path) -> int | None:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    return n or None


def video_source(path: Path, label: str, *, until_s: float | None = None,
                 total: int | None = None, show_progress: bool = True) -> WatchedSource:
    """A fresh decoder on `path`, with a progress bar labelled `label`."""
    src = open_source(path)
    bar = progress(total=total, desc=f"{path.stem}: {label}", unit="frame",
                   enabled=show_progress)
    return WatchedSource(src, source_id=src.source_id, nominal_fps=src.nominal_fps,
                         until_s=until_s, bar=bar, close=src.close)


def bench_video(engines: Engines, config: PipelineConfig, path: Path, *, repeat: int,
                paced: bool, warmup_s: float, show_progress: bool) -> dict[str, Any]:
    """Warm-up, then `repeat` unpaced and (if `paced`) `repeat` paced runs of one video."""
    total = frame_count(path)

    def source(label: str, until_s: float | None = None) -> WatchedSource:
        return video_source(path, label, until_s=until_s, total=total,
                            show_progress=show_progress)

    if warmup_s > 0:
        replay_run(engines, config, source("warm-up", warmup_s), realtime=False)
    runs: dict[str, list[dict[str, Any]]] = {"fast": [], "paced": []}
    events: dict[str, list[list[dict[str, Any]]]] = {"fast": [], "paced": []}
    for mode in ("fast", "paced") if paced else ("fast",):
        for k in range(max(1, repeat)):
            figures, found = replay_run(engines, config, source(f"{mode} {k + 1}/{repeat}"),
                                        realtime=mode == "paced")
            runs[mode].append(figures)
            events[mode].append([e.to_json() for e in found])
    out: dict[str, Any] = {mode: results.median_of(r) for mode, r in runs.items() if r}
    # decoding alone, as many times: the share of each analysed frame's CPU that is the
    # codec's (every frame is decoded, analysed or not), and the rest, the pipeline's
    decoded = results.median_of([decode_run(path) for _ in range(max(1, repeat))])
    analysed = out["fast"]["analysed"]
    if analysed and decoded["cpu_ms"] is not None and out["fast"]["cpu_ms_per_analysed"]:
        decoded["cpu_ms_per_analysed"] = round(decoded["cpu_ms"] / analysed, 1)
        out["fast"]["pipeline_cpu_ms_per_analysed"] = round(
            out["fast"]["cpu_ms_per_analysed"] - decoded["cpu_ms_per_analysed"], 1)
    out["decode_only"] = decoded
    # what the container says it holds: more than was decoded means a file cut short or
    # a header that overstates its length (the dashcam clip's says 420 frames, holds 271)
    out["container_frames"] = total
    out["fast"]["runs"] = len(runs["fast"])
    if paced:
        out["paced"]["runs"] = len(runs["paced"])
        # frames the pipeline would have analysed but did not get to, being late
        out["paced"]["analysed_lost"] = max(0, out["fast"]["analysed"] - out["paced"]["analysed"])
    return {"figures": out, "runs": runs, "events": events}


# --------------------------------------------------------------------------- the suite


def video_targets(name: str, figures: dict[str, Any]) -> list[dict[str, Any]]:
    fast = figures["fast"]
    return [
        results.target(f"{name}.fast.realtime_factor", fast["realtime_factor"], 1.0,
                       what=f"{name}: replay speed / real time"),
        results.target(f"{name}.fast.frame_ms.median", fast["frame_ms"]["median"],
                       MAX_FRAME_MS, above=False,
                       what=f"{name}: ms a processed frame, median"),
        results.target(f"{name}.fast.split_passes", fast["split_passes"], 0, above=False,
                       what=f"{name}: split passes (events of one plate overlapping in time)"),
    ]


def video_markdown(name: str, figures: dict[str, Any], events: list[dict[str, Any]]) -> str:
    fast, paced = figures["fast"], figures.get("paced")
    rows = []
    for label, key in (("frames decoded", "frames"), ("seconds of video", "video_s"),
                       ("wall seconds", "wall_s"), ("frames per second (decoded)", "fps"),
                       ("speed / real time", "realtime_factor"),
                       ("frames analysed", "analysed"), ("past the motion gate", "processed"),
                       ("frames dropped (late)", "dropped"), ("events", "events"),
                       ("searched whole", "searched_whole"),
                       ("searched in windows only", "searched_windows"),
                       ("fraction of a frame searched", "searched_area"),
                       ("split passes (events of one plate overlapping)", "split_passes"),
                       ("CPU, % of one core", "cpu_percent"),
                       ("CPU ms an analysed frame", "cpu_ms_per_analysed"),
                       ("... less decoding (decode-only runs)", "pipeline_cpu_ms_per_analysed"),
                       ("CPU ms a processed frame", "cpu_ms_per_processed"),
                       ("peak memory, MB", "peak_rss_mb")):
        rows.append((label, fast.get(key), paced.get(key) if paced else None))
    ms = fast["frame_ms"]
    pms = paced["frame_ms"] if paced else {}
    rows.append(("ms a processed frame, median / p95 / max",
                 f"{ms['median']} / {ms['p95']} / {ms['max']}",
                 f"{pms.get('median')} / {pms.get('p95')} / {pms.get('max')}" if paced else None))
    if paced:
        rows.append(("analysed frames lost to pacing", None, paced["analysed_lost"]))
    decoded = figures.get("decode_only")
    if decoded:
        rows.append(("decoding alone: frames a second / CPU ms a frame / CPU ms an "
                     "analysed frame", f"{decoded['fps']} / {decoded['cpu_ms_per_frame']} / "
                     f"{decoded.get('cpu_ms_per_analysed')}", None))
    lines = [f"## {name}", ""]
    container = figures.get("container_frames")
    if container and fast["frames"] < container:
        lines += [f"**The file holds {fast['frames']} of the {container} frames its header "
                  "lists** (cut short, or a header that overstates its length): the figures "
                  "cover those.", ""]
    lines += [results.md_table(["figure", "unpaced", "paced"], rows),
             "ms per stage (unpaced; gate and track on every analysed frame, the rest on "
             "processed frames):", "",
             results.md_table(["stage", "median", "p95", "max"],
                              [(s, v["median"], v["p95"], v["max"])
                               for s, v in fast["stages"].items()])]
    if events:
        reads = ", ".join(f"{e['text']} ({e['first_seen']:.1f}-{e['last_seen']:.1f} s)"
                          for e in events)
        lines += [f"Events of the first unpaced run: {reads}", ""]
    return "\n".join(lines)


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    config, threads = pipeline_config(args)
    paths = [v for p in (args.videos or [None]) for v in videos(resolve(p, DEFAULT_DATA))]
    out_dir = results.output_dir(args.out, "replay")
    result = results.start("replay", argv, seed=None, repeat=args.repeat,
                           config=config.model_dump(mode="json"))
    engines = engines_for(config, threads)
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []
    md: list[str] = []
    for path in paths:
        bench = bench_video(engines, config, path, repeat=args.repeat, paced=not args.no_paced,
                            warmup_s=args.warmup_s, show_progress=not args.no_progress)
        figures[path.stem] = bench["figures"]
        details[path.stem] = {"path": str(path), "runs": bench["runs"],
                              "events": bench["events"]["fast"][0]}
        targets += video_targets(path.stem, bench["figures"])
        md.append(video_markdown(path.stem, bench["figures"], bench["events"]["fast"][0]))
    result.update(figures=figures, targets=targets, details=details)
    result["plots"] = [plots.try_plot(
        plots.stage_times, {n: f["fast"]["stages"] for n, f in figures.items()},
        out_dir / "stages.png", "replay: time per stage (unpaced)")]
    md.insert(0, results.targets_markdown(targets) + "\nSpeed figures are the median of "
              f"{args.repeat} runs after a {args.warmup_s:g} s warm-up; the machine's load "
              "average is in the header.\n")
    md.append(f"Plots: {', '.join(result['plots'])}")
    result["output"] = str(results.finish(result, out_dir, "\n".join(md)))
    return result
