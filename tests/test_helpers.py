"""The test helpers make what they say they make (tests/helpers/)."""

from __future__ import annotations

from helpers.console import console_hit
from helpers.link import make_hit
from helpers.service import node_config

from edge.node.config import load_config


def test_make_hit_is_deterministic() -> None:
    assert make_hit(3, run="x") == make_hit(3, run="x")
    assert make_hit(3, run="x").hit_id != make_hit(3, run="y").hit_id


def test_console_hit_is_a_valid_hit_with_real_pictures() -> None:
    h = console_hit("WX12345")
    assert h.crop_jpeg.startswith(b"\xff\xd8\xff") and h.crop_jpeg.endswith(b"\xff\xd9")
    assert h.plate.formatted == "WX1 2345" and h.match.priority == 1


def test_node_config_is_a_valid_edge_config(tmp_path) -> None:
    config = load_config(node_config(tmp_path, "clip.mp4", analysis_fps="15"))
    assert config.cameras[0].id == "lane-1" and config.analysis_fps == 15
