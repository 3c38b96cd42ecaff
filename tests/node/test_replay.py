"""Replay through the real pipeline: the JSON contract, bad inputs, and a real video."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from helpers.data import data_dir

from edge.node.config import PipelineConfig
from edge.node.pipeline import VideoPipeline
from edge.node.replay import ReplayStats, replay_events
from edge.node.sources import open_source

EVENT_KEYS = {"text", "formatted", "country", "confidence", "first_seen", "last_seen",
              "frames", "direction"}


def clip_from(video, out_path, seconds: float) -> int:
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    count = 0
    while count < seconds * fps:
        ok, frame = capture.read()
        if not ok:
            break
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
        writer.write(frame)
        count += 1
    capture.release()
    writer.release()
    return count


def test_zero_byte_and_garbage_videos_are_clear_errors(tmp_path, caplog):
    from edge.cli import main

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    for path in (empty, garbage, tmp_path / "absent.mp4"):
        caplog.clear()
        with caplog.at_level("ERROR"):
            assert main(["replay", str(path)]) == 1
        assert str(path.name) in caplog.text


@pytest.mark.models
def test_real_video_gives_one_event_per_vehicle_pass(engines, tmp_path, capsys):
    from edge.cli import main

    clip = tmp_path / "tollbooth.avi"
    assert clip_from(data_dir("video") / "tollbooth-vn-720p.mp4", clip, 6.0) > 50
    assert main(["replay", str(clip)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events, "a toll booth clip with readable plates gave no event"
    for event in events:
        assert EVENT_KEYS <= set(event)
        assert 0 <= event["confidence"] <= 1
        assert 0 <= event["first_seen"] <= event["last_seen"] <= 6.1
        assert event["frames"] >= 1 and len(event["text"]) >= 3
    texts = [e["text"] for e in events]
    assert len(texts) == len(set(texts)), f"duplicate events: {texts}"


@pytest.mark.models
def test_stage_timings_and_motion_gate_on_a_still_scene(engines):
    config = PipelineConfig()
    pipeline = VideoPipeline(engines, config, camera="still")
    source = open_source(data_dir("plates-eu-dev"), fps=10)
    # the same photo over and over is a still scene: after the first look, the gate skips
    frames = []
    for frame in source:
        frames = [frame] * 30
        break
    source.close()
    from dataclasses import replace

    results = [pipeline.process(replace(f, index=i, pts=i / 10)) for i, f in enumerate(frames)]
    processed = [r for r in results if r.processed]
    assert results[0].processed and len(processed) < len(results) / 2
    assert {"gate", "detect_plates", "ocr", "track"} <= set(processed[0].ms)
    events = pipeline.finish()
    assert len(events) <= 1


@pytest.mark.models
def test_replay_stats_count_frames(engines, tmp_path):
    clip = tmp_path / "c.avi"
    n = clip_from(data_dir("video") / "parking-overhead-432p.mp4", clip, 2.0)
    stats = ReplayStats()
    source = open_source(clip)
    list(replay_events(source, VideoPipeline(engines, PipelineConfig()), stats=stats))
    assert stats.frames == n and 0 < stats.analysed <= n and stats.wall_s > 0


@pytest.mark.models
def test_a_clock_that_goes_back_ends_the_passes_in_view_and_analysis_goes_on(engines):
    """A source reopened on its own clock starts again at 0: the pipeline must not wait
    for the new clock to pass the old one (a node was blind for as long as it had run)."""
    from dataclasses import replace

    from edge.synthetic.drive_by import SyntheticDriveBy, compact

    clip = SyntheticDriveBy.default(0, vehicles=1, night=0, fps=10.0)
    frames = list(clip)
    clip.close()
    pipeline = VideoPipeline(engines, PipelineConfig(), camera="reopened")
    half = len(frames) // 2
    before = [pipeline.process(replace(f, pts=10_000 + f.pts)) for f in frames[:half]]
    assert not any(r.events for r in before)  # the car is still in view
    assert pipeline.wants(frames[half].pts)  # the clock went back: due at once
    after = pipeline.process(frames[half])
    assert after.processed
    assert [e.text for e in after.events] == [compact(clip.truth[0].text)]  # its pass ended
