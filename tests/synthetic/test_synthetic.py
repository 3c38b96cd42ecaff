"""Synthetic drive-by clips: plates, camera, scene, sources and photo approaches; and, with
the real models, that the pipeline reads the clip's plates once each."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from edge.core import plates
from edge.node.sources import Source
from edge.synthetic.drive_by import (
    STYLES,
    Camera,
    SyntheticDriveBy,
    compact,
    drive_by_from_photo,
    fit_photo,
    headlight_glare,
    photo_approach,
    plate_text,
    render_plate,
)

# A quarter-size camera with the same field of view: the same scene, rendered fast.
SMALL = Camera(width=320, height=180, focal=550.0)


def small_clip(seed: int = 0, **options: object) -> SyntheticDriveBy:
    return SyntheticDriveBy(
        [("ABC 123", "LT", False), ("WX 12345", "PL", False), ("CA 1234 AB", "BG", True)],
        seed=seed,
        camera=SMALL,
        **options,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------- plates


@pytest.mark.parametrize("country", [c for c in STYLES if c != "NL"])
def test_plate_texts_fit_their_countrys_format(country: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        text = plate_text(country, rng)
        found = plates.country_candidates(text)
        assert (country, compact(text), 0) in found, (text, found)


def test_plate_texts_are_deterministic_for_a_seed() -> None:
    a = [plate_text("BG", np.random.default_rng(5)) for _ in range(3)]
    b = [plate_text("BG", np.random.default_rng(5)) for _ in range(3)]
    assert a == b


def test_compact_drops_separators() -> None:
    assert compact("ca 1234-ab") == "CA1234AB"


def test_plate_has_eu_proportions_band_and_dark_characters() -> None:
    img = render_plate("ABC 123", "LT", px_per_mm=2.0)
    assert img.shape == (220, 1040, 3) and img.dtype == np.uint8
    b, g, r = img[110, 30].astype(int)  # inside the blue band, below the stars
    assert b > 100 and b > r + 60
    text_area = img[40:180, 120:1000]
    assert (text_area.max(axis=2) < 80).mean() > 0.15  # black ink
    assert (text_area.min(axis=2) > 200).mean() > 0.4  # white sheet


def test_yellow_and_national_variants() -> None:
    nl = render_plate("AB-123-C", "NL", px_per_mm=1.0)
    b, g, r = np.median(nl[10:100, 60:510].reshape(-1, 3), axis=0)  # mostly background
    assert r > 200 and g > 150 and b < 100
    ua = render_plate("AA 1234 BB", "UA", px_per_mm=1.0)
    flag_top, flag_bottom = ua[25, 22].astype(int), ua[38, 22].astype(int)
    assert flag_top[0] > flag_top[2] + 60  # blue over yellow
    assert flag_bottom[2] > 200 and flag_bottom[0] < 80


def test_plate_dirt_only_darkens() -> None:
    clean = render_plate("ABC 123", "LT", px_per_mm=1.0)
    dirty = render_plate("ABC 123", "LT", px_per_mm=1.0, dirt=1.0, rng=np.random.default_rng(1))
    assert (dirty.astype(int) <= clean.astype(int) + 1).all()
    assert dirty.mean() < clean.mean()


# ---------------------------------------------------------------------------- camera


def test_camera_ground_and_projection_agree() -> None:
    cam = Camera()
    X, Z = cam.ground()
    for v, u in ((10, 20), (360, 640), (700, 1200)):
        point = np.array([[X[v, u], 0.0, Z[v, u]]])
        assert np.allclose(cam.project(point)[0], (u + 0.5, v + 0.5), atol=1e-2)


def test_camera_frames_plates_at_anpr_sizes() -> None:
    cam = Camera()
    widths = []
    for z in (24.0, 8.5):
        left, right = cam.project(np.array([[-0.26, 0.46, z], [0.26, 0.46, z]]))
        widths.append(right[0] - left[0])
    assert 40 < widths[0] < 60 and 100 < widths[1] < 140


# ---------------------------------------------------------------------------- the clip


def test_clip_is_a_source_of_valid_frames() -> None:
    clip = small_clip()
    assert isinstance(clip, Source) and not clip.live and clip.nominal_fps == 15.0
    frames = list(clip)
    assert len(frames) == len(clip) == clip.frame_count
    for i, frame in enumerate(frames):
        assert frame.index == i and frame.pts == pytest.approx(i / 15.0)
        assert frame.image.shape == (180, 320, 3) and frame.image.dtype == np.uint8
        assert frame.source_id == clip.source_id
    assert clip.health().state == "ended" and clip.health().frames == len(frames)


def test_truth_frame_ranges_lie_inside_the_clip_with_the_plate_in_view() -> None:
    clip = small_clip()
    assert [t.plate for t in clip.truth] == ["ABC123", "WX12345", "CA1234AB"]
    assert [t.night for t in clip.truth] == [False, False, True]
    for k, t in enumerate(clip.truth):
        assert 0 <= t.first_frame < t.last_frame < clip.frame_count
        for index in (t.first_frame, t.last_frame):
            x1, y1, x2, y2 = clip.plate_box(k, index)
            assert 0 <= x1 < x2 <= SMALL.width and 0 <= y1 < y2 <= SMALL.height
        # the plate grows as the car comes closer
        first, last = clip.plate_box(k, t.first_frame), clip.plate_box(k, t.last_frame)
        assert last[2] - last[0] > 1.8 * (first[2] - first[0])


def test_day_is_colour_and_night_is_dark_monochrome() -> None:
    clip = small_clip()
    day = clip.render(clip.truth[0].last_frame)
    night = clip.render(clip.truth[2].last_frame)
    hsv_day = cv2.cvtColor(day, cv2.COLOR_BGR2HSV)
    assert hsv_day[..., 1].mean() > 15  # a colour camera sees tinted asphalt and grass
    assert (night[..., 0] == night[..., 1]).all() and (night[..., 1] == night[..., 2]).all()
    assert night.mean() < 70 < day.mean()
    # the retro-reflective plate is the bright thing of the night scene
    x1, y1, x2, y2 = (round(v) for v in clip.plate_box(2, clip.truth[2].last_frame))
    assert night[y1:y2, x1:x2].mean() > 2.5 * night.mean()


def test_rendering_is_deterministic_for_a_seed() -> None:
    a, b, c = small_clip(seed=4), small_clip(seed=4), small_clip(seed=5)
    index = a.truth[1].first_frame + 3
    assert np.array_equal(a.render(index), b.render(index))
    assert not np.array_equal(a.render(index), c.render(index))
    assert SyntheticDriveBy.default(3).truth == SyntheticDriveBy.default(3).truth


def test_default_clip_mixes_day_night_lanes_and_overlaps() -> None:
    clip = SyntheticDriveBy.default(0)
    assert (clip.camera.width, clip.camera.height, clip.fps) == (1280, 720, 15.0)
    assert 6 <= len(clip.truth) <= 8
    assert {t.night for t in clip.truth} == {False, True}
    assert len({t.plate for t in clip.truth}) == len(clip.truth)
    assert len({v.lane for v in clip.vehicles}) == 2
    spans = sorted((t.first_frame, t.last_frame) for t in clip.truth)
    assert any(b[0] <= a[1] for a, b in zip(spans, spans[1:], strict=False))


def test_close_stops_iteration() -> None:
    clip = small_clip()
    seen = 0
    for _ in clip:
        seen += 1
        if seen == 3:
            clip.close()
    assert seen == 3 and clip.health().state == "ended"


def test_bad_passes_are_refused() -> None:
    with pytest.raises(ValueError, match="country 'XX'"):
        SyntheticDriveBy([("ABC 123", "XX", False)])
    with pytest.raises(ValueError, match="at least one"):
        SyntheticDriveBy([])


def test_write_video_round_trips(tmp_path) -> None:
    clip = SyntheticDriveBy([("ABC 123", "LT", False)], camera=SMALL, jpeg_quality=None)
    path = clip.write_video(tmp_path / "clip.mp4")
    cap = cv2.VideoCapture(str(path))
    try:
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == SMALL.width
        assert int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == SMALL.height
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15.0, abs=0.1)
        count = 0
        while cap.read()[0]:
            count += 1
    finally:
        cap.release()
    assert count == clip.frame_count


# ---------------------------------------------------------------------------- from a photo


def fake_photo() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    rng = np.random.default_rng(0)
    photo = rng.integers(60, 140, (300, 400, 3), dtype=np.uint8)
    plate = cv2.resize(render_plate("ABC 123", "LT"), (130, 28), interpolation=cv2.INTER_AREA)
    photo[200:228, 135:265] = plate
    return photo, (135, 200, 265, 228)


def test_photo_approach_grows_into_place() -> None:
    photo, box = fake_photo()
    seq = photo_approach(photo, box, frames=6, seed=1)
    assert len(seq) == 6
    for f in seq:
        assert f.image.shape == photo.shape and f.image.dtype == np.uint8
        x1, y1, x2, y2 = f.plate_box
        assert 0 <= x1 < x2 <= 400 and 0 <= y1 < y2 <= 300
    widths = [f.plate_box[2] - f.plate_box[0] for f in seq]
    assert widths == sorted(widths) and widths[0] == pytest.approx(0.45 * 130, rel=0.01)
    assert np.allclose(seq[-1].plate_box, box, atol=1e-6)
    assert seq[0].plate_box[1] < box[1]  # it comes from further up the picture


def test_photo_approach_is_deterministic_and_night_is_grey() -> None:
    photo, box = fake_photo()
    a = drive_by_from_photo(photo, box, frames=3, seed=2)
    b = drive_by_from_photo(photo, box, frames=3, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    night = drive_by_from_photo(photo, box, frames=3, night=True, seed=2)[-1]
    assert np.abs(night[..., 0].astype(int) - night[..., 2]).max() <= 3  # JPEG's chroma
    x1, y1, x2, y2 = box
    assert night[y1:y2, x1:x2].mean() > 2 * night.mean()


def test_photo_approach_at_1080p_keeps_the_plate_in_place() -> None:
    photo, box = fake_photo()
    fitted, fbox = fit_photo(photo, box, (1920, 1080))
    assert fitted.shape == (1080, 1920, 3)
    assert fbox == pytest.approx((240 + 135 * 3.6, 200 * 3.6, 240 + 265 * 3.6, 228 * 3.6))
    seq = photo_approach(photo, box, frames=4, seed=1, size=(1920, 1080))
    assert all(f.image.shape == (1080, 1920, 3) for f in seq)
    assert np.allclose(seq[-1].plate_box, fbox, atol=1e-6)
    x1, y1, x2, y2 = (round(v) for v in fbox)
    got, want = (img[y1:y2, x1:x2].astype(np.float32).ravel() for img in (seq[-1].image, fitted))
    assert np.corrcoef(got, want)[0, 1] > 0.9  # the plate, blurred and noisy, where it was


def test_headlight_glare_burns_out_beside_the_plate_and_spills_over_it() -> None:
    photo, box = fake_photo()
    plain = photo_approach(photo, box, frames=2, night=True, seed=4)
    lit = photo_approach(photo, box, frames=2, night=True, seed=4, glare=True)
    x1, y1, x2, y2 = box
    lamp_x, lamp_y = round((x1 + x2) / 2 + 1.3 * (x2 - x1)), round((y1 + y2) / 2 - 0.4 * 130)
    assert lit[-1].image[lamp_y, lamp_x].min() >= 235 > plain[-1].image[lamp_y, lamp_x].max()
    right_end = (slice(y1, y2), slice(x2 - 20, x2))
    assert lit[-1].image[right_end].mean() > plain[-1].image[right_end].mean() + 20
    assert lit[-1].plate_box == plain[-1].plate_box
    frame = np.zeros((50, 50, 3), np.float32)
    headlight_glare(frame, (400, 400, 500, 420))  # lamps out of the frame: nothing happens
    assert not frame.any()


def test_photo_approach_refuses_a_box_outside_the_photo() -> None:
    photo, _ = fake_photo()
    with pytest.raises(ValueError, match="not inside"):
        photo_approach(photo, (350, 10, 450, 40))


# ---------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def real_engines():
    from edge.node.models import ModelError, load_manifest

    try:
        load_manifest().path("plates")
    except ModelError as exc:
        pytest.skip(f"models not prepared ({exc}); run: make models")
    from edge.node.engines import Engines

    return Engines.load()


@pytest.mark.models
def test_the_pipeline_reads_a_short_default_clip_once_per_pass(real_engines) -> None:
    from edge.node.config import PipelineConfig
    from edge.node.pipeline import VideoPipeline
    from edge.node.replay import replay_events
    from edge.synthetic.demo import match_event

    clip = SyntheticDriveBy.default(0, vehicles=4, night=2)
    started = time.perf_counter()
    events = list(replay_events(clip, VideoPipeline(real_engines, PipelineConfig(), "test")))
    elapsed = time.perf_counter() - started
    per_pass: dict[int, list[str]] = {}
    for event in events:
        index = match_event(event, clip.truth, clip.fps)
        assert index is not None, f"event {event.text} while no plate was in view"
        per_pass.setdefault(index, []).append(event.text)
    right = [i for i, t in enumerate(clip.truth) if t.plate in per_pass.get(i, [])]
    summary = f"truth {[t.plate for t in clip.truth]}, events {per_pass}, {elapsed:.1f} s"
    assert len(right) >= len(clip.truth) - 1, summary
    assert any(clip.truth[i].night for i in right), summary
    assert all(len(texts) == 1 for texts in per_pass.values()), summary
