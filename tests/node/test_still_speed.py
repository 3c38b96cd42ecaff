"""Cheaper stills: the extra crops only for plates two crops do not read alike, the tiles only
where the whole photo found no plate, and a batch that reads what single reads read."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers.data import data_dir

from edge.core.types import Detections, OcrResult
from edge.node.config import DetectConfig, PipelineConfig
from edge.node.detect.finder import PlateFinder
from edge.node.detect.yolo import frame_input
from edge.node.engines import Engines
from edge.node.image_reader import ImageReader
from edge.node.pipeline import StillReader
from edge.node.read import CropGeometry, PlateReader
from edge.node.timing import StageTimer

SURE = OcrResult("ABC123", 0.99, (0.99,) * 6)  # LT, every character sure
FAIR = OcrResult("ABC123", 0.85, (0.99, 0.99, 0.7, 0.99, 0.99, 0.99))  # one less sure
UNSURE_CHAR = OcrResult("ABC123", 0.9, (0.99, 0.99, 0.4, 0.99, 0.99, 0.99))
OTHER = OcrResult("ABD124", 0.95, (0.95,) * 6)
FOREIGN = OcrResult("AB1234", 0.99, (0.99,) * 6)  # a sure read in no LT format
CROPS = ((0.05, 0.18), (0.15, 0.05), (0.0, 0.15))
MORE = len(CROPS) - 1  # the alternatives after the first


class ByWidth:
    """A recogniser whose read depends on the line's width: the main crop (widen 0.10, trim
    0.10) of a plate gives `main`, every other crop `rest`; records every call's lines."""

    def __init__(self, main: OcrResult, rest: OcrResult, main_width: int = 240) -> None:
        self.main, self.rest, self.main_width = main, rest, main_width
        self.calls: list[int] = []

    def __call__(self, lines):  # noqa: ANN001, ANN204
        self.calls.append(len(lines))
        return [self.main if line.shape[1] == self.main_width else self.rest
                for line in lines]


BOX = (100.0, 100.0, 300.0, 150.0)  # a wide plate: one line; main crop 240 px wide
IMAGE = np.full((400, 600, 3), 128, np.uint8)


def _reader(main: OcrResult, rest: OcrResult,
            countries: list[str] | None = None) -> tuple[PlateReader, ByWidth]:
    ocr = ByWidth(main, rest)
    geometry = CropGeometry(straighten=False, alternatives=CROPS, adaptive=True, confirm=True)
    return PlateReader(ocr, geometry=geometry, countries=countries or ["LT"]), ocr


def _read(reader: PlateReader, boxes=(BOX,)) -> list[str]:  # noqa: ANN001
    return [plate.text for plate, _ in reader.read(IMAGE, list(boxes))]


def test_a_sure_main_read_in_the_cameras_countries_gets_no_more_crops():
    reader, ocr = _reader(SURE, OTHER)
    assert _read(reader) == ["ABC123"] and ocr.calls == [1]


def test_a_less_sure_read_two_crops_read_alike_gets_one_more_crop_only():
    reader, ocr = _reader(FAIR, FAIR)
    assert _read(reader) == ["ABC123"] and ocr.calls == [1, 1]


def test_a_plate_two_crops_read_differently_gets_every_crop():
    reader, ocr = _reader(FAIR, OTHER)
    assert _read(reader) == ["ABD124"]  # three crops of four agree
    assert ocr.calls == [1, 1, MORE]


def test_a_character_read_unsurely_leaves_the_plate_doubtful():
    reader, ocr = _reader(UNSURE_CHAR, UNSURE_CHAR)
    _read(reader)
    assert ocr.calls == [1, 1, MORE]


def test_a_sure_read_outside_the_cameras_countries_is_doubtful():
    reader, ocr = _reader(FOREIGN, FOREIGN)
    _read(reader)
    assert ocr.calls == [1, 1]  # confirmed by the second crop, not settled alone
    reader, ocr = _reader(FOREIGN, FOREIGN, countries=["DE"])  # a German format: settled
    _read(reader)
    assert ocr.calls == [1]


def test_only_the_doubtful_plates_of_a_photo_are_read_again_each_step_in_one_batch():
    reader, _ = _reader(SURE, SURE)
    steps: list[int] = []
    replies = [[SURE, FAIR, FAIR], [FAIR, OTHER], [OTHER] * MORE]

    def recognise(lines):  # noqa: ANN001, ANN202
        steps.append(len(lines))
        return replies[len(steps) - 1]

    reader.recognize = recognise
    boxes = [BOX, (350.0, 200.0, 550.0, 250.0), (50.0, 300.0, 250.0, 350.0)]
    assert _read(reader, boxes) == ["ABC123", "ABC123", "ABD124"]
    # three main crops; the first alternative of the two unsure; the rest of the one the
    # two crops read otherwise
    assert steps == [3, 2, MORE]


def test_without_adaptive_every_crop_is_read_in_one_batch():
    ocr = ByWidth(SURE, SURE)
    reader = PlateReader(ocr, geometry=CropGeometry(straighten=False, alternatives=CROPS))
    reader.read(IMAGE, [BOX])
    assert ocr.calls == [1 + len(CROPS)]


def test_the_still_reader_is_adaptive_by_default_the_video_reader_keeps_its_rule():
    ocr = ByWidth(FAIR, FAIR)
    reader = StillReader(Engines(plates=Counting([BOX]), ocr=ocr),
                         PipelineConfig(countries=["LT"]))
    (read,) = reader.read(IMAGE, night=False)
    assert read.plate.text == "ABC123" and ocr.calls == [1, 1]
    video = ImageReader.for_video(Engines(plates=Counting([BOX]), ocr=ocr), PipelineConfig())
    assert video.reader.geometry.adaptive and not video.reader.geometry.confirm
    assert not video.tiles_if_missed


class Counting:
    """A detector that finds `plates` on the whole image only (none in a tile), counting
    its calls."""

    def __init__(self, plates: list[tuple[float, float, float, float]]) -> None:
        self.plates = plates
        self.calls = 0

    def __call__(self, image: np.ndarray, *, size: int | None = None,
                 confidence: float | None = None) -> Detections:
        self.calls += 1
        if self.calls > 1 or not self.plates:
            return Detections.empty()
        return Detections(np.array(self.plates, np.float32), np.full(len(self.plates), 0.9),
                          np.zeros(len(self.plates)))


BIG = np.zeros((720, 1280, 3), np.uint8)  # big enough for tiles at input 640


@pytest.mark.parametrize(("plates", "calls"), [([BOX], 1), ([], 3)])
def test_a_photos_tiles_are_searched_only_where_the_whole_found_no_plate(plates, calls):
    detector = Counting(plates)
    finder = PlateFinder(detector, None, DetectConfig())
    found, _ = finder(BIG, StageTimer(), confidence=0.3, n_tiles=2, tiles_if_missed=True)
    assert detector.calls == calls and len(found) == len(plates)


def test_a_plate_too_small_to_keep_does_not_spare_the_tiles():
    detector = Counting([(100.0, 100.0, 140.0, 108.0)])  # 8 px tall, under min_plate_height
    finder = PlateFinder(detector, None, DetectConfig())
    finder(BIG, StageTimer(), confidence=0.3, n_tiles=2, tiles_if_missed=True)
    assert detector.calls == 3


def test_without_tiles_if_missed_the_tiles_are_always_searched():
    detector = Counting([BOX])
    finder = PlateFinder(detector, None, DetectConfig())
    finder(BIG, StageTimer(), confidence=0.3, n_tiles=2)
    assert detector.calls == 3


def test_a_photos_letterbox_follows_its_aspect_on_the_stride():
    assert frame_input((432, 576), 640)[0] == (480, 640)
    assert frame_input((720, 1280), 640)[0] == (384, 640)
    assert frame_input((1632, 918), 640)[0] == (640, 384)


@pytest.mark.models
def test_plates_read_together_read_as_each_alone(engines):
    """The real recogniser: the crops of four photos' plates in one batch (bucketed by
    width) read as each plate's crops read alone."""
    folder = data_dir("plates-eu-dev")
    config = PipelineConfig()
    still = StillReader(engines, config)
    photos = sorted(folder.glob("*.jpg"))[:4]
    boxes, lines = [], []
    for path in photos:
        image = cv2.imread(str(path))
        plates, _ = still.reader.find(image, StageTimer(), night=False)
        for box in plates.xyxy.tolist():
            boxes.append((image, box))
            lines.append(still.reader.reader.layouts(image, box, False))
    assert len(boxes) >= 4
    flat = [line for layouts in lines for layout in layouts for line in layout]
    together = [r.text for r in engines.ocr(flat)]
    alone = [r.text for layouts in lines for layout in layouts
             for r in engines.ocr(layout)]
    assert together == alone
