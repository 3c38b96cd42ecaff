"""The test helpers make what they say they make (tests/helpers/)."""

from __future__ import annotations

import shutil

from helpers.console import console_hit
from helpers.link import collector_config, make_hit, wait_for
from helpers.search import mini_node, signing_keys
from helpers.service import node_config

from edge.collector.service import CollectorService
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


def test_a_mini_node_refused_once_is_heard_once_its_key_is_allowed(tmp_path, keys, ctx) -> None:
    # ZeroMQ never tries again on a connection whose key was refused; a mini node whose
    # key reached the allow-list just after the collector read it was never heard
    signing_keys(keys)
    service = CollectorService(collector_config(tmp_path, keys), ctx=ctx)
    service.start()
    try:
        keys.edge("lt-late", allowed=False)
        node = mini_node(tmp_path, keys, service, "lt-late")
        node.start(ctx)
        try:
            wait_for(lambda: node.auth_failures >= 1, what="the key refused")
            assert "lt-late" not in service.connected_nodes()
            key = keys.edge_dir("lt-late") / "lt-late.key"
            shutil.copy(key, keys.allowed_dir / key.name)
            wait_for(lambda: "lt-late" in service.connected_nodes(), what="the node heard")
        finally:
            node.stop()
    finally:
        service.stop()
