"""Backends are swapped without an ignore: mypy finds every detector and recogniser we have,
the tests' stand-ins among them, fitting the protocols, and refuses one that does not."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.stand_ins import idle_engines, no_plates, no_text

REPO = Path(__file__).resolve().parents[2]

SWAPS = '''
import numpy as np

from benchmarks.backends import EasyOcrRecognizer, UltralyticsPlates
from edge.core.types import Detections, OcrResult
from edge.node.detect.yolo import YoloDetector
from edge.node.engines import Engines
from edge.node.ocr.ppocr import PpOcrRecognizer
from helpers.stand_ins import no_plates, no_text


def onnx(plates: YoloDetector, vehicles: YoloDetector, ocr: PpOcrRecognizer) -> Engines:
    return Engines(plates=plates, vehicles=vehicles, ocr=ocr)


def others(plates: UltralyticsPlates, ocr: EasyOcrRecognizer) -> Engines:
    return Engines(plates=plates, vehicles=plates, ocr=ocr)


def stand_ins() -> Engines:
    return Engines(plates=no_plates, ocr=no_text)


def a_recogniser_taking_a_list(crops: list[np.ndarray]) -> list[OcrResult]:
    return []


def misfit() -> Engines:
    return Engines(plates=no_plates, ocr=a_recogniser_taking_a_list)  # the one error
'''


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (pip install -e '.[dev]')")
def test_every_backend_and_stand_in_fits_the_protocols_and_a_misfit_does_not(tmp_path):
    check = tmp_path / "swaps.py"
    check.write_text(SWAPS)
    env = {**os.environ, "MYPYPATH": str(REPO / "tests"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
                           "--no-error-summary", "--follow-imports=silent", str(check)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    misfit_line = SWAPS.splitlines().index(
        "    return Engines(plates=no_plates, ocr=a_recogniser_taking_a_list)  # the one error") + 1
    assert len(errors) == 1, done.stdout + done.stderr
    assert f"swaps.py:{misfit_line}: error: Argument \"ocr\" to \"Engines\"" in errors[0]
    assert "PlateRecogniser" in errors[0]


def test_the_stand_ins_find_and_read_nothing_and_report_no_versions():
    image = np.zeros((64, 64, 3), np.uint8)
    assert len(no_plates(image, size=320, confidence=0.5)) == 0
    assert [r.text for r in no_text([image, image])] == ["", ""]
    engines = idle_engines()
    assert engines.vehicles is None and engines.versions() == {}

