"""The motion gate's moving blobs, and the plate detector's windows over them between whole
frames, on frames made in the test."""

from __future__ import annotations

import cv2
import numpy as np

from edge.core.types import Detections, Frame, OcrResult
from edge.node.config import DetectConfig, MotionConfig, PipelineConfig
from edge.node.detect.finder import PlateFinder
from edge.node.detect.schedule import WindowSchedule
from edge.node.engines import Engines
from edge.node.pipeline import VideoPipeline
from edge.node.scene import MotionGate
from edge.node.timing import StageTimer

H, W = 720, 1280
PLATE = (255, 255, 255)  # a plate's pixels: nothing else in these frames is pure white
SPECK = (240, 240, 240)


def road(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(110, 3, (H, W, 3)), 0, 255).astype(np.uint8)


def with_car(image: np.ndarray, x: int, y: int) -> np.ndarray:
    """A 240x150 car with its plate (60x16, pure white) low in the middle, from (x, y)."""
    image[y:y + 150, x:x + 240] = (40, 40, 170)
    image[y + 20:y + 60, x + 30:x + 210] = (200, 180, 150)  # the windscreen
    image[y + 110:y + 126, x + 90:x + 150] = PLATE
    return image


def inside(region: tuple[int, int, int, int], box: tuple[int, int, int, int]) -> bool:
    return (region[0] <= box[0] and region[1] <= box[1] and region[2] >= box[2]
            and region[3] >= box[3])


def area(region: tuple[int, int, int, int]) -> float:
    return (region[2] - region[0]) * (region[3] - region[1]) / (H * W)


def settled_gate() -> MotionGate:
    gate = MotionGate(MotionConfig())
    for i in range(5):
        gate.moving(road(i))
    return gate


def specks(image: np.ndarray) -> np.ndarray:
    """Bright specks, each one pixel of the gate's 160-pixel copy, at the frame's corners
    and its top edge (a flickering light, a hot pixel, a drop of rain)."""
    for x, y in ((0, 0), (1272, 8), (8, 712), (1264, 704), (640, 16)):
        image[y:y + 8, x:x + 8] = SPECK
    return image


def test_specks_of_noise_make_no_moving_region_and_do_not_widen_a_cars():
    gate = settled_gate()
    gate.moving(specks(road(10)))
    assert gate.last_regions == []
    # the box around every changed pixel was (0, 0, 1265, 705) here: the whole frame
    gate.moving(specks(with_car(road(11), 500, 400)))
    (region,) = gate.last_regions
    assert inside(region, (500, 400, 740, 550))
    assert area(region) < 0.08  # the car, not the box from corner to corner


def test_two_cars_far_apart_are_two_moving_regions():
    gate = settled_gate()
    frame = with_car(with_car(road(10), 60, 80), 960, 520)
    gate.moving(frame)
    regions = sorted(gate.last_regions)
    assert len(regions) == 2
    assert inside(regions[0], (60, 80, 300, 230)) and inside(regions[1], (960, 520, 1200, 670))
    assert not inside(regions[0], (960, 520, 1200, 670))


def test_rain_all_over_is_one_region_the_schedule_does_not_search_in_windows():
    gate = settled_gate()
    frame = road(10)
    rng = np.random.default_rng(3)
    for x, y in zip(rng.integers(0, W - 40, 40), rng.integers(0, H - 40, 40), strict=True):
        frame[y:y + 40, x:x + 40] = (20, 20, 20)  # big drops on the lens, everywhere
    gate.moving(frame)
    assert gate.last_regions is not None and len(gate.last_regions) >= 1
    assert WindowSchedule().motion_windows(gate.last_regions, (H, W)) is None


class WhitePlates:
    """A detector that finds the pure white patches of the image it is given, and
    records the size of every image it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, image: np.ndarray, *, size: int | None = None,
                 confidence: float | None = None) -> Detections:
        self.calls.append(image.shape[:2])
        white = (image == PLATE).all(axis=2).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(white)
        if n < 2:
            return Detections.empty()
        boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:]]
        return Detections(np.array(boxes, np.float32), np.full(len(boxes), 0.9),
                          np.zeros(len(boxes)))


def test_between_whole_frames_only_windows_are_searched_and_a_car_entering_is_found():
    detector = WhitePlates()
    finder = PlateFinder(detector, None, DetectConfig(),
                         WindowSchedule(every=3, hold=2, quiet_every=9))
    gate = MotionGate(MotionConfig())
    whole, found = [], []
    # a car crawling far up the road; from frame 6 a second one drives in low on the
    # right, 60 pixels a frame: the box around both would be most of the frame
    frames = []
    for i in range(16):
        frame = with_car(road(i), 60 + 10 * i, 80)
        if i >= 6:
            frame = with_car(frame, 1040 - 60 * (i - 6), 540)
        frames.append(frame)
    for frame in frames:
        detector.calls.clear()
        gate.moving(frame)
        plates, _ = finder(frame, StageTimer(), confidence=0.25, motion=gate.last_regions)
        whole.append(finder.whole)
        found.append(len(plates))
        if not finder.whole:
            assert sum(h * w for h, w in detector.calls) < 0.4 * H * W
    # whole at the first frame and every 9th after it; the rest only in windows
    assert [i for i, w in enumerate(whole) if w] == [0, 9]
    # the second car's plate is found from the frame it enters, though no whole frame
    # is due, and both are followed from then on
    assert found[:6] == [1] * 6
    assert found[6:] == [2] * 10


def no_text(crops: list[np.ndarray]) -> list[OcrResult]:
    return [OcrResult("", 0.0, ()) for _ in crops]


def test_a_video_pipeline_hands_the_gates_blobs_to_the_plate_finder():
    detector = WhitePlates()
    config = PipelineConfig(detect=DetectConfig(full_every=3, full_every_quiet=9))
    pipeline = VideoPipeline(Engines(plates=detector, ocr=no_text), config)
    searched = []
    frames = [road(i) for i in range(6)] + [with_car(road(6), 500, 380)]
    for i, image in enumerate(frames):
        detector.calls.clear()
        result = pipeline.process(Frame(image=image, index=i, pts=i / 5, wall=1e9 + i / 5))
        if result.processed:
            searched.append((pipeline.reader.finder.whole, list(detector.calls)))
    whole, calls = searched[-1]
    assert not whole and calls  # the car's blob, searched in a window
    assert sum(h * w for h, w in calls) < 0.3 * H * W
