"""JPEG for evidence: a picture shrunk to a width, or held under a size in bytes."""

from __future__ import annotations

import cv2
import numpy as np

from edge.core.link_protocol import JPEG_MAGIC

_QUALITIES = (85, 70, 55, 40)


def jpeg_of_width(image: np.ndarray, max_width: int, quality: int = 70) -> bytes:
    """A JPEG of `image`, shrunk to `max_width` if wider (its aspect kept)."""
    h, w = image.shape[:2]
    if w > max_width:
        image = cv2.resize(image, (max_width, max(1, round(h * max_width / w))),
                           interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def jpeg_within_bytes(image: np.ndarray, max_bytes: int, *, quality: int = 90) -> bytes:
    """`image` (H x W x 3 BGR) as a JPEG of at most `max_bytes`.

    Lowers the quality first, then halves the size, so a plate crop stays legible as
    long as it can.  Raises ValueError if even a 16-pixel thumbnail does not fit.
    """
    img = image
    while True:
        for q in (quality, *[q for q in _QUALITIES if q < quality]):
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
            if not ok:
                raise ValueError("JPEG encoding failed")
            if buf.nbytes <= max_bytes:
                return buf.tobytes()
        h, w = img.shape[:2]
        if min(h, w) <= 16:
            raise ValueError(f"cannot fit a JPEG in {max_bytes} bytes")
        img = cv2.resize(img, (max(w // 2, 1), max(h // 2, 1)), interpolation=cv2.INTER_AREA)


def fit_jpeg(data: bytes, max_bytes: int) -> bytes:
    """`data` if it fits in `max_bytes`, else the same picture re-encoded to fit.

    Returns b"" when it is not a JPEG that can be decoded: better a hit without a
    picture than no hit.
    """
    if len(data) <= max_bytes:
        return data
    if not data.startswith(JPEG_MAGIC):
        return b""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return b""
    try:
        return jpeg_within_bytes(img, max_bytes, quality=85)
    except ValueError:
        return b""
