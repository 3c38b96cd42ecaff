"""Early hits: a listed car held in view raises its hit while it is there, once; the pass's
final event completes that hit (final text, crop) at the collector and on the console,
without a second alert. Real edge service, real collector and console, on loopback."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.booth import Booth, edge_credentials, engines, list_plates, node_config
from helpers.console import OPERATOR, EventStream, running_stack
from helpers.link import child_env, wait_for

from edge.core.types import PlateEvent
from edge.node.config import CameraConfig
from edge.node.service import EdgeService


@pytest.fixture
def stack(tmp_path):
    yield from running_stack(tmp_path / "collector")


def rows(stack) -> list[dict]:
    db = sqlite3.connect(f"file:{stack.config.db_path}?mode=ro", uri=True, timeout=5)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM hits ORDER BY rowid")]
    except sqlite3.OperationalError:  # not made yet
        return []
    finally:
        db.close()


def booth_node(tmp_path: Path, stack, booth: Booth | None = None,
               out: io.StringIO | None = None) -> EdgeService:
    """A node watching `booth` (none: no camera runs), sending to the stack's collector."""
    creds = edge_credentials(stack.keys, "edge-booth")
    config = node_config(tmp_path / "edge", collector=stack.service.endpoint, credentials=creds)
    if booth is None:
        booth = Booth()
        booth.close()  # an empty lane: the camera ends at once
    service = EdgeService(config, engines=engines(booth), events_out=out,
                          source_factory=lambda camera: booth)
    list_plates(service, "AB123CD", "AB128CD", name="stolen")
    return service


def sighting(track_id: int) -> PlateEvent:
    """A pass in view whose fused text so far is the listed AB123CD, sure enough for an
    early hit."""
    return PlateEvent("AB123CD", "AB 123 CD", None, 0.8, 0.0, 0.5, 3, "unknown",
                      track_id=track_id, best_crop=np.full((30, 120, 3), 100, np.uint8),
                      provisional=True)


@contextlib.contextmanager
def early_hit_raised(tmp_path: Path, stack) -> Iterator[tuple[EdgeService, CameraConfig]]:
    """A running node (and its camera) whose pass track 7, in view, has raised its early
    hit on the listed AB123CD at the collector; stopped afterwards."""
    node = booth_node(tmp_path, stack)
    node.start()
    try:
        camera = node.config.cameras[0]
        node.handle_event(camera, sighting(7), time.time())
        wait_for(lambda: rows(stack), 15, "the early hit")
        yield node, camera
    finally:
        node.stop()


def hits_of(stream: EventStream, until: object) -> list[dict]:
    """The console's `hit` events, until `until(events)` holds."""
    got: list[dict] = []
    while not until(got):  # type: ignore[operator]
        kind, data = stream.next_event()
        if kind == "hit":
            got.append(data)
    return got


def test_a_listed_car_that_stops_raises_its_hit_before_it_leaves_and_only_one(tmp_path, stack):
    booth = Booth()
    out = io.StringIO()
    node = booth_node(tmp_path, stack, booth, out)
    client = stack.client(OPERATOR)
    stream = EventStream(stack.url, client.token)
    try:
        node.start()
        (first,) = hits_of(stream, lambda got: got)  # the console's alert
        early = wait_for(lambda: rows(stack), 15, "the early hit at the collector")[0]
        assert early["hit_id"] == first["hit_id"] and first["revision"] == 0
        assert not booth.leave.is_set() and out.getvalue() == ""  # the car is still there
        assert early["plate_text"] == "AB123CD" and early["watchlist"] == "stolen"
        # it stays: reads keep coming for a long time, and raise no other hit
        seen = booth.frames_in_view
        wait_for(lambda: booth.frames_in_view >= seen + 60, 30, "60 more frames in view")
        status, early_crop = client.get(f"/api/hits/{early['hit_id']}/crop.jpg")
        assert status == 200 and early_crop
        # it reads better now: the pass's text changes to AB128CD, its crop to this view
        booth.grey, booth.text, booth.confidence = 200, "AB128CD", 0.99
        wait_for(lambda: booth.frames_in_view >= seen + 120, 30, "60 frames read better")
        assert len(rows(stack)) == 1 and node.outbox.backlog() == 0
        booth.leave.set()
        wait_for(lambda: rows(stack)[0]["revision"] == 1, 15, "the hit completed")
        (done,) = rows(stack)
        (line,) = [json.loads(s) for s in out.getvalue().splitlines()]
        # completed, with the final read and picture, a list it also matches on
        assert done["hit_id"] == early["hit_id"] and line["completed"] == [early["hit_id"]]
        assert done["plate_text"] == line["text"] == "AB128CD"
        assert done["received_at"] == early["received_at"]
        status, crop = client.get(f"/api/hits/{done['hit_id']}/crop.jpg?r=1")
        assert status == 200 and crop and crop != early_crop  # the final read's crop
        grey = cv2.imdecode(np.frombuffer(crop, np.uint8), cv2.IMREAD_GRAYSCALE)
        was = cv2.imdecode(np.frombuffer(early_crop, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert float(np.median(grey)) > float(np.median(was))  # the brighter, later view
        # the console shows one hit, updated in place: no second alert
        (update,) = hits_of(stream, lambda got: got)
        assert update["hit_id"] == first["hit_id"] and update["revision"] == 1
        assert update["plate_text"] == "AB128CD"
        status, live = client.get("/api/live")
        assert status == 200 and [h["hit_id"] for h in live["hits"]] == [first["hit_id"]]
    finally:
        stream.close()
        booth.close()
        node.stop()
    assert [r["hit_id"] for r in rows(stack)] == [early["hit_id"]]


def test_a_final_text_that_no_longer_matches_keeps_the_hit_and_stores_the_final_text(
        tmp_path, stack):
    with early_hit_raised(tmp_path, stack) as (node, camera):
        final = PlateEvent("XY999ZZ", "XY 999 ZZ", None, 0.95, 0.0, 4.0, 20, "approaching",
                           track_id=7, best_crop=np.full((30, 120, 3), 200, np.uint8),
                           vehicle_type="truck", vehicle_colour="red")
        node.handle_event(camera, final, time.time())
        wait_for(lambda: rows(stack)[0]["revision"] == 1, 15, "the hit completed")
        (done,) = rows(stack)
        assert done["plate_text"] == "XY999ZZ" and done["watchlist"] == "stolen"
        assert done["entry_plate"] == "AB123CD"  # the entry the early read matched
        assert (done["vehicle_type"], done["vehicle_colour"]) == ("truck", "red")
        assert done["direction"] == "approaching"


def test_a_hit_on_another_reading_says_so_on_the_wire_and_the_console(tmp_path, stack):
    node = booth_node(tmp_path, stack)
    list_plates(node, "KE123OZ", name="wanted")  # a Slovak plate, listed as it is
    node.start()
    try:
        # read as Polish: KE12302; the Slovak reading is the other one
        event = PlateEvent("KE12302", "KE 12302", "PL", 0.9, 0.0, 2.0, 12, "receding",
                           track_id=3, best_crop=np.full((30, 120, 3), 90, np.uint8),
                           readings=["KE123OZ"])
        node.handle_event(node.config.cameras[0], event, time.time())
        (hit,) = wait_for(lambda: rows(stack), 15, "the hit")
        assert hit["plate_text"] == "KE12302" and hit["watchlist"] == "wanted"
        assert hit["reading"] == "KE123OZ"
        status, live = stack.client(OPERATOR).get("/api/live")
        assert status == 200 and live["hits"][0]["reading"] == "KE123OZ"
    finally:
        node.stop()


def test_a_node_killed_between_early_hit_and_completion_loses_nothing(tmp_path, stack):
    state = tmp_path / "edge"
    spec = tmp_path / "booth.json"
    spec.write_text(json.dumps({"state_dir": str(state), "plates": ["AB123CD"]}))
    child = subprocess.Popen([sys.executable, "-m", "helpers.booth", str(spec)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=child_env(), cwd=Path(__file__).parent.parent)
    try:
        assert child.stdout is not None
        said = json.loads(child.stdout.readline() or "{}")
        assert said.get("early_hits") == 1  # stored while the car was still in view
    finally:
        child.kill()  # SIGKILL: no stop, no flush, the pass in flight is cut off
        child.wait(10)
    # the node comes back, now with its collector: the early hit goes, once
    node = booth_node(tmp_path, stack)
    node.start()
    try:
        (hit,) = wait_for(lambda: rows(stack), 15, "the early hit after the restart")
        assert hit["plate_text"] == "AB123CD" and hit["revision"] == 0
        wait_for(lambda: node.outbox.backlog() == 0, 15, "the outbox to empty")
    finally:
        node.stop()
    assert len(rows(stack)) == 1


def test_a_pass_lost_and_found_again_takes_up_its_hit_rather_than_alerting_again(
        tmp_path, stack):
    node = booth_node(tmp_path, stack)
    node.start()
    try:
        camera = node.config.cameras[0]
        now = time.time()
        for track, at in ((7, now), (8, now + 2.0)):  # the tracker lost it for 2 s
            node.handle_event(camera, sighting(track), at)
        # the tracker merges the two passes' final events: the second track's is the one
        node.handle_event(camera, PlateEvent("AB123CD", "AB 123 CD", None, 0.9, 0.0, 4.0, 9,
                                             "left", track_id=8), now + 3.0)
        wait_for(lambda: rows(stack) and rows(stack)[0]["revision"] == 1, 15, "the completion")
        wait_for(lambda: node.outbox.backlog() == 0, 15, "the outbox to empty")
        assert [(r["plate_text"], r["direction"]) for r in rows(stack)] == [("AB123CD", "left")]
    finally:
        node.stop()


def test_a_pass_merged_into_the_one_that_continues_it_has_its_hit_completed_by_that_one(
        tmp_path, stack):
    with early_hit_raised(tmp_path, stack) as (node, camera):
        # the tracker found track 7 to be the start of track 9's pass, whose final read
        # no longer hits the list: track 9's event completes track 7's hit all the same
        node.handle_event(camera, PlateEvent("XY999ZZ", "XY 999 ZZ", None, 0.95, 0.0, 4.0, 20,
                                             "left", track_id=9, absorbed=[7]), time.time())
        wait_for(lambda: rows(stack)[0]["revision"] == 1, 15, "the hit completed")
        (done,) = rows(stack)
        assert (done["plate_text"], done["direction"]) == ("XY999ZZ", "left")


def test_a_pass_that_ends_without_a_final_event_leaves_its_hit_standing(tmp_path, stack,
                                                                         caplog):
    with early_hit_raised(tmp_path, stack) as (node, camera):
        with caplog.at_level(logging.INFO, logger="edge.node.service"):
            node.pass_closed(camera, 7)  # a duplicate of a pass given before it
        assert "stands as raised while in view: its pass (track 7) ended" in caplog.text
        # nothing waits for it now: a later pass with that track id is a pass of its own
        node.handle_event(camera, PlateEvent("AB123CD", "AB 123 CD", None, 0.95, 20.0, 24.0,
                                             20, "left", track_id=7), time.time() + 30)
        wait_for(lambda: len(rows(stack)) == 2, 15, "the second pass's own hit")
        assert [r["revision"] for r in rows(stack)] == [0, 0]
