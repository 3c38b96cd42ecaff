"""What carries a plate: the vehicle's type and main colour on each pass's event, looked at a
bounded number of times a pass."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from helpers.data import data_dir
from helpers.stand_ins import idle_engines
from helpers.vehicles import DrawnScene

from edge.core.types import Detections, PlateEvent, PlateRead, PlateText
from edge.node.config import CameraConfig, DescribeConfig, EdgeConfig, PipelineConfig
from edge.node.engines import Engines
from edge.node.pipeline import VideoPipeline
from edge.node.service import EdgeService
from edge.node.vehicle import VehicleDescriber, main_colour, vehicle_colour
from edge.synthetic.drive_by import Camera, SyntheticDriveBy

SMALL = Camera(width=640, height=360, focal=1100.0)


@pytest.mark.parametrize("bgr, name", [
    ((236, 236, 236), "white"), ((20, 20, 22), "black"), ((110, 110, 108), "grey"),
    ((175, 172, 170), "silver"), ((184, 170, 160), "silver"), ((235, 218, 205), "white"),
    ((170, 140, 125), "silver"),  # the blue cast of shade or an overcast sky
    ((40, 42, 168), "red"), ((60, 50, 120), "red"), ((92, 48, 28), "blue"),
    ((52, 80, 44), "green"), ((30, 200, 230), "yellow"), ((20, 120, 240), "orange"),
    ((40, 70, 110), "brown"), ((150, 178, 196), "beige"), ((140, 40, 120), "purple"),
])
def test_a_patch_of_paint_is_named_from_the_palette(bgr, name):
    patch = np.full((12, 12, 3), bgr, np.uint8)
    assert main_colour(patch) == name


def test_dark_glass_and_tyres_do_not_outvote_the_paint():
    patch = np.full((10, 10, 3), (40, 42, 168), np.uint8)
    patch[:4] = (20, 20, 20)  # a window and a grille: 40% of the region
    assert main_colour(patch) == "red"


def test_no_colour_is_guessed_by_night_or_in_a_grey_frame():
    frame = np.full((120, 200, 3), (40, 42, 168), np.uint8)
    car, plate = (40, 20, 160, 110), (80, 80, 120, 90)
    assert vehicle_colour(frame, car, plate) == "red"
    assert vehicle_colour(frame, car, plate, night=True) is None
    grey = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert vehicle_colour(grey, car, plate) is None


def _read(box: tuple[float, float, float, float]) -> PlateRead:
    return PlateRead(box=box, detection_confidence=0.9,
                     plate=PlateText("AB123", "AB123", "AB123", None, 0.9))


def _plate(cx: float, width: float) -> tuple[float, float, float, float]:
    return (cx - width / 2, 300 - width / 9, cx + width / 2, 300 + width / 9)


def test_a_pass_is_looked_at_when_its_plate_is_big_enough_and_again_at_its_best_view():
    calls: list[tuple[int, int]] = []

    def detector(image, *, size=None, confidence=None):
        calls.append(image.shape[:2])
        return Detections(np.array([[0, 0, image.shape[1], image.shape[0]]]), [0.8], [7])

    describer = VehicleDescriber(detector, DescribeConfig(min_plate_height=14, regrow=1.5,
                                                          size=320))
    frame = np.full((720, 1280, 3), (150, 110, 40), np.uint8)
    for k in range(60):  # an approach: the plate grows from 40 to 160 px wide
        describer.look(frame, {7: _read(_plate(640, 40 + 2 * k))}, night=False)
    assert len(calls) == 2  # once at 14 px tall (63 px wide), again at 1.5 times that
    assert all(max(hw) < 1280 for hw in calls)  # a window around the plate, not the frame
    event = PlateEvent("AB123", "AB 123", None, 0.9, 0.0, 6.0, 60, "approaching", track_id=7)
    describer.apply([event])
    assert (event.vehicle_type, event.vehicle_colour) == ("truck", "blue")
    assert describer.looks == 2


def test_found_vehicle_boxes_are_used_as_they_are():
    def no_detector(image, *, size=None, confidence=None):
        raise AssertionError("the frame's vehicles were found already")

    describer = VehicleDescriber(no_detector, DescribeConfig())
    frame = np.full((720, 1280, 3), (226, 226, 222), np.uint8)
    vehicles = Detections(np.array([[400, 100, 900, 400], [0, 0, 100, 100]]), [0.8, 0.9], [5, 2])
    describer.look(frame, {3: _read(_plate(640, 100))}, night=False, vehicles=vehicles)
    event = PlateEvent("AB123", "AB 123", None, 0.9, 0.0, 1.0, 5, "approaching", track_id=3)
    describer.apply([event])
    assert (event.vehicle_type, event.vehicle_colour) == ("bus", "white")
    assert event.vehicle_box == (400.0, 100.0, 900.0, 400.0)


def _clip_of(colour: tuple[int, int, int], night: bool) -> SyntheticDriveBy:
    for seed in range(100):
        clip = SyntheticDriveBy([("ABC 123", "LT", night)], seed=seed, fps=6, camera=SMALL,
                                jpeg_quality=None)
        if clip.vehicles[0].colour == colour:
            return clip
    raise AssertionError(f"no seed under 100 paints a car {colour}")


def _pass_of(clip: SyntheticDriveBy) -> tuple[list[PlateEvent], int]:
    scene = DrawnScene(clip)
    config = PipelineConfig.model_validate({
        "analysis_fps": 6, "motion": {"enabled": False},
        # the drawn scene's plate detector sees whole frames only
        "detect": {"min_plate_height": 0, "full_every": 1},
        "describe": {"min_plate_height": 6}})
    pipeline = VideoPipeline(Engines(plates=scene.plates, ocr=scene.ocr,
                                     vehicles=scene.vehicles), config)
    events = []
    for frame in clip:
        scene.index = frame.index
        events += pipeline.process(frame).events
    return events + pipeline.finish(), scene.vehicle_calls


@pytest.mark.parametrize("colour, name", [((40, 42, 168), "red"), ((226, 226, 222), "white"),
                                          ((52, 80, 44), "green")])
def test_a_rendered_vehicles_pass_carries_its_type_and_colour(colour, name):
    events, calls = _pass_of(_clip_of(colour, night=False))
    assert [e.text for e in events] == ["ABC123"]
    assert (events[0].vehicle_type, events[0].vehicle_colour) == ("car", name)
    assert events[0].vehicle_box is not None
    assert 1 <= calls <= DescribeConfig().max_looks  # not on every frame


def test_by_night_the_type_is_told_and_the_colour_is_not_guessed():
    events, _ = _pass_of(_clip_of((40, 42, 168), night=True))
    assert len(events) == 1
    assert (events[0].vehicle_type, events[0].vehicle_colour) == ("car", None)


def test_description_can_be_turned_off_and_then_needs_no_vehicle_detector():
    assert PipelineConfig().needs_vehicles()
    assert not PipelineConfig().needs_vehicles(video=False)  # photos are not described
    off = PipelineConfig.model_validate({"describe": {"enabled": False}})
    assert not off.needs_vehicles()
    assert off.model_copy(update={"detect": off.detect.model_copy(
        update={"mode": "both"})}).needs_vehicles()
    scene = DrawnScene(_clip_of((40, 42, 168), night=False))
    assert VideoPipeline(Engines(plates=scene.plates, ocr=scene.ocr), off).describer is None


@pytest.mark.models
def test_a_real_cars_type_comes_from_the_vehicle_detector(engines):
    folder = data_dir("plates-eu-dev")
    image = cv2.imread(str(folder / "eu5.jpg"))
    _, x, y, w, h, _ = (folder / "eu5.txt").read_text().split("\t")[:6]
    plate = (float(x), float(y), float(x) + float(w), float(y) + float(h))
    describer = VehicleDescriber(engines.vehicles, DescribeConfig())
    describer.look(image, {1: _read(plate)}, night=False)
    event = PlateEvent("OY09FEU", "OY09 FEU", None, 0.9, 0.0, 1.0, 5, "approaching", track_id=1)
    describer.apply([event])
    assert event.vehicle_type == "car"
    assert event.vehicle_colour == "grey"  # a dark grey hatchback
    box = event.vehicle_box
    assert box is not None and box[0] <= plate[0] and box[2] >= plate[2]


def test_the_nodes_read_records_and_events_say_what_the_vehicle_is(tmp_path):
    config = EdgeConfig.model_validate({"node_id": "n1", "state_dir": str(tmp_path / "s")})
    out = io.StringIO()
    node = EdgeService(config, events_out=out, engines=idle_engines())
    event = PlateEvent("ZZ999ZZ", "ZZ 999 ZZ", None, 0.9, 0.0, 1.0, 5, "approaching",
                       vehicle_type="truck", vehicle_colour="white",
                       vehicle_box=(10.0, 20.0, 300.0, 200.0))
    node.handle_event(CameraConfig(id="lane-1", source="unused.mp4"), event, 1_900_000_000.0)
    details = node.outbox.reads(1)[0]["details"]
    assert (details["vehicle_type"], details["vehicle_colour"]) == ("truck", "white")
    line = json.loads(out.getvalue())
    assert (line["vehicle_type"], line["vehicle_colour"]) == ("truck", "white")


def _counting_detector(calls: list[tuple[int, int]]):  # noqa: ANN202
    def detector(image, *, size=None, confidence=None):  # noqa: ANN001, ANN202
        calls.append(image.shape[:2])
        return Detections(np.array([[0, 0, image.shape[1], image.shape[0]]]), [0.8], [2])
    return detector


def test_passes_due_in_one_frame_share_one_detector_run():
    calls: list[tuple[int, int]] = []
    describer = VehicleDescriber(_counting_detector(calls), DescribeConfig())
    frame = np.full((720, 1280, 3), (150, 110, 40), np.uint8)
    # three cars in a queue, their plates all big enough in the same frame
    describer.look(frame, {1: _read(_plate(300, 90)), 2: _read(_plate(640, 90)),
                           3: _read(_plate(980, 90))}, night=False)
    assert len(calls) == 1 and describer.looks == 3
    for track_id in (1, 2, 3):
        event = PlateEvent("AB123", "AB 123", None, 0.9, 0.0, 1.0, 5, "approaching",
                           track_id=track_id)
        describer.apply([event])
        assert event.vehicle_type == "car"


def test_a_look_waits_once_for_a_frame_not_already_busy():
    calls: list[tuple[int, int]] = []
    describer = VehicleDescriber(_counting_detector(calls), DescribeConfig())
    frame = np.full((720, 1280, 3), (150, 110, 40), np.uint8)
    describer.look(frame, {1: _read(_plate(640, 90))}, night=False, busy=True)
    assert calls == []  # the frame paid for a whole plate search: put off
    describer.look(frame, {1: _read(_plate(640, 92))}, night=False)
    assert len(calls) == 1  # the next read's frame looks
    # a pass put off once looks at its next read even if that frame is busy too
    describer.look(frame, {2: _read(_plate(300, 90))}, night=False, busy=True)
    describer.look(frame, {2: _read(_plate(300, 92))}, night=False, busy=True)
    assert len(calls) == 2


def test_a_pass_of_fragments_is_not_looked_at():
    calls: list[tuple[int, int]] = []
    describer = VehicleDescriber(_counting_detector(calls), DescribeConfig())
    frame = np.full((720, 1280, 3), (150, 110, 40), np.uint8)
    fragment = PlateRead(box=_plate(640, 90), detection_confidence=0.9,
                         plate=PlateText("2", "2", "2", None, 0.9))
    for _ in range(5):
        describer.look(frame, {1: fragment}, night=False)
    assert calls == []
