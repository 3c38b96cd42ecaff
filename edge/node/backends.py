"""What a detector or recogniser backend must do: anything that fits can be passed in.

The ONNX backends (`edge.node.detect.yolo`, `edge.node.ocr.ppocr`) are the defaults;
the benchmarks' Ultralytics and EasyOCR adapters and the tests' stand-ins fit the same
protocols, so a backend is swapped without a cast or an ignore.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from edge.core.types import Detections, OcrResult


class PlateDetector(Protocol):
    """Plate boxes in an image (H x W x 3 BGR), in its pixels, with their confidences.

    `size` is the long side of the network's input and `confidence` the lowest score
    kept; None leaves each to the backend's own default.
    """

    def __call__(self, image: np.ndarray, /, *, size: int | None = None,
                 confidence: float | None = None) -> Detections: ...


# The vehicle detector is called the same way and answers the same record (its class ids
# are those of the vehicles it was built to find); the name says which role it plays.
VehicleDetector = PlateDetector


class PlateRecogniser(Protocol):
    """The text of each plate line image, in their order, one batch per call: empty text
    with no confidence where nothing is read."""

    def __call__(self, crops: Sequence[np.ndarray], /) -> list[OcrResult]: ...
