"""The wire format: round trips, both versions, size caps, and anything else refused cleanly."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from helpers.link import fake_jpeg, make_hit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.core.errors import ProtocolError as CoreProtocolError
from edge.core.link_protocol import (
    TAG_ACK,
    TAG_HEARTBEAT,
    TAG_HIT_V1,
    TAG_HIT_V2,
    TAG_REJECT,
    Ack,
    CameraLocation,
    Heartbeat,
    HitMessage,
    HitPlate,
    Limits,
    ProtocolError,
    Reject,
    WatchlistMatch,
    decode,
    decode_message,
    new_hit_id,
)
from edge.core.watchlist import protocol as watchlists

FUZZ = settings(
    max_examples=1000,
    derandomize=True,  # the same examples every run: a test run is reproducible
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_v2_round_trip_keeps_every_field():
    hit = make_hit(7, priority=3)
    frames = hit.encode(version=2)
    assert frames[0] == TAG_HIT_V2 and len(frames) == 4
    back = decode(frames)
    assert back == hit
    assert back.wire_version == 2
    assert back.location == CameraLocation(52.52, 13.40, "A4 km 112", "eastbound")
    assert back.plate.formatted == "AB 00007" and back.match.reason == "stolen car"
    assert back.crop_jpeg == hit.crop_jpeg and back.scene_jpeg == hit.scene_jpeg


def test_new_hit_ids_are_uuid7_in_time_order():
    import time
    import uuid

    first = new_hit_id()
    time.sleep(0.002)
    second = new_hit_id()
    assert uuid.UUID(first).version == 7 and uuid.UUID(first).variant == uuid.RFC_4122
    assert first < second  # the collector's index grows at its end
    assert len({new_hit_id() for _ in range(10_000)}) == 10_000
    assert make_hit(1).__class__(**{**make_hit(1).__dict__, "hit_id": first}).hit_id == first


def test_seen_at_is_utc_whatever_zone_it_was_given_in():
    cet = dt.timezone(dt.timedelta(hours=1))
    hit = make_hit(1)
    local = HitMessage(**{**hit.__dict__, "seen_at": hit.seen_at.astimezone(cet)})
    assert local.seen_at.tzinfo == dt.UTC
    header = json.loads(local.encode()[1])
    assert header["seen_at"].endswith("Z")
    with pytest.raises(ProtocolError, match="time zone"):
        HitMessage(**{**hit.__dict__, "seen_at": dt.datetime(2026, 1, 1)})


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
def test_a_time_past_the_calendar_in_utc_is_refused_not_a_crash(when):
    # Valid ISO 8601, but outside years 1-9999 once in UTC: it used to raise
    # OverflowError, which no receiver catches (the collector's receiver thread died).
    header = json.loads(make_hit(1).encode()[1])
    header["seen_at"] = when
    with pytest.raises(ProtocolError, match="seen_at") as e:
        decode([TAG_HIT_V2, json.dumps(header).encode(), fake_jpeg(64), b""])
    assert e.value.reason == "invalid" and e.value.hit_id == header["id"]
    beat = {"node": "n1", "sent_at": when, "status": {}}
    with pytest.raises(ProtocolError, match="sent_at"):
        decode_message([TAG_HEARTBEAT, json.dumps(beat).encode()])


def test_v1_as_an_old_edge_wrote_it_is_understood():
    # Frozen bytes of the first release's format: flat header, crop only.
    header = (
        b'{"id":"0b9f3c1e-4a7d-4c1b-9a0e-2f6d8c5b7a11","node":"edge1","camera":"cam1",'
        b'"lat":52.5,"lon":13.4,"ts":1777636800.25,"plate":"B1234X","raw":"B 1234 X",'
        b'"country":"DE","conf":0.8,"list":"stolen","entry":"42","kind":"exact","priority":5}'
    )
    hit = decode([TAG_HIT_V1, header, fake_jpeg(100)])
    assert hit.wire_version == 1
    assert hit.hit_id == "0b9f3c1e-4a7d-4c1b-9a0e-2f6d8c5b7a11"
    assert hit.plate == HitPlate(text="B1234X", raw="B 1234 X", formatted="B1234X",
                                 country="DE", confidence=0.8)  # fmt: skip
    assert hit.match == WatchlistMatch(watchlist="stolen", entry_id="42", priority=5)
    assert hit.seen_at == dt.datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=dt.UTC)
    assert hit.location.lat == 52.5 and hit.location.road == ""
    assert hit.scene_jpeg == b""


def test_v1_can_still_be_written_for_a_collector_not_yet_upgraded():
    hit = make_hit(2, priority=4)
    frames = hit.encode(version=1)
    assert frames[0] == TAG_HIT_V1 and len(frames) == 3
    back = decode(frames)
    assert back.hit_id == hit.hit_id and back.plate.text == hit.plate.text
    assert back.match.priority == 4 and back.crop_jpeg == hit.crop_jpeg
    assert abs((back.seen_at - hit.seen_at).total_seconds()) < 0.001


def test_heartbeat_ack_reject_round_trip():
    hb = Heartbeat("edge1", {"cameras": {"cam1": {"fps": 12.5}, "bad name!": {}}, "x": [1]})
    back = decode_message(hb.encode())
    assert isinstance(back, Heartbeat) and back.status == hb.status
    assert back.cameras == ["cam1"]
    ack = decode_message(Ack(("a" * 36, "b" * 36)).encode())
    assert ack == Ack(("a" * 36, "b" * 36))
    rej = decode_message(Reject("c" * 36, "oversized").encode())
    assert rej == Reject("c" * 36, "oversized")


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([], "truncated"),
        ([b"hello"], "garbage"),
        ([b"ANPR/HIT/9", b"{}"], "version"),
        ([b"ANPR/XYZ/1"], "version"),
        ([TAG_HIT_V2, b"{}"], "truncated"),
        ([TAG_HIT_V2, b"{}", b"", b"", b""], "garbage"),
        ([TAG_HIT_V2, b"not json", b"", b""], "garbage"),
        ([TAG_HIT_V2, b"[1, 2]", b"", b""], "garbage"),
        ([TAG_HIT_V2, b"\xff\xfe", b"", b""], "garbage"),
        ([TAG_HIT_V2, b'{"id": "short"}', b"", b""], "invalid"),
        ([TAG_HEARTBEAT, b'{"node": "n1", "status": 3, "sent_at": "x"}'], "invalid"),
        ([TAG_ACK, b'{"ids": [1]}'], "invalid"),
        ([TAG_REJECT, b'{"id": null}'], "invalid"),
        ([b"ANPR/" + b"x" * 100], "garbage"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(frames, reason):
    with pytest.raises(ProtocolError) as e:
        decode_message(frames)
    assert e.value.reason == reason


def _header(**change):
    h = json.loads(make_hit(1).encode()[1])
    for path, value in change.items():
        obj = h
        *parents, leaf = path.split("__")
        for p in parents:
            obj = obj[p]
        obj[leaf] = value
    return json.dumps(h).encode()


@pytest.mark.parametrize(
    "change",
    [
        {"location__lat": 91.0},
        {"location__lat": None},  # lon without lat
        {"plate__confidence": 1.5},
        {"plate__confidence": float("nan")},
        {"plate__text": ""},
        {"plate__text": "A" * 33},
        {"match__priority": True},
        {"match__priority": 10**6},
        {"match__kind": "Exact Match"},
        {"match__watchlist": 5},
        {"node": "../../etc"},
        {"camera": ""},
        {"seen_at": "2026-05-01T12:00:00"},  # no zone
        {"seen_at": "yesterday"},
        {"location": []},
    ],
)
def test_invalid_fields_are_refused_naming_the_hit(change):
    header = _header(**change)
    with pytest.raises(ProtocolError) as e:
        decode([TAG_HIT_V2, header, b"", b""])
    assert e.value.reason == "invalid"
    assert e.value.hit_id == make_hit(1).hit_id  # so the edge can be told which one


def test_free_text_is_cleaned_not_refused():
    header = _header(plate__raw="AB\n123\x00", match__reason="r" * 600, location__road="A4\tkm")
    hit = decode([TAG_HIT_V2, header, b"", b""])
    assert hit.plate.raw == "AB 123 "
    assert hit.match.reason == "r" * 500
    assert hit.location.road == "A4\tkm"  # a tab is fine
    local = WatchlistMatch(watchlist="w", entry_id="1", reason="x\ry")
    assert local.reason == "x y"


def test_ids_as_the_edge_config_allows_them():
    hit = make_hit(1)
    odd = HitMessage(**{**hit.__dict__, "node": "_edge.1", "camera": "cam-2_b"})
    assert decode(odd.encode()) == odd


def test_pictures_must_be_jpeg():
    hit = make_hit(1)
    frames = hit.encode()
    with pytest.raises(ProtocolError, match="not a JPEG"):
        decode([frames[0], frames[1], b"GIF89a....", frames[3]])


def test_size_caps_are_checked_before_parsing():
    limits = Limits(max_header_bytes=1024, max_crop_bytes=1024, max_scene_bytes=2048)
    hit = make_hit(1, crop=500, scene=1000)
    frames = hit.encode(limits=limits)
    with pytest.raises(ProtocolError) as e:
        decode([frames[0], b"{" * 2000, frames[2], frames[3]], limits)
    assert e.value.reason == "oversized"  # not "garbage": it was never parsed
    with pytest.raises(ProtocolError) as e:
        decode([frames[0], frames[1], fake_jpeg(1025), frames[3]], limits)
    assert (e.value.reason, e.value.hit_id) == ("oversized", hit.hit_id)
    with pytest.raises(ProtocolError, match="scene"):
        decode([frames[0], frames[1], frames[2], fake_jpeg(2049)], limits)
    with pytest.raises(ProtocolError, match="oversized"):
        make_hit(1, crop=2000).encode(limits=limits)


# ---------------------------------------------------------------- fuzzing

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
_tags = st.sampled_from([TAG_HIT_V1, TAG_HIT_V2, TAG_HEARTBEAT, TAG_ACK, TAG_REJECT, b"ANPR/HIT/3"])


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_fuzz_random_frames_only_ever_raise_protocol_error(frames):
    try:
        decode_message(frames)
    except ProtocolError:
        pass


@FUZZ
@given(_tags, _json, st.lists(st.binary(max_size=64), max_size=3))
def test_fuzz_random_json_headers_only_ever_raise_protocol_error(tag, header, images):
    frames = [tag, json.dumps(header).encode(), *images]
    try:
        decode_message(frames)
    except ProtocolError:
        pass


@FUZZ
@given(st.data())
def test_fuzz_mutated_valid_hits(data):
    """Replace one field of a valid header with any JSON value: a hit, or ProtocolError."""
    header = json.loads(make_hit(1).encode()[1])
    section = data.draw(st.sampled_from(["", "location", "plate", "match"]))
    target = header[section] if section else header
    key = data.draw(st.sampled_from(sorted(target)))
    target[key] = data.draw(_json)
    frames = [TAG_HIT_V2, json.dumps(header).encode(), fake_jpeg(64), b""]
    try:
        hit = decode(frames)
    except ProtocolError as e:
        assert e.reason in {"invalid", "garbage"}
        return
    assert decode(hit.encode()) == hit  # whatever was accepted also goes out again


def test_both_protocols_raise_one_error_with_a_reason():
    assert ProtocolError is CoreProtocolError and watchlists.ProtocolError is CoreProtocolError
    sealed = watchlists.seal(b"HUGZ", {"v": watchlists.VERSION})
    cases = [
        (sealed[:2], "truncated"),
        ([*sealed, b""], "garbage"),
        ([sealed[0], sealed[1] + b"x", sealed[2]], "garbage"),  # checksum
        (watchlists.seal(b"HUGZ", {"v": 99}), "version"),
    ]
    for frames, reason in cases:
        with pytest.raises(CoreProtocolError) as e:
            watchlists.open_message(frames)
        assert e.value.reason == reason and str(e.value) == f"{reason}: {e.value.detail}"
    with pytest.raises(CoreProtocolError) as e:
        watchlists.parse_update(b"", {"v": watchlists.VERSION, "list": "no such list!"})
    assert e.value.reason == "invalid"
