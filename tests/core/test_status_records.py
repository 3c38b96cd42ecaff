"""A node's status as a typed record: its kinds and states, its bounds, and a malformed one
refused by a real collector before it can reach the console or `anpr-collector nodes`."""

from __future__ import annotations

import json
import sqlite3
import typing

import pytest
import zmq
from helpers.console import OPERATOR, live_status, running_stack
from helpers.link import wait_for
from pydantic import ValidationError

from edge.collector.cli import main
from edge.core.keys import make_curve_client
from edge.core.link_protocol import Heartbeat
from edge.core.status import (
    MAX_CAMERAS,
    MAX_PROBLEMS,
    MAX_TEXT,
    CameraState,
    CameraStatus,
    Health,
    NodeStatus,
    Problem,
    ProblemKind,
)
from edge.node.health import GOOD, CameraHealth
from edge.node.sources import SourceState

ATTACK = {"health": {"ok": False, "problems": 5}}  # made /api/cameras answer 500 to all


def status(**fields: object) -> dict:
    return {"node": "n", "health": {"ok": True, "problems": []}, **fields}


# -- kinds and states -------------------------------------------------------------------


@pytest.mark.parametrize("state", list(CameraState))
def test_each_camera_state_that_is_a_problem_has_its_kind(state):
    problem = Problem.of_camera("gate", state, "why")
    if state in GOOD:  # live, ended, stopped: no problem in themselves
        assert problem.kind == ProblemKind.OTHER
    else:
        assert problem.kind.value == state.value
    assert str(problem) == f"camera gate: {state} (why)"
    assert str(Problem.of_camera("gate", state)) == f"camera gate: {state}"


def test_one_set_of_camera_states_for_sources_health_and_metrics():
    assert set(typing.get_args(SourceState)) <= set(CameraState)
    assert CameraHealth("c").state is CameraState.STARTING
    assert {s for s in CameraState if s not in GOOD} == {
        CameraState(k.value) for k in ProblemKind if k.value in set(CameraState)}


@pytest.mark.parametrize(("problem", "text"), [
    (Problem(camera="cam", kind=ProblemKind.BLIND, detail="processing nothing: frames arrive "
             "at 25.0 fps, none analysed for 6 s"),
     "camera cam: blind (processing nothing: frames arrive at 25.0 fps, none analysed for 6 s)"),
    (Problem(camera="cam", kind=ProblemKind.CONNECTING), "camera cam: connecting"),
    (Problem(camera="cam", kind=ProblemKind.LOOP_FAILED, detail="RuntimeError('x')"),
     "camera cam: loop failed (RuntimeError('x'))"),
    (Problem(camera="cam", kind=ProblemKind.BLIND_STALLED, detail="61 s"),
     "camera cam: blind for 61 s"),
    (Problem(camera="cam", kind=ProblemKind.HUNG, detail="25 s"),
     "camera cam: no progress for 25 s"),
    (Problem(kind=ProblemKind.SENDER_DIED, detail="OSError(28)"), "hit sender died: OSError(28)"),
    (Problem(kind=ProblemKind.STORE_NEAR_BUDGET, detail="93%"),
     "store at 93% of its disk budget"),
    (Problem(kind=ProblemKind.HITS_IN_MEMORY, detail="3 hit(s) waiting in memory, not yet on "
             "disk (disk full)"),
     "store: 3 hit(s) waiting in memory, not yet on disk (disk full)"),
    (Problem(kind=ProblemKind.STORE_WRITE_FAILED, detail="disk full"),
     "store: the last write failed (disk full)"),
    (Problem(kind=ProblemKind.LOW_DISK, detail="10 MiB free (under 64 MiB): hits are stored "
             "without their scene, reads not kept"),
     "store: low disk, 10 MiB free (under 64 MiB): hits are stored without their scene, reads "
     "not kept"),
    (Problem(kind=ProblemKind.STATUS_FAILED, detail="KeyError('x')"),
     "node status unavailable (KeyError('x'))"),
])  # fmt: skip
def test_problems_read_as_operators_read_them(problem, text):
    assert str(problem) == text
    back = Problem.model_validate(json.loads(json.dumps(problem.model_dump(mode="json"))))
    assert back == problem and str(back) == text


# -- the record: typed and bounded ------------------------------------------------------


@pytest.mark.parametrize("bad", [
    ATTACK,
    status(health={"ok": False, "problems": [5]}),
    status(health={"ok": "yes", "problems": []}),  # not a verdict
    status(health={"ok": False, "problems": [{"kind": "pwned"}]}),
    status(cameras={"gate": {"state": "exploded", "ok": True}}),
    status(cameras={"gate": {"state": "live", "ok": True, "frames": "5"}}),
    status(cameras={"gate": {"state": "live", "ok": True, "frames": -1}}),
    status(cameras={"gate": {"state": "live", "ok": True, "fps": float("inf")}}),
    status(cameras={"bad name!": {"state": "live", "ok": True}}),
    status(cameras={"gate": "live"}),
    status(cameras={f"c{i}": {"state": "live", "ok": True} for i in range(MAX_CAMERAS + 1)}),
    status(health={"ok": False, "problems": [{"kind": "dead"}] * (MAX_PROBLEMS + 1)}),
    status(heartbeat_s=0),
    status(node="x" * 65),
    {"node": "n"},  # no health
    [1, 2],
])  # fmt: skip
def test_a_malformed_status_is_refused(bad):
    with pytest.raises(ValidationError):
        NodeStatus.model_validate(bad)


def test_text_is_clipped_and_keys_a_newer_node_adds_are_left_out():
    s = NodeStatus.model_validate(status(
        health={"ok": False, "problems": [{"kind": "other", "detail": "x" * 1_000_000,
                                           "severity": "high"}]},
        cameras={"gate": {"state": "dead", "ok": False, "last_error": "y" * 100_000,
                          "temperature_c": 71}},
        firmware="2.0"))  # fmt: skip
    assert len(s.health.problems[0].detail) == MAX_TEXT
    assert len(s.cameras["gate"].last_error) == MAX_TEXT
    dumped = json.dumps(s.model_dump(mode="json"))
    assert len(dumped) < 3 * MAX_TEXT + 2000
    assert "firmware" not in dumped and "severity" not in dumped and "temperature" not in dumped


def test_a_good_status_round_trips_as_json():
    s = NodeStatus.model_validate(status(
        version="1.2.0", uptime_s=12.5, heartbeat_s=10,
        health={"ok": False, "problems": [{"camera": "gate", "kind": "frozen",
                                           "detail": "picture unchanged for 20.0 s"}]},
        cameras={"gate": {"state": "frozen", "ok": False, "since": "2026-05-01T12:00:00+00:00",
                          "fps": 0, "frames": 10}},
        models={"plates": "0123456789ab"}, config="abcdef012345"))  # fmt: skip
    wire = s.model_dump(mode="json")
    assert wire["cameras"]["gate"]["since"] == "2026-05-01T12:00:00+00:00"  # as ever
    assert wire["cameras"]["gate"]["state"] == "frozen" and wire["heartbeat_s"] == 10.0
    assert wire["health"]["problems"] == [
        {"camera": "gate", "kind": "frozen", "detail": "picture unchanged for 20.0 s"}]
    assert NodeStatus.model_validate(json.loads(json.dumps(wire))) == s
    assert s.cameras["gate"] == CameraStatus.model_validate(wire["cameras"]["gate"])
    assert s.health != Health(ok=True)


# -- the attacker, against a real collector and console ---------------------------------


@pytest.fixture
def stack(tmp_path):
    yield from running_stack(tmp_path)


def test_a_malformed_heartbeat_is_refused_counted_and_harms_no_reader(stack, capsys, caplog):
    """An edge whose camera the collector knows, sending {"health": {"ok": false, "problems":
    5}}, made /api/cameras answer 500 to every operator and `anpr-collector nodes` crash
    until it sent a good one."""
    stack.edge("edge-a", status=live_status("cam-north"))
    public, secret = stack.keys.edge("edge-evil")  # on the allow-list: a real CURVE edge
    sock = stack.ctx.socket(zmq.DEALER)
    sock.linger = 0
    make_curve_client(sock, public, secret, stack.keys.server_public)
    sock.connect(stack.service.endpoint)
    c = stack.client(OPERATOR)
    db = stack.config.db_path
    good = {**live_status("cam-1"), "node": "edge-evil"}
    try:
        sock.send_multipart(Heartbeat("edge-evil", good).encode())
        wait_for(lambda: _stored(db, "edge-evil"), 10, "its good heartbeat stored")
        before = _stored(db, "edge-evil")
        for body in (ATTACK, {**good, "node": "edge-a"}):  # the 2nd: a status not its own
            sock.send_multipart(Heartbeat("edge-evil", body).encode())
        wait_for(lambda: stack.service.stats().get("refused_status", 0) == 1
                 and stack.service.stats().get("refused_impersonation", 0) == 1, 10,
                 "both heartbeats refused")  # fmt: skip
        assert "refused a message from edge-evil (status): heartbeat status: node: Field " \
            "required (and 1 more)" in caplog.text  # fmt: skip
        assert _stored(db, "edge-evil") == before  # what it said last that was well formed
        cams = _cameras(c)
        assert cams["edge-evil/cam-1"]["health"] == cams["edge-a/cam-north"]["health"] == "live"
        assert main(["nodes", "--db", str(db)]) == 0
        out = capsys.readouterr().out
        assert "edge-evil" in out and "cam-1 live 12.5 fps" in out

        # a row an older collector stored unchecked: shown as unreadable, never a 500
        with sqlite3.connect(db, timeout=10) as raw:
            raw.execute("UPDATE nodes SET status = ? WHERE node = 'edge-evil'",
                        (json.dumps(ATTACK),))
        raw.close()
        cam = _cameras(c)["edge-evil/cam-1"]
        assert (cam["health"], cam["problems"], cam["state"]) == (
            "unhealthy", ["unreadable status"], None)  # fmt: skip
        assert _cameras(c)["edge-a/cam-north"]["health"] == "live"
        assert main(["nodes", "--db", str(db), "--problems"]) == 1
        out = capsys.readouterr().out
        assert "edge-evil" in out and "! unreadable status" in out
    finally:
        sock.close()


def _cameras(c) -> dict[str, dict]:
    code, body = c.get("/api/cameras")
    assert code == 200, body
    return {x["id"]: x for x in body["cameras"]}


def _stored(db, node: str) -> str | None:
    """The status stored for `node`, as the nodes table holds it."""
    raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = raw.execute("SELECT status FROM nodes WHERE node = ?", (node,)).fetchone()
        return None if row is None else row[0]
    finally:
        raw.close()
