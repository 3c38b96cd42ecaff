"""Thousands of bad messages at a running collector: each refused and counted, none fatal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import zmq
from helpers.link import fake_jpeg, make_hit, make_keys, start_collector, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.collector.service import CollectorService
from edge.core.keys import make_curve_client
from edge.core.link_protocol import (
    TAG_ACK,
    TAG_HEARTBEAT,
    TAG_HIT_V1,
    TAG_HIT_V2,
    TAG_REJECT,
    Ack,
    HitMessage,
    decode_message,
)

EXAMPLES = 150  # each a burst of 1-40 messages: thousands in all

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=10,
)
_tag = st.sampled_from(
    [TAG_HIT_V1, TAG_HIT_V2, TAG_HEARTBEAT, TAG_ACK, TAG_REJECT, b"ANPR/HIT/3", b"ANPR/HB/0"]
)


def _mutated_hit(data: st.DataObject) -> list[bytes]:
    frames = make_hit(
        data.draw(st.integers(1, 10**6)), crop=64, scene=64
    ).encode()  # not 0: the sentinel
    header = json.loads(frames[1])
    how = data.draw(st.sampled_from(["field", "truncate", "bytes", "drop", "extra", "oversize"]))
    if how == "field":  # one field of the header replaced by any JSON value
        section = data.draw(st.sampled_from(["", "location", "plate", "match"]))
        target = header[section] if section else header
        target[data.draw(st.sampled_from(sorted(target)))] = data.draw(_json)
        frames[1] = json.dumps(header).encode()
    elif how == "truncate":  # a header cut short
        frames[1] = frames[1][: data.draw(st.integers(0, len(frames[1]) - 1))]
    elif how == "bytes":  # random bytes flipped anywhere
        i = data.draw(st.integers(0, len(frames) - 1))
        raw = bytearray(frames[i])
        for _ in range(data.draw(st.integers(1, 8))):
            if raw:
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        frames[i] = bytes(raw)
    elif how == "drop":
        del frames[data.draw(st.integers(0, len(frames) - 1))]
    elif how == "extra":
        frames.append(data.draw(st.binary(max_size=50)))
    else:  # pictures or header over the caps (below ZeroMQ's own connection-dropping limit)
        i = data.draw(st.sampled_from([1, 2, 3]))
        frames[i] = (b"{" if i == 1 else b"") + fake_jpeg(600 * 1024)
    return frames


_garbage = st.one_of(
    st.lists(st.binary(max_size=200), min_size=1, max_size=6),
    st.tuples(_tag, _json).map(lambda t: [t[0], json.dumps(t[1]).encode()]),
    st.tuples(_tag, _json, st.binary(max_size=100)).map(
        lambda t: [t[0], json.dumps(t[1]).encode(), t[2], t[2]]
    ),
)


@dataclass
class Live:
    """A collector in this process, one allowed edge socket, and a hit it already holds."""

    service: CollectorService
    sock: zmq.Socket
    sentinel: HitMessage


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    """Shared by every example of every test here: each test counts from where it starts."""
    root = tmp_path_factory.mktemp("fuzz")
    keys = make_keys(root)
    public, secret = keys.edge("edge1")
    ctx = zmq.Context()
    service = start_collector(root, keys, ctx)
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    make_curve_client(sock, public, secret, keys.server_public)
    sock.connect(service.endpoint)
    sentinel = make_hit(0)
    sock.send_multipart(sentinel.encode())  # stored now; from here on it is a duplicate
    assert sock.poll(10_000)
    sock.recv_multipart()
    yield Live(service, sock, sentinel)
    sock.close()
    service.stop()
    ctx.term()


def _accounted(stats: dict[str, int]) -> int:
    return sum(stats.get(k, 0) for k in ("refused", "stored", "duplicates", "heartbeats"))


def _send_and_check(live: Live, burst: list[list[bytes]]) -> None:
    service, sock, sentinel = live.service, live.sock, live.sentinel
    before = _accounted(service.stats())
    for frames in burst:
        sock.send_multipart(frames)
    # The sentinel is acked only after everything sent before it was handled:
    # an ack proves the collector is alive and still taking hits.
    sock.send_multipart(sentinel.encode())
    while True:
        assert sock.poll(10_000), "the collector stopped answering"
        msg = decode_message(sock.recv_multipart())
        if isinstance(msg, Ack) and sentinel.hit_id in msg.ids:
            break
    # Every message is counted once: refused, stored, a duplicate, or a heartbeat
    # (heartbeats are looked at just after the acks go out, hence the wait).
    wait_for(
        lambda: _accounted(service.stats()) - before == len(burst) + 1,
        5,
        "every message to be counted",
    )


def _still_stores_hits(live: Live, n: int) -> None:
    fresh = make_hit(n)
    live.sock.send_multipart(fresh.encode())
    assert live.sock.poll(10_000)
    assert decode_message(live.sock.recv_multipart()) == Ack((fresh.hit_id,))


def _refused_since(live: Live, before: dict[str, int]) -> dict[str, int]:
    now = live.service.stats()
    return {k: now[k] - before.get(k, 0) for k in now
            if k.startswith("refused") and now[k] > before.get(k, 0)}  # fmt: skip


FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# Each test runs its examples itself (a @given function called with the shared collector)
# and then checks what they did, so that it passes alone as well as after the others.


@FUZZ
@given(data=st.data())
def _mutated_bursts(live: Live, sent: list[int], data: st.DataObject) -> None:
    burst = [_mutated_hit(data) for _ in range(data.draw(st.integers(1, 40)))]
    _send_and_check(live, burst)
    sent.append(len(burst))


@FUZZ
@given(burst=st.lists(_garbage, min_size=1, max_size=40))
def _garbage_bursts(live: Live, sent: list[int], burst: list[list[bytes]]) -> None:
    _send_and_check(live, burst)
    sent.append(len(burst))


def test_fuzz_mutated_hits_at_a_live_collector(live):
    before, sent = live.service.stats(), []
    _mutated_bursts(live, sent)
    refused = _refused_since(live, before)
    assert sum(sent) > 1500  # about 3300 messages
    assert refused["refused"] > sum(sent) / 2  # the rest were valid, even mutated
    for reason in ("garbage", "truncated", "oversized", "invalid"):
        assert refused.get(f"refused_{reason}", 0) > 0, reason
    _still_stores_hits(live, 999_999_998)


def test_fuzz_garbage_at_a_live_collector(live):
    before, sent = live.service.stats(), []
    _garbage_bursts(live, sent)
    refused = _refused_since(live, before)
    assert sum(sent) > 500  # shorter bursts than the mutated hits' (about 800 messages)
    assert refused["refused"] > sum(sent) / 2
    for reason in ("garbage", "version", "invalid"):
        assert refused.get(f"refused_{reason}", 0) > 0, reason
    _still_stores_hits(live, 999_999_999)


def test_a_frame_beyond_zeromqs_limit_drops_only_that_connection(live):
    sock, sentinel = live.sock, live.sentinel
    frames = make_hit(5).encode()
    frames[3] = fake_jpeg(8 * 1024 * 1024)  # over maxmsgsize: ZeroMQ drops the connection
    sock.send_multipart(frames)
    sock.send_multipart(sentinel.encode())  # lost with the connection
    # The edge reconnects by itself (ZeroMQ), and the collector is still there.
    retry = make_hit(6)
    got = None
    for _ in range(50):
        sock.send_multipart(retry.encode())
        if sock.poll(500):
            got = decode_message(sock.recv_multipart())
            if isinstance(got, Ack) and retry.hit_id in got.ids:
                break
    assert isinstance(got, Ack) and retry.hit_id in got.ids
