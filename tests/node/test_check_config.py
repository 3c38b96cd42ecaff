"""`anpr-edge check-config FILE`: each check's line, and an exit status that says which failed.

Models are small stand-in files under a manifest of their own (the check is about
presence and hashes, not about what the files hold); the collector is a real one on
127.0.0.1, with real CURVE keys and an allow-list.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from helpers.link import free_port, make_keys, start_collector

from edge.cli import main
from edge.node.check_config import EXIT_COLLECTOR, EXIT_CONFIG, EXIT_KEYS, EXIT_MODELS, EXIT_OK

FILES = {"plates": ("plates.onnx", b"a plate detector"),
         "plates-int8": ("plates-int8.onnx", b"the plate detector in int8"),
         "vehicles": ("vehicles.onnx", b"a vehicle detector"),
         "ocr-ppocrv6-small": ("ocr.onnx", b"a text recogniser")}


def fake_models(root: Path) -> Path:
    """A manifest naming small files, with their hashes; the plates ones 'exported'."""
    models = root / "models"
    models.mkdir()
    manifest, prepared = [], {}
    for name, (file, body) in FILES.items():
        (models / file).write_bytes(body)
        digest = hashlib.sha256(body).hexdigest()
        export = 'export = "ultralytics-onnx"\n' if name.startswith("plates") else ""
        manifest.append(
            f'[models.{name}]\ndescription = "test"\npackage = "p"\nversion = "1"\n'
            f'member = "m"\nsha256 = "{digest}"\nfile = "{file}"\nlicence = "x"\n'
            f'kind = "k"\ninput_size = 1\n{export}')
        prepared[file] = {"model": name, "sha256": digest}
    (models / "manifest.toml").write_text("\n".join(manifest))
    (models / "prepared.json").write_text(json.dumps({"files": prepared}))
    return models


def write_config(root: Path, extra: str = "", source: str | None = None) -> Path:
    """A node with one camera: a folder holding one picture, unless `source` says."""
    if source is None:
        pictures = root / "pictures"
        pictures.mkdir(exist_ok=True)
        cv2.imwrite(str(pictures / "0001.png"), np.full((48, 64, 3), 128, np.uint8))
        source = str(pictures)
    path = root / "edge.yaml"
    path.write_text(
        f"node_id: edge-7\nstate_dir: {root / 'state'}\nmodels_dir: {root / 'models'}\n"
        f"cameras:\n  - id: north\n    source: {source}\n" + extra)
    return path


def check(capsys, path: Path, *args: str) -> tuple[int, dict[str, str]]:
    code = main(["check-config", str(path), *args])
    lines = capsys.readouterr().out.splitlines()
    found = {line.split()[0]: line for line in lines if line and not line[0].isspace()}
    # a camera's own line, indented under `cameras`: "camera ID" -> line
    found |= {" ".join(line.split()[1:3]).rstrip(":"): line for line in lines
              if line.startswith(" ") and line.split()[1:2] == ["camera"]}
    return code, found


@pytest.fixture
def node(tmp_path):
    fake_models(tmp_path)
    return tmp_path


def test_a_good_config_without_a_collector_passes(node, capsys):
    code, lines = check(capsys, write_config(node))
    assert code == EXIT_OK
    assert "ok" in lines["config"] and "edge-7" in lines["config"] and "north" in lines["config"]
    assert lines["models"].split()[1] == "ok" and "plates" in lines["models"]
    assert lines["keys"].split()[1] == "skip" and lines["collector"].split()[1] == "skip"
    assert lines["cameras"].split()[1] == "ok" and "1 of 1 gave a picture" in lines["cameras"]
    assert "ok" in lines["camera north"] and "64x48 picture" in lines["camera north"]


def test_an_unknown_key_is_an_error_that_names_it(node, capsys):
    path = write_config(node, "health:\n  metrics_prot: 9100\n")
    code, lines = check(capsys, path)
    assert code == EXIT_CONFIG == 2
    assert "FAIL" in lines["config"] and "health.metrics_prot" in lines["config"]
    assert "Extra inputs are not permitted" in lines["config"]
    assert all(lines[n].split()[1] == "skip" for n in ("models", "keys", "collector",
                                                       "cameras"))


def test_a_model_that_fails_its_hash_is_named_with_the_fix(node, capsys):
    (node / "models" / "ocr.onnx").write_bytes(b"replaced")
    code, lines = check(capsys, write_config(node))
    assert code == EXIT_MODELS == 3
    assert "ocr-ppocrv6-small" in lines["models"] and "fails its hash" in lines["models"]
    assert "prepare-models" in lines["models"]
    (node / "models" / "plates.onnx").unlink()
    code, lines = check(capsys, write_config(node))
    assert code == EXIT_MODELS and "missing" in lines["models"]


def test_the_models_a_camera_is_set_to_are_the_ones_checked(node, capsys):
    (node / "models" / "plates-int8.onnx").unlink()
    (node / "models" / "vehicles.onnx").unlink()
    code, lines = check(capsys, write_config(
        node, "detect: {model: plates}\ndescribe: {enabled: false}\n"))
    assert code == EXIT_OK, lines["models"]
    for settings, missing in (("detect: {model: plates-int8}\ndescribe: {enabled: false}\n",
                               "plates-int8"),
                              ("detect: {model: plates}\ndescribe: {enabled: true}\n",
                               "vehicles")):
        code, lines = check(capsys, write_config(node, settings))
        assert code == EXIT_MODELS and missing in lines["models"], lines["models"]


def test_the_vehicle_detector_the_cameras_load_is_the_one_checked(node, capsys):
    """Where the vehicle detector that takes any input size is prepared, the cameras load
    it, so a copy of it that fails its hash fails the check."""
    models = node / "models"
    body = b"the vehicle detector, any input size"
    (models / "vehicles-dynamic.onnx").write_bytes(body)
    with open(models / "manifest.toml", "a") as manifest:
        manifest.write('\n[models.vehicles-dynamic]\ndescription = "test"\npackage = "p"\n'
                       'version = "1"\nmember = "m"\nsha256 = "-"\n'
                       'file = "vehicles-dynamic.onnx"\nlicence = "x"\nkind = "k"\n'
                       'input_size = 1\nexport = "onnx-dynamic"\nsource_model = "vehicles"\n')
    record = json.loads((models / "prepared.json").read_text())
    record["files"]["vehicles-dynamic.onnx"] = {"model": "vehicles-dynamic",
                                               "sha256": hashlib.sha256(body).hexdigest()}
    (models / "prepared.json").write_text(json.dumps(record))
    code, lines = check(capsys, write_config(node))
    assert code == EXIT_OK and "vehicles-dynamic" in lines["models"], lines["models"]
    (models / "vehicles-dynamic.onnx").write_bytes(b"replaced")
    code, lines = check(capsys, write_config(node))
    assert code == EXIT_MODELS and "vehicles-dynamic" in lines["models"], lines["models"]
    assert "fails its hash" in lines["models"]


def collector_config(node: Path, creds: Path, endpoint: str, key: str = "collector") -> Path:
    return write_config(node, f"link:\n  collector: {endpoint}\n  credentials_dir: {creds}\n"
                        f"  collector_key: {key}\n")


def test_missing_or_unreadable_keys_fail_the_keys_check(node, capsys):
    creds = node / "creds"
    creds.mkdir()
    code, lines = check(capsys, collector_config(node, creds, "tcp://127.0.0.1:9"))
    assert code == EXIT_KEYS == 4
    assert "edge-7.key_secret" in lines["keys"] and "not found" in lines["keys"]
    assert lines["collector"].split()[1] == "skip"
    (creds / "edge-7.key_secret").write_text("not a certificate\n")
    code, lines = check(capsys, collector_config(node, creds, "tcp://127.0.0.1:9"))
    assert code == EXIT_KEYS and "CURVE" in lines["keys"]


@pytest.fixture
def collector(tmp_path):
    keys = make_keys(tmp_path / "pki")
    ctx = zmq.Context()
    service = start_collector(tmp_path / "pki", keys, ctx)
    yield keys, service
    service.stop()
    ctx.term()


def edge_creds(node: Path, keys, *, allowed: bool = True) -> Path:
    """The node's credentials directory: its own pair and the collector's public key."""
    keys.edge("edge-7", allowed=allowed)
    creds = keys.edge_dir("edge-7")
    shutil.copy(keys.collector_dir / "collector.key", creds / "collector.key")
    return creds


def test_the_collector_answers(node, collector, capsys):
    keys, service = collector
    path = collector_config(node, edge_creds(node, keys), service.endpoint)
    code, lines = check(capsys, path)
    assert code == EXIT_OK, lines
    assert lines["keys"].split()[1] == "ok"
    assert "answered" in lines["collector"] and service.endpoint in lines["collector"]
    code, lines = check(capsys, path, "--offline")
    assert code == EXIT_OK and "--offline" in lines["collector"]


def test_a_collector_that_refuses_this_node_says_so(node, collector, capsys):
    keys, service = collector
    path = collector_config(node, edge_creds(node, keys, allowed=False), service.endpoint)
    code, lines = check(capsys, path)
    assert code == EXIT_COLLECTOR == 5
    assert "refused this node's key" in lines["collector"] and "edge-7" in lines["collector"]


def test_a_wrong_collector_key_or_no_collector_fails_the_collector_check(node, collector,
                                                                        capsys):
    keys, service = collector
    creds = edge_creds(node, keys)
    shutil.copy(creds / "edge-7.key", creds / "impostor.key")  # a key, not the collector's
    code, lines = check(capsys, collector_config(node, creds, service.endpoint, "impostor"),
                        "--timeout", "1")
    assert code == EXIT_COLLECTOR and "collector.key" in lines["collector"]
    nobody = f"tcp://127.0.0.1:{free_port()}"
    code, lines = check(capsys, collector_config(node, creds, nobody), "--timeout", "0.3")
    assert code == EXIT_COLLECTOR and "no answer within 0.3 s" in lines["collector"]


# -- cameras: opened as the node opens them ------------------------------------------------


def test_a_camera_that_gives_no_picture_fails_with_its_own_exit_status(node, capsys):
    from edge.node.check_config import EXIT_CAMERAS

    code, lines = check(capsys, write_config(node, source=str(node / "nowhere.mp4")))
    assert code == EXIT_CAMERAS == 6
    assert lines["cameras"].split()[1] == "FAIL" and "0 of 1" in lines["cameras"]
    assert "FAIL" in lines["camera north"] and "nowhere.mp4" in lines["camera north"]


def test_a_wrong_camera_password_fails_and_never_shows_the_password(node, capsys):
    from helpers.rtsp_fake import FakeRtspServer

    from edge.node.check_config import EXIT_CAMERAS

    creds = node / "creds"
    creds.mkdir()
    (creds / "north-cam").write_text("admin:not-the-password\n")
    with FakeRtspServer(user="admin", password="s3cret", scheme="digest") as server:
        path = write_config(node, f"    credentials: north-cam\nlink:\n  credentials_dir: "
                            f"{creds}\n", source=server.url("/main"))
        code, lines = check(capsys, path)
        assert code == EXIT_CAMERAS
        assert "refused the user and password (401 Unauthorized)" in lines["camera north"]
        assert server.authorizations and "not-the-password" not in " ".join(lines.values())
        # a password in the YAML: warned of, and refused the same way, never printed
        path = write_config(node, source=server.url("/main", "admin:wrong-one"))
        main(["check-config", str(path)])
        out = capsys.readouterr().out
        assert "a password in the URL" in out and "credentials file" in out
        assert "wrong-one" not in out and "401" in out
        # the right password gets as far as the stream itself (the fake serves none)
        (creds / "north-cam").write_text("admin:s3cret\n")
        path = write_config(node, f"    credentials: north-cam\nlink:\n  credentials_dir: "
                            f"{creds}\n", source=server.url("/main"))
        code, lines = check(capsys, path, "--timeout", "1")
        assert "401" not in lines["camera north"] and "s3cret" not in lines["camera north"]


def test_network_cameras_are_skipped_offline_and_nothing_listening_is_named(node, capsys):
    path = write_config(node, source=f"rtsp://127.0.0.1:{free_port()}/main")
    code, lines = check(capsys, path, "--offline")
    assert code == EXIT_OK and lines["camera north"].split()[0] == "skip"
    code, lines = check(capsys, path, "--timeout", "1")
    assert code == 6 and "nothing listens at 127.0.0.1" in lines["camera north"]


NATIVE = """
import sys
from edge.core.logs import setup_logging
from edge.node.native_log import route_native_stderr
from edge.node.sources import open_source
route_native_stderr()
setup_logging()
source = open_source(sys.argv[1], source_id="north", open_timeout=3, backoff_initial=60,
                     backoff_max=60)
assert source.wait_for_state("dead", timeout=20)
print(source.health().last_error)
source.close()
"""


def test_ffmpeg_and_opencv_lines_are_logged_with_time_level_and_camera():
    """A real FFmpeg refused by a camera prints its 401 straight to descriptor 2; the node
    logs it as one of its own lines, scrubbed, naming the camera."""
    import os
    import re
    import subprocess
    import sys

    from helpers.rtsp_fake import FakeRtspServer

    with FakeRtspServer(user="admin", password="right") as server:
        env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        done = subprocess.run([sys.executable, "-c", NATIVE,
                               server.url("/main", "admin:Wr0ngPa55")],
                              capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Wr0ngPa55" not in done.stdout + done.stderr
    assert "refused the user and password (401 Unauthorized)" in done.stdout
    lines = done.stderr.splitlines()
    stamped = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ camera=\S+ \S+: ")
    assert all(stamped.match(line) for line in lines), lines
    ffmpeg = [line for line in lines if " native.ffmpeg." in line]
    assert any("401" in line and "camera=north" in line for line in ffmpeg), lines
