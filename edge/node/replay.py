"""Replaying a recorded video or image folder through the pipeline, as fast as possible or paced."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from edge.core.types import Frame, PlateEvent
from edge.node.config import PipelineConfig
from edge.node.engines import Engines
from edge.node.output import plate_json
from edge.node.pipeline import FrameResult, VideoPipeline
from edge.node.sources import Source, SourceError, open_source
from edge.node.sources.live import LIVE_BUFFER_S

log = logging.getLogger(__name__)


@dataclass
class ReplayStats:
    frames: int = 0  # decoded
    analysed: int = 0  # handed to the pipeline
    processed: int = 0  # past the motion gate
    dropped: int = 0  # skipped because a paced replay fell behind
    events: int = 0
    wall_s: float = 0.0
    video_s: float = 0.0
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    frame_ms: list[float] = field(default_factory=list)  # whole pipeline, processed frames

    def add(self, result: FrameResult) -> None:
        self.analysed += 1
        if result.processed:
            self.processed += 1
            self.frame_ms.append(sum(result.ms.values()))
        for stage, ms in result.ms.items():
            self.stage_ms.setdefault(stage, []).append(ms)


def paced(frames: Iterator[Frame], stats: ReplayStats,
          clock: Callable[[], float], buffer_s: float = LIVE_BUFFER_S) -> Iterator[Frame]:
    """Frames at the source's own pace, as a live camera's come: a frame is dropped once
    it is more than `buffer_s` old when taken (the live source's buffer, LIVE_BUFFER_S,
    keeps that much); a frame that is early waits."""
    start = clock()
    for frame in frames:
        lag = (clock() - start) - frame.pts
        if lag > buffer_s:
            stats.dropped += 1
            continue
        if lag < 0:
            time.sleep(-lag)
        yield frame


def replay_events(source: Source, pipeline: VideoPipeline, *, realtime: bool = False,
                  stats: ReplayStats | None = None,
                  on_result: Callable[[FrameResult], None] | None = None) -> Iterator[PlateEvent]:
    """Every vehicle-pass event of a recorded source, in the order the vehicles left."""
    stats = stats or ReplayStats()

    def counted() -> Iterator[Frame]:
        for frame in source:
            stats.frames += 1
            stats.video_s = frame.pts
            yield frame

    frames: Iterator[Frame] = counted()
    if realtime:
        frames = paced(frames, stats, time.monotonic)
    started = time.perf_counter()
    try:
        for result in pipeline.run(frames):
            stats.add(result)
            if on_result:
                on_result(result)
            for event in result.events:
                stats.events += 1
                yield event
        for event in pipeline.finish():
            stats.events += 1
            yield event
    finally:
        stats.wall_s = time.perf_counter() - started
        source.close()


def replay(spec: str, engines: Engines, config: PipelineConfig, *, fps: float | None = None,
           realtime: bool = False, reads_out: bool = False, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        source = open_source(spec, fps=fps)
    except SourceError as exc:
        log.error("%s", exc)
        return 1
    pipeline = VideoPipeline(engines, config, camera=source.source_id)
    stats = ReplayStats()

    def show_reads(result: FrameResult) -> None:
        if reads_out and result.reads:
            line = {"frame": result.frame_index, "pts": round(result.pts, 3),
                    "reads": [plate_json(r) for r in result.reads]}
            print(json.dumps(line), file=out, flush=True)

    for event in replay_events(source, pipeline, realtime=realtime, stats=stats,
                               on_result=show_reads):
        print(json.dumps(event.to_json()), file=out, flush=True)
    fps_done = stats.frames / stats.wall_s if stats.wall_s else 0.0
    log.info("replayed %s: %d frames (%.1f s of video) in %.1f s = %.1f fps; analysed %d, "
             "past the motion gate %d, dropped %d; %d vehicle passes",
             source.source_id, stats.frames, stats.video_s, stats.wall_s, fps_done,
             stats.analysed, stats.processed, stats.dropped, stats.events)
    return 0
