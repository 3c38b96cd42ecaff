"""A pass's best views are read again at its end with the still path's crops."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.core.types import Detections, Frame, OcrResult, PlateRead, PlateText
from edge.node.config import (
    DetectConfig,
    MotionConfig,
    NightConfig,
    OcrConfig,
    PipelineConfig,
    TrackConfig,
)
from edge.node.engines import Engines
from edge.node.pipeline import VideoPipeline
from edge.node.read import CropGeometry, PlateReader, cut_view, view_score
from edge.node.track import BEST_VIEWS, Track

BOX = (200.0, 150.0, 400.0, 200.0)  # 200 x 50: one line; the main crop is 240 wide


class Camera:
    """Stand-in backends: one plate box in every frame; the recogniser reads the crops as
    wide as the main one (a band and a frame in view) badly, narrower ones well."""

    def __init__(self, main: OcrResult, narrow: OcrResult):
        self.main, self.narrow = main, narrow
        self.batches: list[list[int]] = []  # crop widths, per recogniser call

    def engines(self) -> Engines:
        return Engines(plates=self.plates, ocr=self.ocr)

    def plates(self, image: np.ndarray, *, size: int | None = None,
               confidence: float | None = None) -> Detections:
        return Detections(np.array([BOX], np.float32), np.array([0.8]), np.zeros(1))

    def ocr(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        self.batches.append([c.shape[1] for c in crops])
        return [self.main if c.shape[1] >= 230 else self.narrow for c in crops]


def frames(n: int) -> list[Frame]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        image = np.full((360, 640, 3), 150, np.uint8)
        image[150:200, 200:400] = rng.integers(0, 255, (50, 200, 3), dtype=np.uint8)
        out.append(Frame(image, i, i * 0.1, 1000.0 + i * 0.1))
    return out


def pipeline(camera: Camera) -> VideoPipeline:
    config = PipelineConfig(
        detect=DetectConfig(full_every=1),  # the stand-in detector sees whole frames only
        ocr=OcrConfig(video_crops=[], still_crops=[(0.0, 0.15)]),
        track=TrackConfig(settle_after=0),
        motion=MotionConfig(enabled=False),
        night=NightConfig(mode="day"),
    )
    return VideoPipeline(camera.engines(), config, "cam")


def run(p: VideoPipeline, n: int = 6) -> list[str]:
    events = [e for f in frames(n) for e in p.process(f).events] + p.finish()
    return [e.text for e in events]


def result(text: str, conf: float) -> OcrResult:
    return OcrResult(text, conf, (conf,) * len(text))


def test_doubtful_best_views_are_read_again_with_the_still_crops_in_one_batch() -> None:
    camera = Camera(main=result("XBC12", 0.5), narrow=result("ABC123", 0.97))
    assert run(pipeline(camera)) == ["ABC123"]
    # six frames, one main crop each; then the best views' still crops in one recogniser
    # call (their main crops are the frames' own, remembered, not run again)
    assert camera.batches[:6] == [[240]] * 6
    assert camera.batches[6:] == [[200] * BEST_VIEWS]


def test_without_the_reread_the_pass_reads_what_the_frames_read() -> None:
    camera = Camera(main=result("XBC12", 0.5), narrow=result("ABC123", 0.97))
    p = pipeline(camera)
    p.tracker.reread = None
    assert run(p) == ["XBC12"]


def test_a_sure_pass_is_not_read_again() -> None:
    camera = Camera(main=result("ABC123", 0.97), narrow=result("XYZ789", 0.97))
    assert run(pipeline(camera)) == ["ABC123"]
    assert camera.batches == [[240]] * 6


def test_a_track_keeps_its_best_views_bounded() -> None:
    image = frames(1)[0].image
    plate = PlateText("ABC123", "ABC123", "ABC123", None, 0.9)
    track: Track | None = None
    for i, w in enumerate([60, 200, 80, 160, 40, 120, 180]):
        box = (200.0, 150.0, 200.0 + w, 150.0 + w / 4)
        crop = image[150:200, 200:400]
        read = PlateRead(box=box, detection_confidence=0.8, plate=plate, crop=crop, pts=i)
        if track is None:
            track = Track.start(1, read, i, 30)
        else:
            track.add(read, i)
        score = view_score(read)
        if track.wants_view(score):
            track.keep_view(cut_view(image, read, False, score))
    assert track is not None
    widths = [v.read.box[2] - v.read.box[0] for v in track.views]
    assert widths == [200, 180, 160]  # the biggest looks, best first
    for view in track.views:  # a copy of the plate with a margin, not the frame
        assert view.patch.base is None and view.patch.shape[0] < image.shape[0]
        x1, y1, x2, y2 = view.box
        assert x1 > 0 and y1 > 0 and x2 < view.patch.shape[1] and y2 < view.patch.shape[0]


def test_reread_reads_every_view_in_one_batch() -> None:
    camera = Camera(main=result("XBC12", 0.5), narrow=result("ABC123", 0.97))
    reader = PlateReader(camera.ocr, geometry=CropGeometry())
    image = frames(1)[0].image
    plate = PlateText("XBC12", "XBC12", "XBC12", None, 0.5)
    views = [cut_view(image, PlateRead(box=BOX, detection_confidence=0.8, plate=plate), False)
             for _ in range(2)]
    texts = reader.reread(views, [(0.0, 0.15), (0.05, 0.18)])
    assert [t.text for t in texts] == ["ABC123", "ABC123"]
    assert camera.batches == [[240, 200, 220] * 2]


def test_a_pass_of_fragments_is_not_read_again() -> None:
    # a wheel or a sign read as a character or two on every frame: no plate to read better
    camera = Camera(main=result("X1", 0.5), narrow=result("ABC123", 0.97))
    run(pipeline(camera))
    assert camera.batches == [[240]] * 6
