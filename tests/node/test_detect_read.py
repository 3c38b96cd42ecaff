"""Detection and reading stages: geometry on made-up inputs, then the real models on real photos."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from helpers.data import data_dir

from edge.core.boxes import nested, nms, tiles
from edge.core.types import Detections, OcrResult
from edge.node.config import PipelineConfig
from edge.node.detect.yolo import letterbox, nms_per_class
from edge.node.pipeline import StillReader
from edge.node.read import CropGeometry, PlateReader, crop_plate, skew_angle
from edge.node.timing import StageTimer


def test_letterbox_keeps_aspect_and_centres():
    image = np.zeros((360, 640, 3), np.uint8)
    out, lb = letterbox(image, 640, 640)
    assert out.shape == (640, 640, 3)
    assert lb.scale == 1.0 and lb.pad_x == 0 and lb.pad_y == 140


def test_nms_keeps_best_of_overlapping_and_separate_boxes():
    xyxy = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = nms(xyxy, np.array([0.5, 0.9, 0.7], np.float32), 0.5)
    assert keep.tolist() == [1, 2]
    # the same boxes as two classes are not suppressed across classes
    keep = nms_per_class(xyxy[:2], np.array([0.5, 0.9], np.float32), np.array([0, 1]), 0.5)
    assert sorted(keep.tolist()) == [0, 1]


def test_detections_are_columnar_and_mask_indexable():
    dets = Detections([[0, 0, 1, 1], [2, 2, 3, 3]], [0.2, 0.9], [0, 0])
    strong = dets[dets.confidence > 0.5]
    assert len(strong) == 1 and strong.xyxy[0, 0] == 2
    with pytest.raises(ValueError, match="differ in length"):
        Detections([[0, 0, 1, 1]], [0.2, 0.3], [0])


def test_tiles_cover_the_long_side():
    found = tiles((720, 1280), 2, 640)
    assert found == [(0, 0, 720, 720), (560, 0, 1280, 720)]
    assert tiles((720, 1280), 0, 640) == []
    assert tiles((480, 640), 2, 640) == []  # hardly shrunk: no tiles


def test_crop_widens_and_trims_and_survives_edges():
    image = np.zeros((100, 200, 3), np.uint8)
    crop = crop_plate(image, (50, 40, 150, 60), CropGeometry(widen=0.1, trim=0.1))
    assert crop.shape[:2] == (16, 120)
    assert crop_plate(image, (-50, -5, 10, 300), CropGeometry()).shape[0] > 0
    assert crop_plate(image, (10, 10, 11, 11), CropGeometry()).size == 0


def rotated_bar(angle: float) -> np.ndarray:
    image = np.full((60, 200, 3), 255, np.uint8)
    cv2.rectangle(image, (10, 10), (190, 50), (0, 0, 0), 2)
    matrix = cv2.getRotationMatrix2D((100, 30), angle, 1.0)
    return cv2.warpAffine(image, matrix, (200, 60), borderValue=(255, 255, 255))


@pytest.mark.parametrize("angle", [-8.0, 0.0, 6.0])
def test_skew_angle_follows_the_plate_edges(angle):
    measured = skew_angle(rotated_bar(angle))
    # cv2's angle is counter-clockwise, image y points down: the measured angle is -angle
    assert math.isclose(measured, -angle, abs_tol=1.5)


def test_reader_splits_two_line_plates_and_keeps_char_confidence():
    seen: list[tuple[int, int]] = []

    def fake_ocr(lines):
        # the whole crop read as one line is garbage; the two halves read well
        seen.extend(line.shape[:2] for line in lines)
        return [OcrResult("X8", 0.3, (0.3, 0.3)), OcrResult("AB", 0.9, (0.9, 0.9)),
                OcrResult("1234", 0.95, (0.95,) * 4)][: len(lines)]

    reader = PlateReader(fake_ocr, geometry=CropGeometry(straighten=False))
    image = np.full((200, 200, 3), 200, np.uint8)
    (plate, crop), = reader.read(image, [(50, 50, 130, 110)])  # 80 x 60: squarish
    assert len(seen) == 3 and plate.text == "AB1234" and len(plate.char_confidence) == 6
    assert crop is not None


def test_video_reads_the_other_crops_only_of_a_box_whose_main_crop_reads_some_text():
    def reader_reading(text):
        seen: list[int] = []

        def ocr(lines):
            seen.append(len(lines))
            return [OcrResult(text, 0.5, (0.5,) * len(text)) for _ in lines]
        geometry = CropGeometry(straighten=False, alternatives=((0.05, 0.18),), adaptive=True)
        PlateReader(ocr, geometry=geometry).read(np.full((200, 300, 3), 200, np.uint8),
                                                 [(50, 50, 250, 90)])
        return seen

    assert reader_reading("AB") == [1]  # a lamp, a sign: no second crop
    assert reader_reading("AB1") == [1, 1]  # doubtful text: the alternative too


def test_reader_keeps_one_line_reading_of_a_squarish_plate_when_better():
    results = [OcrResult("ABC1234", 0.9, (0.9,) * 7), OcrResult("AB", 0.4, (0.4,) * 2),
               OcrResult("C12", 0.5, (0.5,) * 3)]
    reader = PlateReader(lambda lines: results[: len(lines)],
                         geometry=CropGeometry(straighten=False))
    (plate, _), = reader.read(np.full((200, 200, 3), 200, np.uint8), [(50, 50, 130, 110)])
    assert plate.text == "ABC1234"


def test_reader_handles_an_empty_read():
    reader = PlateReader(lambda lines: [OcrResult("", 0.0, ()) for _ in lines])
    (plate, _), = reader.read(np.zeros((100, 300, 3), np.uint8), [(10, 10, 200, 50)])
    assert plate.text == "" and plate.confidence == 0.0


# --- the real models ----------------------------------------------------------------------


def labelled(folder, count: int):
    items = []
    for label in sorted(folder.glob("*.txt"))[:count]:
        name, x, y, w, h, text = label.read_text().strip().split("\t")[:6]
        items.append((folder / name, (int(x), int(y), int(x) + int(w), int(y) + int(h)), text))
    return items


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.models
def test_real_photos_are_found_and_mostly_read(engines):
    photos = labelled(data_dir("plates-eu-dev"), 8)
    reader = StillReader(engines, PipelineConfig())
    found = read_ok = 0
    for path, box, text in photos:
        timer = StageTimer()
        reads = reader.read(cv2.imread(str(path)), timer)
        assert {"detect_plates", "ocr"} <= set(timer.ms)
        found += any(iou(r.box, box) >= 0.3 for r in reads)
        read_ok += any(r.plate.text.replace("O", "0") == text.replace("O", "0") for r in reads)
    assert found >= 7 and read_ok >= 6


@pytest.mark.models
def test_infrared_like_grey_frame_still_reads(engines):
    path, box, text = labelled(data_dir("plates-eu-dev"), 1)[0]
    image = cv2.imread(str(path))
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    dark = (grey * 0.35).astype(np.uint8)
    reader = StillReader(engines, PipelineConfig())
    reads = reader.read(dark)
    assert reads and reads[0].night
    assert any(iou(r.box, box) >= 0.3 for r in reads)


@pytest.mark.models
def test_cli_read_prints_the_contract_and_survives_bad_files(tmp_path, capsys):
    from edge.cli import main

    path, _, text = labelled(data_dir("plates-eu-dev"), 1)[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["read", str(path), str(broken)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == [str(path), str(broken)]
    good, bad = lines
    assert good["plates"] and set(good["plates"][0]) >= {"text", "formatted", "country",
                                                         "confidence", "box"}
    assert 0 <= good["plates"][0]["confidence"] <= 1 and good["ms"]
    assert bad["plates"] == [] and "error" in bad


def test_a_box_inside_a_larger_one_is_the_same_plate():
    xyxy = np.array([[100, 100, 300, 150], [110, 105, 200, 148], [400, 100, 600, 150]],
                    np.float32)
    assert nested(xyxy).tolist() == [False, True, False]


def test_adaptive_reader_looks_again_only_at_doubtful_plates():
    calls: list[int] = []

    def fake_ocr(lines):
        calls.append(len(lines))
        # a sure Lithuanian read on the first pass, a doubtful one for the second plate
        first = [OcrResult("ABC123", 0.99, (0.99,) * 6), OcrResult("X7Q", 0.5, (0.5,) * 3)]
        return first[: len(lines)] if len(calls) == 1 else [
            OcrResult("AB1234", 0.95, (0.95,) * 6)] * len(lines)

    geometry = CropGeometry(straighten=False, alternatives=((0.05, 0.18),), adaptive=True)
    reader = PlateReader(fake_ocr, geometry=geometry, countries=["LT"])
    image = np.full((200, 600, 3), 200, np.uint8)
    (sure, _), (doubtful, _) = reader.read(image, [(10, 10, 210, 50), (300, 10, 500, 50)])
    assert calls == [2, 1]  # both main crops, then one more crop of the doubtful plate
    assert sure.text == "ABC123" and doubtful.text == "AB1234"
