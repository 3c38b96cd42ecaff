"""`anpr-edge demo`: a made-up drive-by clip through the real pipeline, scored against its truth."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from edge.core.edit import levenshtein
from edge.core.types import PlateEvent
from edge.node.config import PipelineConfig
from edge.node.engines import Engines
from edge.node.pipeline import VideoPipeline
from edge.node.replay import ReplayStats, replay_events
from edge.synthetic.drive_by import SyntheticDriveBy, TruthPass

SLACK_S = 0.5  # an event may start or end this long outside its pass's frames


def match_event(event: PlateEvent, truth: Sequence[TruthPass], fps: float) -> int | None:
    """The pass an event belongs to: among the passes whose plate was in view while the
    event's track ran, the one it read exactly, else the nearest in text, else the one
    overlapping it most in time. None when no pass was in view."""
    best: tuple[int, float, int] | None = None  # (text distance, -overlap, index)
    chosen = None
    for i, tp in enumerate(truth):
        start, end = tp.first_frame / fps - SLACK_S, tp.last_frame / fps + SLACK_S
        overlap = min(end, event.last_seen) - max(start, event.first_seen)
        if overlap < 0:
            continue
        key = (levenshtein(event.text, tp.plate), -overlap, i)
        if best is None or key < best:
            best, chosen = key, i
    return chosen


@dataclass
class PassResult:
    """What became of one pass of the clip."""

    truth: TruthPass
    events: list[PlateEvent] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.events:
            return "MISSED"
        return "OK" if any(e.text == self.truth.plate for e in self.events) else "WRONG"

    @property
    def shown(self) -> PlateEvent | None:
        """The event to show: the right one if any, else the most confident."""
        right = [e for e in self.events if e.text == self.truth.plate]
        return max(right or self.events, key=lambda e: e.confidence, default=None)


@dataclass
class DemoScore:
    passes: int
    read: int
    wrong: int
    missed: int
    duplicates: int  # events beyond the first for one pass
    unmatched: int  # events while no plate was in view
    day_passes: int
    day_read: int
    night_passes: int
    night_read: int

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def score(results: Sequence[PassResult], unmatched: int) -> DemoScore:
    day = [r for r in results if not r.truth.night]
    night = [r for r in results if r.truth.night]
    return DemoScore(
        passes=len(results),
        read=sum(r.status == "OK" for r in results),
        wrong=sum(r.status == "WRONG" for r in results),
        missed=sum(r.status == "MISSED" for r in results),
        duplicates=sum(max(0, len(r.events) - 1) for r in results),
        unmatched=unmatched,
        day_passes=len(day),
        day_read=sum(r.status == "OK" for r in day),
        night_passes=len(night),
        night_read=sum(r.status == "OK" for r in night),
    )


def table(results: Sequence[PassResult]) -> str:
    """Truth against read, one line a pass, for people."""
    lines = [
        f"{'#':>2}  {'plate':<12} {'country':<7} {'light':<5}  {'read':<12} "
        f"{'conf':>5} {'events':>6}  result"
    ]
    for n, r in enumerate(results, 1):
        shown = r.shown
        read = shown.text if shown else "-"
        conf = f"{shown.confidence:.2f}" if shown else "-"
        light = "night" if r.truth.night else "day"
        lines.append(
            f"{n:>2}  {r.truth.text:<12} {r.truth.country:<7} {light:<5}  {read:<12} "
            f"{conf:>5} {len(r.events):>6}  {r.status}"
        )
    return "\n".join(lines)


def run_demo(
    engines: Engines,
    config: PipelineConfig,
    out: TextIO = sys.stdout,
    seed: int = 0,
    *,
    clip: SyntheticDriveBy | None = None,
) -> int:
    """Replay the default synthetic clip (or `clip`) through the real pipeline: one JSON line
    per event with the pass it matched, a table of truth against read, and a JSON summary.
    Returns 0: the score is shown, not enforced."""
    if clip is None:
        clip = SyntheticDriveBy.default(seed)
    pipeline = VideoPipeline(engines, config, camera="demo")
    results = [PassResult(tp) for tp in clip.truth]
    unmatched = 0
    stats = ReplayStats()
    for event in replay_events(clip, pipeline, stats=stats):
        index = match_event(event, clip.truth, clip.fps)
        if index is None:
            unmatched += 1
        else:
            results[index].events.append(event)
        line = event.to_json()
        line["truth"] = None if index is None else clip.truth[index].plate
        print(json.dumps(line), file=out, flush=True)
    summary = score(results, unmatched)
    print(file=out)
    print(table(results), file=out)
    print(
        f"\nday {summary.day_read}/{summary.day_passes} read, night {summary.night_read}/"
        f"{summary.night_passes}; {summary.duplicates} duplicate and {summary.unmatched} "
        f"unmatched events; {stats.frames} frames ({stats.video_s:.1f} s of video) in "
        f"{stats.wall_s:.1f} s\n",
        file=out,
    )
    print(json.dumps(summary.to_json()), file=out, flush=True)
    return 0
