"""Config: strict keys, defaults flowing into cameras, clear errors."""

from __future__ import annotations

import pytest
from helpers.data import REPO

from edge.collector import config as collector_config
from edge.core.config_files import ConfigError as CoreConfigError
from edge.node.config import ConfigError, EdgeConfig, load_config


def write(tmp_path, text: str):
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def test_defaults_flow_into_each_camera_and_overrides_apply(tmp_path):
    config = load_config(write(tmp_path, """
node_id: lt-border-1
countries: [LT, LV]
detect: {mode: both, plate_confidence: 0.3}
cameras:
  - id: lane-1
    source: rtsp://cam1/stream
    location: {lat: 54.1, lon: 25.2, road: A2, direction: in}
  - id: lane-2
    source: usb:0
    overrides: {detect: {mode: full}, night: {mode: clock}}
"""))
    one, two = config.cameras
    assert one.pipeline.detect.mode == "both" and one.pipeline.countries == ["LT", "LV"]
    assert two.pipeline.detect.mode == "full"
    assert two.pipeline.detect.plate_confidence == 0.3  # the global value stays
    assert two.pipeline.night.mode == "clock"
    assert one.location.road == "A2"


@pytest.mark.parametrize("text, key", [
    ("detect: {mode: full, plate_confidense: 0.3}", "detect.plate_confidense"),
    ("cameras: [{id: a, source: x, colour: red}]", "cameras.0.colour"),
    ("nodeid: x", "nodeid"),
])
def test_unknown_keys_are_errors_naming_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert key in str(err.value) and "edge.yaml" in str(err.value)


def test_unknown_key_in_camera_overrides_is_named(tmp_path):
    with pytest.raises(ConfigError, match="detect.tilez"):
        load_config(write(tmp_path,
                          "cameras: [{id: a, source: x, overrides: {detect: {tilez: 2}}}]"))


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ConfigError, match="detect.mode"):
        load_config(write(tmp_path, "detect: {mode: sideways}"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "detect: [unclosed"))
    with pytest.raises(ConfigError, match="absent.yaml: cannot read: No such file"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="unique"):
        load_config(write(tmp_path, "cameras: [{id: a, source: x}, {id: a, source: y}]"))


def test_node_and_collector_configs_give_one_error_in_one_form(tmp_path):
    assert ConfigError is CoreConfigError and collector_config.ConfigError is CoreConfigError
    node = write(tmp_path, "detect: {mode: sideways, tilez: 2}")
    central = tmp_path / "collector.yaml"
    central.write_text("listen: tcp://127.0.0.1:0\nlisen_typo: 1\nlimits: {max_crop_bytes: x}\n")
    for load, path, keys in ((load_config, node, ["detect.mode", "detect.tilez"]),
                             (collector_config.load_config, central,
                              ["limits.max_crop_bytes", "lisen_typo"])):  # fmt: skip
        with pytest.raises(CoreConfigError) as err:
            load(path)
        e = err.value
        assert [k for k, _ in e.problems] == keys and (e.key, e.path) == (keys[0], path)
        assert str(e) == f"{path}: " + "; ".join(f"{k}: {m}" for k, m in e.problems)
        assert "\n" not in str(e)
        path.write_bytes(b"node_id: \xff\n")
        with pytest.raises(CoreConfigError, match="not UTF-8 text") as err:
            load(path)
        assert err.value.key is None
        path.write_text("- a list\n")
        with pytest.raises(CoreConfigError, match=": the top level must be a mapping of keys"):
            load(path)


def test_empty_file_gives_defaults(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config == EdgeConfig()


def test_the_shipped_example_config_is_valid():
    config = load_config(REPO / "config" / "edge.example.yaml")
    assert config.cameras and all(c.pipeline is not None for c in config.cameras)
    assert "password" not in config.link.model_dump_json()
