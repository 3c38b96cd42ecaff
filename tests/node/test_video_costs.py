"""What a video frame spends on: evidence only where it can be shown, votes only where a
pass gained a read, and the same events either way."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.core.types import Detections, Frame, OcrResult
from edge.node.config import DetectConfig, MotionConfig, NightConfig, PipelineConfig, TrackConfig
from edge.node.engines import Engines
from edge.node.pipeline import VideoPipeline

BOXES = [(200.0, 150.0, 400.0, 200.0), (800.0, 400.0, 1000.0, 450.0)]


class Scene:
    """Two plate boxes in every frame; the recogniser reads each crop as `texts` says by
    the crop's place (left or right) and frame."""

    def __init__(self, texts):  # noqa: ANN001
        self.texts = texts
        self.frame = 0

    def engines(self) -> Engines:
        return Engines(plates=self.plates, ocr=self.ocr)

    def plates(self, image: np.ndarray, *, size: int | None = None,
               confidence: float | None = None) -> Detections:
        return Detections(np.array(BOXES, np.float32), np.array([0.8, 0.8]), np.zeros(2))

    def ocr(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        out = []
        for crop in crops:
            left = float(crop.mean()) < 128  # the left plate's pixels are dark
            text = self.texts(self.frame, left)
            out.append(OcrResult(text, 0.95, (0.95,) * len(text)))
        return out


def frames(n: int) -> list[Frame]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        image = np.full((720, 1280, 3), 150, np.uint8)
        image[140:210, 190:410] = rng.integers(0, 100, (70, 220, 3), dtype=np.uint8)
        image[390:460, 790:1010] = rng.integers(156, 255, (70, 220, 3), dtype=np.uint8)
        out.append(Frame(image, i, i * 0.1, 1000.0 + i * 0.1))
    return out


def pipeline(scene: Scene, settle_after: int = 0, **kw) -> VideoPipeline:  # noqa: ANN003
    config = PipelineConfig(detect=DetectConfig(full_every=1), motion=MotionConfig(enabled=False),
                            night=NightConfig(mode="day"),
                            track=TrackConfig(settle_after=settle_after))
    return VideoPipeline(scene.engines(), config, "cam", **kw)


def test_the_frame_is_kept_as_evidence_only_for_reads_that_can_show_a_pass():
    # the left plate reads on frames 3 on; before that both boxes read as fragments
    scene = Scene(lambda i, left: "AB123CD" if left and i >= 3 else "7")
    p = pipeline(scene, scene_width=320)
    for frame in frames(6):
        scene.frame = frame.index
        result = p.process(frame)
        encoded = "evidence" in result.ms
        assert encoded == (frame.index >= 3)
        for read in result.reads:
            assert (read.scene_jpeg is not None) == (read.plate.text == "AB123CD")
    # the pass's views read again at its end read the plate in the fragments' frames
    # too (this recogniser reads by the frame now showing), whose frames were not kept:
    # the event still carries a frame of its pass
    events = p.finish()
    assert [e.text for e in events] == ["AB123CD"] and events[0].scene_jpeg


def test_a_pass_sure_of_its_plate_is_not_read_on_every_frame_though_reads_wobble():
    # the right plate reads otherwise every third frame: never three the same in a row,
    # so it never settles as a streak; but its pass soon agrees, surely, on one text
    reads: list[int] = []

    def texts(i: int, left: bool) -> str:
        if left:
            return "7"
        reads.append(i)
        return "AB128CD" if i % 3 == 0 else "AB123CD"

    scene = Scene(texts)
    p = pipeline(scene, settle_after=3)
    for frame in frames(30):
        scene.frame = frame.index
        p.process(frame)
    events = p.finish()
    assert [e.text for e in events] == ["AB123CD"]
    assert len(set(reads)) <= 20  # read again every few frames, not on all 30
    assert set(range(6)) <= set(reads)  # read on every frame until the pass is sure
