"""Video file and image folder sources, open_source dispatch and credential scrubbing."""

from __future__ import annotations

import io
import logging
import os
import traceback
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.core.status import CameraState
from edge.node.sources import (
    ImageFolderSource,
    LiveSource,
    ScrubbingFilter,
    Source,
    SourceError,
    VideoFileSource,
    open_source,
    scrub_url,
)
from edge.node.sources.base import as_bgr
from edge.node.sources.folder import natural_key

DATA = Path(__file__).parents[3] / "shared/data/video"
SECRET = "S3cr3tPa55"


def level_picture(level: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A flat picture whose brightness identifies it after lossy encoding."""
    return np.full((*size, 3), level, np.uint8)


def write_video(path: Path, levels: list[int], fourcc: str = "MJPG", fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (64, 48))
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc}"
    for level in levels:
        writer.write(level_picture(level))
    writer.release()
    return path


class ScriptedCapture:
    """A capture that replays (ok, image) pairs, for decoder failures no real file
    reliably produces."""

    def __init__(self, reads: list[tuple[bool, np.ndarray | None]], props: dict[int, float]):
        self._reads = list(reads)
        self._props = props
        self._pos_msec = 0.0
        self.released = False

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self._reads:
            return False, None
        self._pos_msec += 40.0
        return self._reads.pop(0)

    def get(self, prop_id: int) -> float:
        if prop_id == cv2.CAP_PROP_POS_MSEC:
            return self._pos_msec
        return self._props.get(prop_id, 0.0)

    def release(self) -> None:
        self.released = True


@pytest.fixture
def small_video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.avi", [10 * i for i in range(12)])


# -- video files -----------------------------------------------------------------------


@pytest.mark.parametrize(("fourcc", "suffix"), [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_video_file_yields_every_frame_with_pts_from_index(tmp_path, fourcc, suffix):
    levels = [20 * i for i in range(10)]
    path = write_video(tmp_path / f"clip{suffix}", levels, fourcc)

    src = open_source(path)
    assert isinstance(src, VideoFileSource) and isinstance(src, Source)
    assert (src.source_id, src.live, src.nominal_fps) == ("clip", False, 10.0)
    frames = list(src)

    assert [f.index for f in frames] == list(range(10))
    assert [f.pts for f in frames] == pytest.approx([i / 10 for i in range(10)])
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [f.image.mean() for f in frames] == pytest.approx(levels, abs=4)
    health = src.health()
    assert (health.state, health.frames, health.skipped) == ("ended", 10, 0)


def test_fps_argument_overrides_the_container_rate(small_video):
    frames = list(open_source(small_video, fps=25.0, source_id="lane-1"))
    assert frames[5].pts == pytest.approx(5 / 25)
    assert frames[0].source_id == "lane-1"


def test_close_mid_file_ends_iteration_and_releases(small_video):
    with open_source(small_video) as src:
        it = iter(src)
        first = [next(it) for _ in range(3)]
    assert [f.index for f in first] == [0, 1, 2]
    assert list(it) == []
    assert src.health().state == "ended"


def test_missing_file_is_a_source_error_naming_it(tmp_path):
    path = tmp_path / "missing.mp4"
    with pytest.raises(SourceError, match="no such file") as err:
        open_source(path)
    assert str(path) in str(err.value)


def test_zero_byte_file_is_a_source_error_naming_it(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty \(0 bytes\)") as err:
        open_source(path)
    assert str(path) in str(err.value)


def test_directory_is_not_a_video_file(tmp_path):
    with pytest.raises(SourceError, match="is a directory"):
        VideoFileSource(tmp_path)


def test_garbage_file_is_a_source_error(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match="not a video") as err:
        open_source(path)
    assert "garbage.mp4" in str(err.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_source_error(small_video):
    small_video.chmod(0)
    try:
        with pytest.raises(SourceError, match="permission denied"):
            open_source(small_video)
    finally:
        small_video.chmod(0o644)


def test_corrupt_frames_mid_file_are_skipped_and_counted(tmp_path, caplog):
    stub = tmp_path / "stub.mp4"
    stub.write_bytes(b"x")  # the capture is scripted; the file only has to exist
    good = level_picture(100)
    reads = [(True, good), (True, good), (False, None), (True, None), (True, good), (True, good)]
    props = {cv2.CAP_PROP_FPS: 10.0, cv2.CAP_PROP_FRAME_COUNT: 6.0}
    cap = ScriptedCapture(reads, props)

    with caplog.at_level(logging.WARNING, logger="edge.node.sources"):
        src = open_source(stub, capture_factory=lambda: cap)
        frames = list(src)

    assert [f.index for f in frames] == [0, 1, 4, 5]
    assert frames[2].pts == pytest.approx(0.4)
    assert src.health().skipped == 2
    assert "skipped 2 undecodable frame(s)" in caplog.text
    assert cap.released


def test_a_file_shorter_than_its_header_ends_with_a_message_that_says_so(tmp_path, caplog):
    # the real dashcam clip's header gives 420 frames and it holds 271: the reads after
    # them fail, which is a file cut short or an overstated header, not corrupt frames
    stub = tmp_path / "stub.mp4"
    stub.write_bytes(b"x")
    good = level_picture(100)
    props = {cv2.CAP_PROP_FPS: 10.0, cv2.CAP_PROP_FRAME_COUNT: 10.0}
    cap = ScriptedCapture([(True, good)] * 3, props)

    with caplog.at_level(logging.WARNING, logger="edge.node.sources"):
        src = open_source(stub, capture_factory=lambda: cap, max_bad_reads=4)
        frames = list(src)

    assert [f.index for f in frames] == [0, 1, 2]
    health = src.health()
    assert health.state == CameraState.ENDED and health.skipped == 0
    assert "ended at frame 3, 7 short of the 10 its header gives" in health.last_error
    assert "undecodable" not in caplog.text and "cut short" in caplog.text


def test_a_bad_first_frame_is_skipped_but_no_good_frame_at_all_is_an_error(tmp_path):
    stub = tmp_path / "stub.avi"
    stub.write_bytes(b"x")
    props = {cv2.CAP_PROP_FPS: 10.0}
    good = level_picture(60)
    cap = ScriptedCapture([(False, None), (True, good), (True, good)], props)
    src = open_source(stub, capture_factory=lambda: cap)
    assert [f.index for f in src] == [1, 2]
    assert src.health().skipped == 1

    never = ScriptedCapture([(True, None)] * 40, props)
    with pytest.raises(SourceError, match="no decodable video frames"):
        open_source(stub, capture_factory=lambda: never, max_bad_reads=3)
    assert never.released


def test_corrupt_bytes_in_a_real_file_are_not_fatal(tmp_path):
    path = write_video(tmp_path / "clip.avi", [10 * i for i in range(12)])
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) >= 12
    start = starts[6]  # the seventh JPEG of the MJPG stream
    data[start : start + 200] = bytes(200)
    path.write_bytes(bytes(data))

    frames = list(open_source(path))
    assert 10 <= len(frames) <= 12
    assert frames[-1].index == 11


def test_pts_falls_back_to_decoder_position_without_fps(tmp_path):
    stub = tmp_path / "stub.mkv"
    stub.write_bytes(b"x")
    cap = ScriptedCapture([(True, level_picture(50))] * 3, {cv2.CAP_PROP_FPS: 0.0})
    src = open_source(stub, capture_factory=lambda: cap)
    assert src.nominal_fps is None
    assert [f.pts for f in src] == pytest.approx([0.04, 0.08, 0.12])


def test_grey_and_bgra_frames_become_bgr(tmp_path):
    stub = tmp_path / "stub.avi"
    stub.write_bytes(b"x")
    grey = np.full((40, 40), 77, np.uint8)
    bgra = np.zeros((40, 40, 4), np.uint8)
    bgra[..., 2] = 200
    cap = ScriptedCapture([(True, grey), (True, bgra)], {cv2.CAP_PROP_FPS: 5.0})
    frames = list(open_source(stub, capture_factory=lambda: cap))
    assert [f.image.shape for f in frames] == [(40, 40, 3), (40, 40, 3)]
    assert frames[0].image[0, 0].tolist() == [77, 77, 77]
    assert frames[1].image[0, 0].tolist() == [0, 0, 200]


def test_as_bgr_rejects_what_is_not_a_picture():
    assert as_bgr(None) is None
    assert as_bgr(np.zeros((0, 0, 3), np.uint8)) is None
    assert as_bgr(np.zeros((4, 4, 3), np.uint8)) is None  # smaller than a Frame allows
    assert as_bgr(np.zeros((16, 16, 3), np.float32)) is None
    assert as_bgr(np.full((16, 16), 65535, np.uint16))[0, 0].tolist() == [255, 255, 255]


def test_real_video_if_present():
    path = DATA / "tollbooth-vn-720p.mp4"
    if not path.exists():
        pytest.skip(f"{path} not present (the shared data set is not checked out)")
    with open_source(path) as src:
        assert src.nominal_fps and src.nominal_fps > 0
        frames = [f for _, f in zip(range(20), src, strict=False)]
    assert len(frames) == 20
    assert all(f.image.shape == (720, 1280, 3) for f in frames)
    assert [f.pts for f in frames] == pytest.approx([i / src.nominal_fps for i in range(20)])


# -- image folders ---------------------------------------------------------------------


def test_folder_is_read_in_natural_order_at_the_given_rate(tmp_path):
    for name, level in [("img10.png", 100), ("img2.png", 20), ("img1.png", 10), ("IMG3.png", 30)]:
        cv2.imwrite(str(tmp_path / name), level_picture(level))
    (tmp_path / "notes.txt").write_text("not a picture")

    src = open_source(tmp_path)
    assert isinstance(src, ImageFolderSource) and src.nominal_fps == 10.0
    frames = list(src)
    assert [int(f.image.mean()) for f in frames] == [10, 20, 30, 100]
    assert [f.pts for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert src.health().state == "ended"

    assert [f.pts for f in open_source(tmp_path, fps=4)] == pytest.approx([0, 0.25, 0.5, 0.75])


def test_natural_key():
    names = ["f10.jpg", "f9.jpg", "F1.jpg", "f1b.jpg", "a.jpg"]
    assert sorted(names, key=natural_key) == ["a.jpg", "F1.jpg", "f1b.jpg", "f9.jpg", "f10.jpg"]


def test_folder_converts_grey_and_bgra_images(tmp_path):
    cv2.imwrite(str(tmp_path / "0.png"), np.full((20, 30), 90, np.uint8))
    bgra = np.zeros((20, 30, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 180, 255
    cv2.imwrite(str(tmp_path / "1.png"), bgra)
    frames = list(open_source(tmp_path))
    assert [f.image.shape for f in frames] == [(20, 30, 3)] * 2
    assert frames[0].image[0, 0].tolist() == [90, 90, 90]
    assert frames[1].image[0, 0].tolist() == [180, 0, 0]


def test_unreadable_image_is_skipped_with_a_warning(tmp_path, caplog):
    cv2.imwrite(str(tmp_path / "a1.jpg"), level_picture(40))
    (tmp_path / "a2.jpg").write_bytes(b"definitely not a jpeg")
    cv2.imwrite(str(tmp_path / "a3.jpg"), level_picture(80))
    src = open_source(tmp_path)
    with caplog.at_level(logging.WARNING, logger="edge.node.sources"):
        frames = list(src)
    assert [f.index for f in frames] == [0, 2]  # index keeps the image's place
    assert "a2.jpg" in caplog.text
    assert src.health().skipped == 1


def test_folder_without_images_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        open_source(tmp_path)
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(SourceError, match=str(tmp_path)):
        open_source(tmp_path)


# -- open_source dispatch --------------------------------------------------------------


def test_unknown_option_is_named(small_video, tmp_path):
    with pytest.raises(TypeError, match="buffr_size"):
        open_source(small_video, buffr_size=3)
    cv2.imwrite(str(tmp_path / "0.png"), level_picture(1))
    with pytest.raises(TypeError, match="stall_timeout"):
        open_source(tmp_path, stall_timeout=3)


def test_unsupported_scheme_is_a_source_error():
    with pytest.raises(SourceError, match="unsupported scheme 'ftp'"):
        open_source(f"ftp://user:{SECRET}@host/video.mp4")


class _NeverOpens:
    def isOpened(self) -> bool:
        return False

    def read(self) -> tuple[bool, None]:
        return False, None

    def get(self, prop_id: int) -> float:
        return 0.0

    def release(self) -> None:
        pass


@pytest.mark.parametrize("spec", ["usb:0", "/dev/video0", "rtsp://cam.local/main"])
def test_live_specs_make_live_sources(spec):
    src = open_source(spec, capture_factory=_NeverOpens, backoff_initial=60, backoff_max=60,
                      fps=25)
    try:
        assert isinstance(src, LiveSource) and isinstance(src, Source)
        assert (src.live, src.nominal_fps, src.source_id) == (True, 25, spec)
    finally:
        src.close()
    assert src.health().state == "ended"


# -- credentials -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://admin:pw@10.0.0.1:554/s", "rtsp://***@10.0.0.1:554/s"),
        ("rtsps://admin:p@ss/w:rd@cam/s", "rtsps://***@cam/s"),
        ("open http://token@cam/x failed", "open http://***@cam/x failed"),
        ("https://cam/x?user=a&password=pw&fps=5", "https://cam/x?user=a&password=***&fps=5"),
        ("a rtsp://u:p@h1/x, b rtsp://v:q@h2/y", "a rtsp://***@h1/x, b rtsp://***@h2/y"),
        ("rtsp://10.0.0.1:554/stream1", "rtsp://10.0.0.1:554/stream1"),
        ("no url here: x=1", "no url here: x=1"),
    ],
)
def test_scrub_url(text, expected):
    assert scrub_url(text) == expected


def test_scrubbing_filter_cleans_message_args_and_traceback():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ScrubbingFilter())
    logger = logging.getLogger("test_sources.scrub")
    logger.addHandler(handler)
    logger.propagate = False
    url = f"rtsp://admin:{SECRET}@10.0.0.9/live"
    try:
        logger.warning("opening %s", url)
        logger.warning(f"inline {url}")
        logger.warning("mapping %(u)s", {"u": url})
        try:
            raise ConnectionError(f"cannot reach {url}")
        except ConnectionError:
            logger.exception("stream failed")
        logger.warning("plain %d", 7)
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert SECRET not in out
    assert out.count("rtsp://***@10.0.0.9/live") == 4
    assert "ConnectionError" in out and "plain 7" in out


def test_source_error_never_carries_credentials():
    with pytest.raises(SourceError) as err:
        open_source(f"rtsp://admin:{SECRET}@/stream")
    assert "no host" in str(err.value)
    assert SECRET not in "".join(traceback.format_exception(err.value))
    assert SECRET not in str(SourceError(f"x rtsp://a:{SECRET}@h/ y"))
