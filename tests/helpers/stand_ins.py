"""Stand-in backends for tests: they fit the detector and recogniser protocols as they are."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.core.types import Detections, OcrResult
from edge.node.engines import Engines


def no_plates(image: np.ndarray, *, size: int | None = None,
              confidence: float | None = None) -> Detections:
    """A detector that finds nothing."""
    return Detections.empty()


def no_text(crops: Sequence[np.ndarray]) -> list[OcrResult]:
    """A recogniser that reads nothing in any crop."""
    return [OcrResult("", 0.0, ()) for _ in crops]


def idle_engines() -> Engines:
    """Engines for a node whose test runs no camera: nothing is found, nothing read, and
    no model versions to report."""
    return Engines(plates=no_plates, ocr=no_text)
