"""The two JPEG helpers, each named for what it bounds: the width, or the bytes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.node.jpeg import fit_jpeg, jpeg_of_width, jpeg_within_bytes


def noise(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def decoded(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.mark.parametrize(("hw", "max_width", "out_hw"), [
    ((360, 640), 320, (180, 320)),  # shrunk, its aspect kept
    ((360, 640), 640, (360, 640)),  # as wide already: as it is
    ((100, 200), 800, (100, 200)),  # never enlarged
])
def test_jpeg_of_width_shrinks_to_the_width_and_never_grows(hw, max_width, out_hw):
    assert decoded(jpeg_of_width(noise(*hw), max_width)).shape[:2] == out_hw


def test_jpeg_within_bytes_lowers_quality_then_size_to_fit():
    image = noise(240, 320)
    data = jpeg_within_bytes(image, 20_000)
    assert len(data) <= 20_000
    assert len(jpeg_within_bytes(image, 10**7)) > 20_000  # room enough: best quality
    with pytest.raises(ValueError, match="cannot fit a JPEG in 10 bytes"):
        jpeg_within_bytes(image, 10)


def test_fit_jpeg_keeps_what_fits_shrinks_what_does_not_and_drops_what_is_not_a_jpeg():
    data = jpeg_of_width(noise(240, 320), 320, quality=95)
    assert fit_jpeg(data, len(data)) == data
    smaller = fit_jpeg(data, len(data) // 3)
    assert 0 < len(smaller) <= len(data) // 3 and decoded(smaller).ndim == 3
    assert fit_jpeg(b"\x89PNG" + bytes(100), 50) == b""
