"""The demo: matching events to the clip's passes, scoring, and its output, end to end with
stand-in engines that read the truth (no models needed)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import numpy as np

from edge.core.types import Detections, OcrResult, PlateEvent
from edge.node.config import DetectConfig, OcrConfig, PipelineConfig, TrackConfig
from edge.node.engines import Engines
from edge.synthetic.demo import PassResult, match_event, run_demo, score, table
from edge.synthetic.drive_by import Camera, SyntheticDriveBy, TruthPass, compact

FPS = 15.0


def event(text: str, first: float, last: float, confidence: float = 0.9) -> PlateEvent:
    return PlateEvent(
        text=text,
        formatted=text,
        country=None,
        confidence=confidence,
        first_seen=first,
        last_seen=last,
        frames=5,
        direction="approaching",
    )


def truth(text: str, first_s: float, last_s: float, night: bool = False) -> TruthPass:
    return TruthPass(text, "LT", round(first_s * FPS), round(last_s * FPS), night)


PASSES = [truth("ABC 123", 0.0, 1.0), truth("KLM 456", 0.8, 2.0), truth("XYZ 789", 5.0, 6.0, True)]


def test_an_event_matches_the_pass_it_read_among_those_in_view() -> None:
    assert match_event(event("KLM456", 0.9, 1.2), PASSES, FPS) == 1
    assert match_event(event("ABC123", 0.9, 1.2), PASSES, FPS) == 0


def test_a_misread_matches_the_nearest_text_then_the_longest_overlap() -> None:
    assert match_event(event("KLM458", 0.9, 1.2), PASSES, FPS) == 1
    assert match_event(event("QQQ000", 0.1, 0.9), PASSES, FPS) == 0


def test_an_event_with_no_pass_in_view_matches_nothing() -> None:
    assert match_event(event("ABC123", 3.0, 3.5), PASSES, FPS) is None
    assert match_event(event("XYZ789", 4.6, 4.8), PASSES, FPS) == 2  # within the slack


def test_score_counts_read_wrong_missed_and_duplicates() -> None:
    results = [
        PassResult(PASSES[0], [event("ABC123", 0, 1), event("ABC123", 1, 1.2)]),
        PassResult(PASSES[1], [event("KLM458", 1, 2)]),
        PassResult(PASSES[2], []),
    ]
    assert [r.status for r in results] == ["OK", "WRONG", "MISSED"]
    s = score(results, unmatched=1)
    assert (s.passes, s.read, s.wrong, s.missed, s.duplicates, s.unmatched) == (3, 1, 1, 1, 1, 1)
    assert (s.day_passes, s.day_read, s.night_passes, s.night_read) == (2, 1, 1, 0)
    lines = table(results).splitlines()
    assert len(lines) == 4
    assert "ABC 123" in lines[1] and lines[1].endswith("OK")
    assert "KLM458" in lines[2] and lines[2].endswith("WRONG")
    assert "night" in lines[3] and lines[3].endswith("MISSED")


def test_the_right_event_is_shown_even_when_a_wrong_one_is_surer() -> None:
    r = PassResult(PASSES[0], [event("ABC128", 0, 1, 0.99), event("ABC123", 0, 1, 0.6)])
    assert r.shown is not None and r.shown.text == "ABC123" and r.status == "OK"


class RecordingClip(SyntheticDriveBy):
    """Remembers which frame it rendered last, for the stand-in detector."""

    last_index = -1

    def render(self, index: int) -> np.ndarray:
        self.last_index = index
        return super().render(index)


class Oracle:
    """Stand-in backends: plates where the clip drew them, read as written."""

    def __init__(self, clip: RecordingClip):
        self.clip = clip
        self.texts: list[str] = []

    def engines(self) -> Engines:
        return Engines(plates=self.plates, ocr=self.ocr)

    def plates(self, image: np.ndarray, *, size: int | None = None,
               confidence: float | None = None) -> Detections:
        index = self.clip.last_index
        seen = [k for k, t in enumerate(self.clip.truth) if t.first_frame <= index <= t.last_frame]
        self.texts = [self.clip.truth[k].text for k in seen]
        boxes = [self.clip.plate_box(k, index) for k in seen]
        # falling confidences keep the boxes, and so the crops, in this order
        return Detections(
            np.array(boxes, np.float32).reshape(-1, 4),
            np.linspace(0.9, 0.8, len(seen)),
            np.zeros(len(seen)),
        )

    def ocr(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        assert len(crops) == len(self.texts)
        return [OcrResult(t, 0.98, (0.98,) * len(t)) for t in self.texts]


def test_run_demo_prints_events_table_and_summary() -> None:
    clip = RecordingClip(
        [("ABC 123", "LT", False), ("WX 12345", "PL", False), ("CA 1234 AB", "BG", True)],
        camera=Camera(640, 360, focal=1100.0),
    )
    # the oracle reads every crop it is given: every plate, every frame, one crop; it
    # finds plates on whole frames only (it knows where the clip drew them), not windows
    config = PipelineConfig(detect=DetectConfig(min_plate_height=0, full_every=1),
                            track=TrackConfig(settle_after=0), ocr=OcrConfig(video_crops=[]))
    out = io.StringIO()
    assert run_demo(Oracle(clip).engines(), config, out, clip=clip) == 0
    lines = out.getvalue().splitlines()
    events = [json.loads(line) for line in lines if line.startswith('{"text"')]
    assert sorted(e["text"] for e in events) == sorted(compact(t.text) for t in clip.truth)
    assert all(e["truth"] == e["text"] and e["camera"] == "demo" for e in events)
    assert [e["night"] for e in events] == [False, False, True]
    summary = json.loads(lines[-1])
    assert summary["passes"] == summary["read"] == 3
    assert summary["wrong"] == summary["missed"] == summary["duplicates"] == 0
    assert (summary["day_read"], summary["night_read"]) == (2, 1)
    table_rows = [line for line in lines if line.rstrip().endswith(("OK", "WRONG", "MISSED"))]
    assert len(table_rows) == 3 and all(row.endswith("OK") for row in table_rows)
