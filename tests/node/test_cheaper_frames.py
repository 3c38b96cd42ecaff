"""Cheaper frames: windowed plate detection between whole frames, stills' extra crops only
for doubtful reads."""

from __future__ import annotations

import numpy as np

from edge.core.types import Detections, OcrResult
from edge.node.config import DetectConfig, PipelineConfig
from edge.node.detect.finder import PlateFinder
from edge.node.detect.schedule import WindowSchedule, merge_regions
from edge.node.engines import Engines
from edge.node.image_reader import ImageReader
from edge.node.pipeline import StillReader
from edge.node.timing import StageTimer

H, W = 720, 1280


class PlatesAt:
    """A detector that 'sees' the plates drawn at fixed frame positions: it reports the
    ones wholly inside the image it is given, and records every call."""

    def __init__(self) -> None:
        self.plates: list[tuple[float, float, float, float]] = []
        self.calls: list[tuple[int, int, int | None]] = []
        self.origin = (0, 0)

    def __call__(self, image: np.ndarray, *, size: int | None = None,
                 confidence: float | None = None) -> Detections:
        h, w = image.shape[:2]
        self.calls.append((h, w, size))
        # the frame's pixels say where they are (`_frame`): the window's centre tells
        # where the window lies, a view of the frame or a copy padded past its edge
        ox = oy = 0
        if (h, w) != (H, W):
            b, g, r = (int(v) for v in image[h // 2, w // 2])
            ox, oy = b + ((g & 15) << 8) - w // 2, r + ((g >> 4) << 8) - h // 2
        found = [(x1 - ox, y1 - oy, x2 - ox, y2 - oy) for x1, y1, x2, y2 in self.plates
                 if x1 >= ox and y1 >= oy and x2 <= ox + w and y2 <= oy + h]
        if not found:
            return Detections.empty()
        return Detections(np.array(found, np.float32), np.full(len(found), 0.9),
                          np.zeros(len(found)))


def _finder(every: int) -> tuple[PlateFinder, PlatesAt]:
    detector = PlatesAt()
    schedule = WindowSchedule(every=every, margin=1.0, hold=2)
    return PlateFinder(detector, None, DetectConfig(), schedule), detector


def _frame() -> np.ndarray:
    """A frame whose every pixel encodes its own position."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([x & 255, (x >> 8) | ((y >> 8) << 4), y & 255], axis=2).astype(np.uint8)


FRAME = _frame()


def _find(finder: PlateFinder, motion=None) -> Detections:  # noqa: ANN001
    frame = FRAME
    plates, _ = finder(frame, StageTimer(), confidence=0.25, motion=motion)
    return plates


def test_whole_frame_every_n_frames_and_windows_around_the_plate_between():
    finder, detector = _finder(every=3)
    detector.plates = [(600, 400, 700, 430)]
    sizes = []
    for _ in range(7):
        detector.calls.clear()
        found = _find(finder)
        assert len(found) == 1
        sizes.append([(h, w) for h, w, _ in detector.calls])
    whole = [(H, W)]
    assert sizes[0] == whole and sizes[3] == whole and sizes[6] == whole
    for i in (1, 2, 4, 5):
        assert len(sizes[i]) == 1
        h, w = sizes[i][0]
        assert h * w < 0.15 * H * W  # a window around the plate, not the frame
    # the plate is found again where it is, in frame pixels
    assert found.xyxy[0].tolist() == [600, 400, 700, 430]


def test_a_plate_entering_outside_every_window_is_found_at_the_next_whole_frame():
    finder, detector = _finder(every=3)
    detector.plates = [(100, 100, 200, 130)]
    assert len(_find(finder)) == 1  # frame 0: whole
    detector.plates.append((1000, 600, 1100, 630))  # enters far from the first
    assert len(_find(finder)) == 1  # frame 1: windows only
    assert len(_find(finder)) == 1  # frame 2: windows only
    found = _find(finder)  # frame 3: whole again
    assert len(found) == 2
    # and from then on the windows follow it too
    assert len(_find(finder)) == 2


def test_a_small_moving_region_is_searched_between_whole_frames_a_large_one_is_not():
    finder, detector = _finder(every=3)
    _find(finder)  # frame 0, nothing there
    detector.plates = [(1000, 600, 1100, 630)]
    assert len(_find(finder, motion=[(950, 560, 1150, 680)])) == 1
    detector.calls.clear()
    assert len(_find(finder, motion=[(0, 0, W, H)])) == 1  # the window follows the plate
    assert all(h * w < 0.1 * H * W for h, w, _ in detector.calls)


def test_every_one_searches_every_frame_whole():
    finder, detector = _finder(every=1)
    detector.plates = [(600, 400, 700, 430)]
    for _ in range(3):
        _find(finder)
    assert [(h, w) for h, w, _ in detector.calls] == [(H, W)] * 3


def test_windows_run_at_the_whole_frames_scale():
    finder, detector = _finder(every=2)
    detector.plates = [(600, 400, 700, 430)]
    _find(finder)
    _find(finder)
    (h, w, size), = detector.calls[1:]
    scale = DetectConfig().plate_size / W
    assert size == max(h, w) * scale


def _window_origin(image: np.ndarray) -> tuple[int, int]:
    offset = image.__array_interface__["data"][0] - image.base.__array_interface__["data"][0]
    oy, ox = divmod(offset // 3, W)
    return ox, oy


def test_windows_lie_on_the_whole_frames_detector_grid():
    """A 1280x720 frame is letterboxed to 640x384 (12 grey rows on top), cut in 32-pixel
    cells: a window covers whole cells of that input, so a plate in it falls on the pixels
    and cells it has on a whole frame and is scored alike (found the same frames)."""
    seen: list[np.ndarray] = []

    def detector(image: np.ndarray, *, size: int | None = None,
                 confidence: float | None = None) -> Detections:
        seen.append(image)
        return Detections(np.array([[600, 400, 700, 430]], np.float32) - (
            np.array([*_window_origin(image)] * 2, np.float32) if image.base is not None
            else 0), np.full(1, 0.9), np.zeros(1))

    finder = PlateFinder(detector, None, DetectConfig(), WindowSchedule(every=2))
    for _ in range(2):
        _find(finder)
    window = seen[1]
    ox, oy = _window_origin(window)
    assert (ox * 0.5) % 32 == 0 and (oy * 0.5 + 12) % 32 == 0
    assert (window.shape[0] * 0.5) % 32 == 0 and (window.shape[1] * 0.5) % 32 == 0


def test_a_window_past_the_frames_edge_is_padded_grey_like_the_letterbox():
    seen: list[np.ndarray] = []

    def detector(image: np.ndarray, *, size: int | None = None,
                 confidence: float | None = None) -> Detections:
        seen.append(image)
        return Detections(np.array([[600, 700, 700, 720]], np.float32), np.full(1, 0.9),
                          np.zeros(1))

    finder = PlateFinder(detector, None, DetectConfig(), WindowSchedule(every=2))
    frame = np.full((H, W, 3), 7, np.uint8)
    for _ in range(2):
        finder(frame, StageTimer(), confidence=0.25)
    window = seen[1]
    # the input's last cell row ends 12 grey rows (24 frame rows) below the frame
    assert (window.shape[0] * 0.5) % 32 == 0
    assert (window[-24:] == 114).all() and (window[:-24] == 7).all()


def test_overlapping_windows_merge():
    assert merge_regions([(0, 0, 10, 10), (5, 5, 20, 20), (30, 30, 40, 40)]) == [
        (0, 0, 20, 20), (30, 30, 40, 40)]


def test_the_video_reader_has_a_schedule_and_the_still_reader_none():
    engines = Engines(plates=PlatesAt(), ocr=lambda crops: [])
    config = PipelineConfig()
    assert ImageReader.for_video(engines, config).finder.schedule is not None
    assert ImageReader.for_photos(engines, config).finder.schedule is None


class LinesRead:
    """A recogniser that reads a given text per plate position and counts its lines."""

    def __init__(self, texts: list[OcrResult]) -> None:
        self.texts = texts
        self.lines = 0

    def __call__(self, crops):  # noqa: ANN001, ANN204
        self.lines += len(crops)
        return [self.texts[0 if c.shape[1] < 400 else 1] for c in crops]


def _still(sure: bool) -> int:
    detector = PlatesAt()
    detector.plates = [(500, 300, 700, 345)]  # a wide plate: one line
    text = (OcrResult("ABC123", 0.99, (0.99,) * 6) if sure
            else OcrResult("A8C1Z3", 0.7, (0.9, 0.4, 0.9, 0.9, 0.5, 0.9)))
    ocr = LinesRead([text, text])
    config = PipelineConfig(countries=["LT"])
    config.ocr.still_adaptive = True
    reader = StillReader(Engines(plates=detector, ocr=ocr), config)
    image = np.full((H, W, 3), 128, np.uint8)
    reads = reader.read(image, night=False)
    assert len(reads) == 1
    return ocr.lines


def test_a_still_reads_a_sure_plate_once_and_a_doubtful_one_with_every_crop():
    assert _still(sure=True) == 1
    assert _still(sure=False) == 1 + len(PipelineConfig().ocr.still_crops)


def test_a_quiet_scene_is_searched_whole_less_often_a_busy_one_every_few_frames():
    detector = PlatesAt()
    schedule = WindowSchedule(every=3, margin=1.0, hold=2, quiet_every=9)
    finder = PlateFinder(detector, None, DetectConfig(), schedule)
    detector.plates = [(600, 400, 700, 430)]
    small = [(550, 350, 750, 480)]  # what moves: the plate's car, searched in a window
    whole = []
    for i in range(19):
        detector.calls.clear()
        assert len(_find(finder, motion=small if i % 2 else [])) == 1  # still found
        whole.append(any((h, w) == (H, W) for h, w, _ in detector.calls))
    assert [i for i, w in enumerate(whole) if w] == [0, 9, 18]
    # a scene moving all over (a moving camera, rain) is searched whole every 3 frames
    for _ in range(3):
        detector.calls.clear()
        _find(finder, motion=[(0, 0, W, H)])
    assert any((h, w) == (H, W) for h, w, _ in detector.calls)


def test_a_plate_entering_a_quiet_scene_is_found_in_the_moving_regions_window():
    detector = PlatesAt()
    finder = PlateFinder(detector, None, DetectConfig(),
                         WindowSchedule(every=3, hold=2, quiet_every=9))
    assert len(_find(finder, motion=[])) == 0  # frame 0: whole, an empty road
    for _ in range(4):
        assert len(_find(finder, motion=[])) == 0  # no whole frame while nothing moves
    detector.plates = [(1000, 600, 1100, 630)]  # a car drives in
    assert len(_find(finder, motion=[(950, 560, 1150, 680)])) == 1
