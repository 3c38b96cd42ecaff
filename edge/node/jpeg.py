"""JPEG helpers for hits: encode a picture under a size cap, or shrink one that is over it."""

from __future__ import annotations

import cv2
import numpy as np

from edge.core.link_protocol import JPEG_MAGIC

_QUALITIES = (85, 70, 55, 40)


def encode_jpeg(image: np.ndarray, max_bytes: int, *, quality: int = 90) -> bytes:
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
        return encode_jpeg(img, max_bytes, quality=85)
    except ValueError:
        return b""
