"""A real node (the edge service, no models or cameras: its passes handed to `handle_event`)
answers a search from a collector's ROUTER made in the test, over CURVE on loopback."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import time

import nacl.signing
import numpy as np
import pytest
from helpers.search_node import collector_peer, query
from helpers.stand_ins import idle_engines

from edge.core.keys import generate_signing_keypair, load_signing_key
from edge.core.types import PlateEvent
from edge.node.config import CameraConfig, EdgeConfig
from edge.node.service import EdgeService

CAMERA = CameraConfig(id="lane-1", source="unused.mp4")


def event(text: str, t: float) -> PlateEvent:
    return PlateEvent(text=text, formatted=text, country="DE", confidence=0.9, first_seen=t,
                      last_seen=t + 1, frames=5, direction="approaching",
                      best_crop=np.full((40, 160, 3), 128, np.uint8), vehicle_type="truck",
                      vehicle_colour="red")  # fmt: skip


def _node(tmp_path, keys, ctx, *, verify: bool):
    keys.edge("edge1")
    creds = keys.edge_dir("edge1")
    shutil.copy(keys.collector_dir / "collector.key", creds / "collector.key")
    generate_signing_keypair(keys.collector_dir, "collector")
    if verify:
        shutil.copy(keys.collector_dir / "collector.verify", creds / "collector.verify")
    peer = collector_peer(ctx, keys, load_signing_key(keys.collector_dir, "collector"))
    config = EdgeConfig.model_validate({
        "node_id": "edge1", "state_dir": str(tmp_path / "state"),
        "link": {"collector": peer.endpoint, "credentials_dir": str(creds),
                 "heartbeat_s": 0.05}})  # fmt: skip
    service = EdgeService(config, events_out=io.StringIO(), engines=idle_engines())
    return service, peer


@pytest.mark.parametrize("verify", [True, False])
def test_the_node_answers_with_the_reads_it_kept(tmp_path, keys, ctx, verify):
    service, peer = _node(tmp_path, keys, ctx, verify=verify)
    service.start()
    try:
        now = time.time()
        for n, text in enumerate(["B123XY", "K77AA", "8123XY", "B123XY"]):
            service.handle_event(CAMERA, event(text, now - 100 + n), now - 100 + n)
        peer.until(lambda: "edge1" in peer.identities, what="the node's heartbeat")
        t = dt.datetime.now(dt.UTC)
        q = query(mode="fuzzy", max_distance=0.5, since=t - dt.timedelta(hours=1), until=t,
                  issued_at=t)  # fmt: skip
        peer.ask("edge1", q)
        (answer,) = peer.answer(q.query_id)
        if not verify:
            assert answer.refused.startswith("unavailable")
            return
        assert not answer.refused and answer.total == 3 and answer.retention_h == 24
        assert [r.text for r in answer.reads] == ["B123XY", "8123XY", "B123XY"]
        r = answer.reads[0]
        assert (r.camera, r.direction, r.vehicle_type, r.vehicle_colour) == (
            "lane-1", "approaching", "truck", "red")  # fmt: skip
        assert r.crop_jpeg.startswith(b"\xff\xd8\xff") and r.country == "DE"
        forged = query(since=q.since, until=t, issued_at=t)
        peer.ask("edge1", forged, key=nacl.signing.SigningKey(b"\x01" * 32))
        assert peer.answer(forged.query_id)[0].refused.startswith("forged")
    finally:
        service.stop()
        peer.close()
