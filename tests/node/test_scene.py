"""Motion gate and day/night detection on frames made in the test."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from edge.core.types import Frame
from edge.node.config import MotionConfig, NightConfig
from edge.node.scene import MotionGate, NightDetector, _in_window, looks_night


def road(seed: int = 0, brightness: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((360, 640, 3), brightness, np.uint8)
    noise = rng.normal(0, 3, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def test_still_noisy_scene_is_not_motion_but_a_car_is():
    gate = MotionGate(MotionConfig())
    gate.moving(road(0))
    assert not any(gate.moving(road(i)) for i in range(1, 10))
    with_car = road(11)
    with_car[150:250, 200:380] = (30, 30, 200)
    assert gate.moving(with_car)


def test_night_dark_noisy_scene_is_not_motion():
    gate = MotionGate(MotionConfig())
    rng = np.random.default_rng(1)
    frames = [np.clip(rng.normal(20, 8, (360, 640, 3)), 0, 255).astype(np.uint8)
              for _ in range(10)]
    gate.moving(frames[0])
    assert sum(gate.moving(f) for f in frames[1:]) == 0


def colourful(value: int) -> np.ndarray:
    image = np.zeros((120, 160, 3), np.uint8)
    image[:, :80] = (value // 3, value, value // 2)
    image[:, 80:] = (value, value // 2, value // 4)
    return image


def test_night_by_frame_dark_or_monochrome_with_hysteresis():
    detector = NightDetector(NightConfig())
    assert not detector.is_night(colourful(200))
    grey_ir = np.full((120, 160, 3), 150, np.uint8)  # bright but no colour: infrared
    assert [detector.is_night(grey_ir) for _ in range(30)][-1]
    # one colourful frame does not flip it back
    assert detector.is_night(colourful(200))
    assert not all(detector.is_night(colourful(220)) for _ in range(10))


def test_night_is_judged_alike_on_the_gates_small_copy():
    gate = MotionGate(MotionConfig())
    big = lambda image: np.repeat(np.repeat(image, 6, axis=0), 8, axis=1)  # noqa: E731
    for image in (big(colourful(200)), np.full((720, 1280, 3), 150, np.uint8),
                  big(colourful(30)), road(brightness=200)):
        gate.moving(image)
        assert gate.small is not None and gate.small.shape[1] == 160
        on_frame, on_copy = NightDetector(NightConfig()), NightDetector(NightConfig())
        assert on_frame.is_night(image) == on_copy.is_night(gate.small)
        assert on_frame.brightness == pytest.approx(on_copy.brightness, abs=2)
        assert on_frame.saturation == pytest.approx(on_copy.saturation, abs=2)


def test_night_by_clock_and_fixed_modes():
    assert _in_window(dt.time(23, 0), "19:00", "07:00")
    assert _in_window(dt.time(3, 0), "19:00", "07:00")
    assert not _in_window(dt.time(12, 0), "19:00", "07:00")
    assert _in_window(dt.time(12, 0), "09:00", "17:00")
    noon = dt.datetime(2026, 6, 1, 12, 0).timestamp()
    midnight = dt.datetime(2026, 6, 1, 0, 30).timestamp()
    clock = NightDetector(NightConfig(mode="clock"))
    assert not clock.is_night(colourful(0), noon) and clock.is_night(colourful(255), midnight)
    assert NightDetector(NightConfig(mode="night")).is_night(colourful(255))
    assert not NightDetector(NightConfig(mode="day")).is_night(colourful(0))


@pytest.mark.parametrize("image", [
    np.zeros((100, 100), np.uint8),  # grey, no channels
    np.zeros((100, 100, 4), np.uint8),  # BGRA
    np.zeros((100, 100, 3), np.float32),
    np.zeros((4, 4, 3), np.uint8),
])
def test_a_frame_of_the_wrong_shape_is_a_clear_error(image):
    with pytest.raises(ValueError, match="frame image"):
        Frame(image=image, index=0, pts=0.0, wall=0.0)


def test_a_single_photo_is_judged_alone():
    assert looks_night(np.full((90, 160, 3), 25, np.uint8), NightConfig())
    assert looks_night(np.full((90, 160, 3), 180, np.uint8), NightConfig())  # grey: infrared
    assert not looks_night(colourful(200), NightConfig())
