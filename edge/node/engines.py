"""The models a process runs, shared by its cameras: the ONNX defaults or any backends given."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edge.node.backends import PlateDetector, PlateRecogniser, VehicleDetector
from edge.node.detect.yolo import YoloDetector
from edge.node.models import Manifest, load_manifest
from edge.node.ocr.ppocr import PpOcrRecognizer

log = logging.getLogger(__name__)

VEHICLE_CLASSES = (2, 3, 5, 7)  # COCO car, motorcycle, bus, truck
# the vehicle detector taking any input size, made from the fixed one at preparation
DYNAMIC_VEHICLES = "vehicles-dynamic"
DEFAULT_OCR = "ocr-ppocrv6-small"
DEFAULT_PLATES = "plates"  # what detect.model defaults to


@dataclass(frozen=True)
class Engines:
    """A plate detector, a recogniser and, for the modes that look inside vehicles first, a
    vehicle detector. The ONNX sessions behind `load` are thread-safe, so one set serves
    every camera of a process.

    `manifest`, when the models came from one, gives their versions to heartbeats and
    benchmark results.
    """

    plates: PlateDetector
    ocr: PlateRecogniser
    vehicles: VehicleDetector | None = None
    ocr_model: str = ""
    manifest: Manifest | None = None

    @classmethod
    def load(cls, manifest: Manifest | None = None, *, ocr_model: str = DEFAULT_OCR,
             vehicles: bool = False, threads: int | None = None,
             plate_model: str = DEFAULT_PLATES) -> Engines:
        """The ONNX models of the manifest (the default one when None), warmed up."""
        m = manifest or load_manifest()
        engines = cls(
            plates=YoloDetector(m.path(plate_model), classes=None, threads=threads),
            vehicles=(YoloDetector(m.path(vehicle_model(m)), classes=VEHICLE_CLASSES,
                                   threads=threads) if vehicles else None),
            ocr=PpOcrRecognizer(m.path(ocr_model), dictionary=m.dictionary_path(ocr_model),
                                threads=threads),
            ocr_model=ocr_model,
            manifest=m,
        )
        engines.warm_up()
        return engines

    def warm_up(self) -> None:
        """First runs allocate; do it at load, not on the first vehicle."""
        blank = np.full((360, 640, 3), 114, np.uint8)
        self.plates(blank)
        if self.vehicles is not None:
            self.vehicles(blank)
        self.ocr([blank[:48, :200]])

    def versions(self) -> dict[str, str]:
        """Model name -> short hash of each prepared file; none for models not from a
        manifest."""
        return self.manifest.versions() if self.manifest is not None else {}


def vehicle_model(manifest: Manifest) -> str:
    """The vehicle detector to load: the one taking any input size where it was prepared
    (a look at a plate's window then costs a window at describe.size), else the fixed
    640x640 one the manifest ships. A prepared file that fails its hash is an error."""
    spec = manifest.models.get(DYNAMIC_VEHICLES)
    if spec is not None and (manifest.directory / spec.file).is_file():
        return DYNAMIC_VEHICLES
    log.warning("model %s is not prepared: each vehicle look runs the whole 640x640 "
                "detector (anpr-edge prepare-models makes it)", DYNAMIC_VEHICLES)
    return "vehicles"
