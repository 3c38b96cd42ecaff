"""Model manifest: missing or corrupt model files are clear errors that name the fix."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edge.node.detect.yolo import YoloDetector
from edge.node.models import (
    FIX_COMMAND,
    REPO_MODELS_DIR,
    ModelError,
    load_manifest,
    models_dir,
    prepare,
    sha256_file,
)


@pytest.fixture()
def prepared_copy(tmp_path):
    source = models_dir()
    manifest = load_manifest(source)
    try:
        manifest.path("ocr-ppocrv6-small")
        manifest.path("plates")
    except ModelError as exc:
        pytest.skip(f"models not prepared: {exc}")
    for name in ("manifest.toml", "prepared.json", "ocr-ppocrv6-small.onnx", "plates-yolov8n.onnx"):
        shutil.copy(source / name, tmp_path / name)
    return tmp_path


def test_manifest_lists_sources_hashes_and_licences():
    manifest = load_manifest()
    for name in ("vehicles", "plates", "ocr-ppocrv6-small"):
        spec = manifest.spec(name)
        assert spec.package and spec.version and len(spec.sha256) == 64 and spec.licence
        assert spec.default
    with pytest.raises(ModelError, match="unknown model"):
        manifest.spec("nope")


def test_missing_model_names_the_command(tmp_path):
    shutil.copy(models_dir() / "manifest.toml", tmp_path / "manifest.toml")
    with pytest.raises(ModelError) as err:
        load_manifest(tmp_path).path("plates")
    assert "missing" in str(err.value) and FIX_COMMAND in str(err.value)


def test_corrupt_model_fails_its_hash(prepared_copy):
    for name, file in (("ocr-ppocrv6-small", "ocr-ppocrv6-small.onnx"),
                       ("plates", "plates-yolov8n.onnx")):
        path = prepared_copy / file
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ModelError) as err:
            load_manifest(prepared_copy).path(name)
        assert "fails its hash" in str(err.value) and FIX_COMMAND in str(err.value)


def test_truncated_model_is_refused_by_hash_before_loading(prepared_copy):
    path = prepared_copy / "ocr-ppocrv6-small.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError, match="fails its hash"):
        load_manifest(prepared_copy).path("ocr-ppocrv6-small")


def test_unreadable_prepared_record_is_an_error(prepared_copy):
    (prepared_copy / "prepared.json").write_text("{not json")
    with pytest.raises(ModelError, match="prepared.json"):
        load_manifest(prepared_copy).path("plates")


def test_versions_are_short_hashes():
    versions = load_manifest().versions()
    assert all(len(v) == 12 for v in versions.values())


def test_the_int8_plate_detector_is_prepared_deterministically(prepared_copy):
    pytest.importorskip("onnx", reason="quantising needs onnx (a dependency)")
    manifest_text = (REPO_MODELS_DIR / "manifest.toml").read_text()
    assert "calibration_frames = 24" in manifest_text
    # fewer calibration frames keep the test short; the recipe is the same
    (prepared_copy / "manifest.toml").write_text(
        manifest_text.replace("calibration_frames = 24", "calibration_frames = 3"))
    hashes = []
    for _ in range(2):
        (prepared_copy / "plates-yolov8n-int8.onnx").unlink(missing_ok=True)
        path = prepare(["plates-int8"], directory=prepared_copy)["plates-int8"]
        hashes.append(sha256_file(path))
        record = json.loads((prepared_copy / "prepared.json").read_text())
        entry = record["files"]["plates-yolov8n-int8.onnx"]
        assert entry["sha256"] == hashes[-1] and entry["source"] == "plates"
        assert entry["source_sha256"] == sha256_file(prepared_copy / "plates-yolov8n.onnx")
    assert hashes[0] == hashes[1]
    manifest = load_manifest(prepared_copy)
    assert manifest.path("plates-int8") == path  # recorded: it passes its hash check
    detector = YoloDetector(path)
    found = detector(np.full((360, 640, 3), 114, np.uint8))
    assert len(found) == 0  # an empty grey frame: runs, finds nothing
    # a file an older recipe made is made again, though it passes its hash check
    assert entry["recipe"] == manifest.spec("plates-int8").recipe >= 2
    entry["recipe"] = 1
    (prepared_copy / "prepared.json").write_text(json.dumps(record))
    path.write_bytes(b"an int8 model of an older recipe")
    record["files"]["plates-yolov8n-int8.onnx"]["sha256"] = sha256_file(path)
    (prepared_copy / "prepared.json").write_text(json.dumps(record))
    prepare(["plates-int8"], directory=prepared_copy)
    assert sha256_file(path) == hashes[0]
