"""A camera's place travels in its node's heartbeat (what a partner granted the camera sees)."""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

import edge.node.service
from edge.core.status import CameraStatus, NodeStatus, Place
from edge.node.config import EdgeConfig
from edge.node.service import CameraWorker


class NoPipeline:
    def __init__(self, *args: object, **kw: object):
        pass


def report_of(location: dict[str, object] | None, monkeypatch: pytest.MonkeyPatch
              ) -> CameraStatus:
    monkeypatch.setattr(edge.node.service, "VideoPipeline", NoPipeline)
    cam: dict[str, object] = {"id": "gate", "source": "x"}
    if location is not None:
        cam["location"] = location
    config = EdgeConfig.model_validate({"cameras": [cam]})
    w = CameraWorker(config.cameras[0], None, lambda *a: None,  # type: ignore[arg-type]
                     threading.Event())
    return w.report()  # never started: the report of a camera not yet opened


def test_the_report_carries_the_place_the_config_gives(monkeypatch):
    place = report_of({"lat": 54.1, "lon": 25.2, "road": "A2", "direction": "to LV"},
                      monkeypatch).place
    assert place == Place(lat=54.1, lon=25.2, road="A2", direction="to LV")
    assert report_of(None, monkeypatch).place is None
    # half a position is none; the road still says where
    half = report_of({"lat": 54.1, "road": "A2"}, monkeypatch).place
    assert half == Place(road="A2")


def test_a_place_is_checked_and_an_older_nodes_status_has_none():
    status = NodeStatus.model_validate({"node": "lt-e1", "health": {"ok": True},
                                        "cameras": {"gate": {"state": "live", "ok": True}}})
    assert status.cameras["gate"].place is None
    for bad in ({"lat": 91.0, "lon": 1.0}, {"lat": 54.0}, {"lat": "54", "lon": 25.0}):
        with pytest.raises(ValidationError):
            Place.model_validate(bad)
    sent = CameraStatus(state="live", ok=True, place=Place(lat=54, lon=25.2, road="A2"))  # type: ignore[arg-type]
    again = CameraStatus.model_validate_json(sent.model_dump_json())
    assert again.place == Place(lat=54.0, lon=25.2, road="A2")
