"""The search's wire format: signed queries, answers in chunks, and whatever is wrong refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import stat

import nacl.signing
import pytest
from helpers.link import fake_jpeg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.core.errors import ProtocolError
from edge.core.keys import (
    KeyFileError,
    generate_signing_keypair,
    load_signing_key,
    load_verify_key,
)
from edge.core.search import (
    MAX_AGE_S,
    MAX_CHUNK_READS,
    TAG_SEARCH,
    TAG_SEARCH_ANSWER,
    SearchAnswer,
    SearchQuery,
    SearchRead,
    chunks,
    decode_answer,
    new_query_id,
    query_id_of,
    refusal,
    sign_query,
    verify_query,
)

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
FUZZ = settings(max_examples=300, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def query(**kw) -> SearchQuery:
    base = dict(
        query_id=new_query_id(),
        pattern="B123XY",
        mode="exact",
        max_distance=0.0,
        since=T0 - dt.timedelta(days=2),
        until=T0,
        nodes=("edge-a4", "edge-b1"),
        case_ref="CASE-2026-17",
        legal_basis="StPO 163e",
        requested_by="ines",
        agency="pl-police",
        issued_at=T0,
    )
    base.update(kw)
    return SearchQuery(**base)


def read(i: int = 0, **kw) -> SearchRead:
    base = dict(
        text=f"B{i:04d}XY",
        formatted=f"B {i:04d} XY",
        country="DE",
        confidence=0.93,
        seen_at=T0 + dt.timedelta(seconds=i),
        camera="cam-north",
        direction="northbound",
        vehicle_type="car",
        vehicle_colour="blue",
        lat=52.52,
        lon=13.40,
        crop_jpeg=fake_jpeg(40 + i % 7),
    )
    base.update(kw)
    return SearchRead(**base)


@pytest.fixture(scope="module")
def key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(b"\x07" * 32)


def test_a_signed_query_round_trips(key):
    q = query(mode="fuzzy", pattern="B123XY", max_distance=1.25, cameras=("cam-north",),
              area=(52.0, 13.0, 53.0, 14.0))  # fmt: skip
    frames = sign_query(q, key)
    assert frames[0] == TAG_SEARCH and len(frames) == 3 and len(frames[2]) == 64
    assert verify_query(frames, key.verify_key) == q


def test_a_query_signed_by_another_key_is_forged(key):
    frames = sign_query(query(), nacl.signing.SigningKey(b"\x08" * 32))
    with pytest.raises(ProtocolError) as e:
        verify_query(frames, key.verify_key)
    assert e.value.reason == "forged"
    assert query_id_of(frames) == json.loads(frames[1])["id"]  # to name it in the refusal


def test_a_header_changed_after_signing_is_forged(key):
    frames = sign_query(query(), key)
    header = json.loads(frames[1])
    header["until"] = "2030-01-01T00:00:00Z"
    tampered = [frames[0], json.dumps(header).encode(), frames[2]]
    with pytest.raises(ProtocolError) as e:
        verify_query(tampered, key.verify_key)
    assert e.value.reason == "forged"
    with pytest.raises(ProtocolError) as e:
        verify_query([frames[0], frames[1], frames[2][:-1]], key.verify_key)
    assert e.value.reason == "forged"


def test_a_signed_but_malformed_query_is_invalid(key):
    header = json.dumps(query().header() | {"mode": "regex"}).encode()
    frames = [TAG_SEARCH, header, key.sign(TAG_SEARCH + header).signature]
    with pytest.raises(ProtocolError) as e:
        verify_query(frames, key.verify_key)
    assert e.value.reason == "invalid"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(query_id="short"), "query id"),
        (dict(mode="regex"), "mode"),
        (dict(pattern="b123xy"), "normalised"),
        (dict(pattern="B1*"), "pattern"),  # an exact pattern has no wildcard
        (dict(mode="wildcard", pattern="B123XY"), "wildcard"),
        (dict(mode="wildcard", pattern="*1"), "known characters"),  # a dragnet
        (dict(mode="fuzzy", max_distance=0.0), "fuzzy"),
        (dict(mode="fuzzy", max_distance=2.0), "max_distance"),
        (dict(since=T0, until=T0 - dt.timedelta(seconds=1)), "since is after"),
        (dict(since=dt.datetime(2026, 1, 1)), "time zone"),
        (dict(nodes=()), "at least one node"),
        (dict(nodes=("bad node",)), "nodes"),
        (dict(cameras=("c/1",)), "cameras"),
        (dict(area=(53.0, 13.0, 52.0, 14.0)), "minimum"),
        (dict(area=(52.0, 13.0, 53.0)), "area"),
        (dict(area=(91.0, 13.0, 92.0, 14.0)), "min_lat"),
        (dict(max_rows=0), "max_rows"),
        (dict(case_ref="x\ny"), "control"),
    ],
)
def test_a_bad_query_is_refused(change, match):
    with pytest.raises(ProtocolError, match=match):
        query(**change)


def test_wildcards_and_fuzzy_queries_are_accepted():
    assert query(mode="wildcard", pattern="B12?XY").pattern == "B12?XY"
    assert query(mode="wildcard", pattern="*23X*").pattern == "*23X*"
    assert query(mode="fuzzy", max_distance=1.75).max_distance == 1.75


def test_freshness_window():
    q = query(issued_at=T0)
    q.check_fresh(T0 + dt.timedelta(seconds=MAX_AGE_S))
    q.check_fresh(T0 - dt.timedelta(seconds=59))
    for now in (T0 + dt.timedelta(seconds=MAX_AGE_S + 1), T0 - dt.timedelta(seconds=61)):
        with pytest.raises(ProtocolError) as e:
            q.check_fresh(now)
        assert e.value.reason == "expired"


def test_times_come_back_in_utc(key):
    cet = dt.timezone(dt.timedelta(hours=1))
    q = query(since=(T0 - dt.timedelta(hours=1)).astimezone(cet))
    assert q.since.tzinfo == UTC
    assert verify_query(sign_query(q, key), key.verify_key).since == T0 - dt.timedelta(hours=1)


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b"ANPR/HIT/3", b"{}", b"x" * 64],
        [TAG_SEARCH, b"{}"],
        [TAG_SEARCH, b"{}", b"x" * 64, b""],
        [TAG_SEARCH, b"x" * 20_000, b"x" * 64],
    ],
)
def test_garbage_queries_raise_protocol_errors(key, frames):
    with pytest.raises(ProtocolError):
        verify_query(frames, key.verify_key)
    assert query_id_of(frames) == ""


def test_answers_round_trip_in_chunks():
    reads = [read(i) for i in range(450)]
    parts = chunks("a" * 32, "edge-a4", reads, total=450, retention_h=24)
    assert [len(p.reads) for p in parts] == [200, 200, 50]
    assert [p.seq for p in parts] == [0, 1, 2] and [p.done for p in parts] == [0, 0, 1]
    back = [decode_answer(p.encode()) for p in parts]
    assert back == parts
    assert back[2].reads[-1].crop_jpeg == reads[-1].crop_jpeg
    frames = parts[0].encode()
    assert frames[0] == TAG_SEARCH_ANSWER and len(frames) == 2 + 200


def test_no_reads_is_one_empty_last_chunk():
    (only,) = chunks("a" * 32, "edge-a4", [], total=0, retention_h=24)
    assert only.done and not only.reads and decode_answer(only.encode()) == only


def test_a_refusal_round_trips_even_without_an_id():
    r = refusal("", "edge-a4", "forged: the signature\nis not the collector's", 24)
    back = decode_answer(r.encode())
    assert back == r and back.refused.startswith("forged") and "\n" not in back.refused
    with pytest.raises(ProtocolError):
        SearchAnswer("", "edge-a4", 0, (), True, 0)  # no id and not a refusal
    with pytest.raises(ProtocolError, match="refusal"):
        SearchAnswer("a" * 32, "edge-a4", 0, (read(),), True, 1, refused="no")


def test_a_read_without_a_place_or_crop():
    r = read(lat=None, lon=None, crop_jpeg=b"", country="")
    (part,) = chunks("a" * 32, "n1", [r], 1, 24)
    assert decode_answer(part.encode()).reads == (r,)
    with pytest.raises(ProtocolError, match="both lat and lon"):
        read(lat=None)
    with pytest.raises(ProtocolError, match="JPEG"):
        read(crop_jpeg=b"GIF89a")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: f[:-1],  # a crop missing
        lambda f: [*f, b""],  # a crop too many
        lambda f: [f[0], b"[]", *f[2:]],
        lambda f: [f[0], json.dumps(json.loads(f[1]) | {"seq": -1}).encode(), *f[2:]],
        lambda f: [f[0], json.dumps(json.loads(f[1]) | {"reads": [1]}).encode(), *f[2:3]],
        lambda f: [f[0], f[1], b"not a jpeg"],
        lambda f: [b"SRCH1", *f[1:]],
    ],
)
def test_bad_answers_raise_protocol_errors(mutate):
    (part,) = chunks("a" * 32, "n1", [read()], 1, 24)
    with pytest.raises(ProtocolError):
        decode_answer(mutate(part.encode()))


@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_random_frames_never_crash_the_decoders(frames):
    frames = [TAG_SEARCH_ANSWER, *frames[1:]] if frames[0][:1] == b"S" else frames
    for decoder in (decode_answer, lambda f: verify_query(f, nacl.signing.SigningKey(
            b"\x01" * 32).verify_key)):  # fmt: skip
        try:
            decoder(frames)
        except ProtocolError:
            pass
    query_id_of(frames)


@FUZZ
@given(st.dictionaries(st.sampled_from(list(query().header())),
                       st.none() | st.integers() | st.text(max_size=20) | st.floats()
                       | st.lists(st.integers(), max_size=5)))  # fmt: skip
def test_signed_headers_of_any_shape_never_crash(fields):
    key = nacl.signing.SigningKey(b"\x02" * 32)
    header = json.dumps(query().header() | fields).encode()
    try:
        verify_query([TAG_SEARCH, header, key.sign(TAG_SEARCH + header).signature], key.verify_key)
    except ProtocolError as e:
        assert e.reason in ("invalid", "garbage")


# ---------------------------------------------------------------- the signing keys


def test_signing_pair_written_and_loaded(tmp_path):
    sk, vk = generate_signing_keypair(tmp_path, "collector")
    assert stat.S_IMODE((tmp_path / "collector.sign").stat().st_mode) == 0o600
    assert bytes(sk).hex() not in (tmp_path / "collector.verify").read_text()
    loaded_sk = load_signing_key(tmp_path, "collector")
    loaded_vk = load_verify_key(tmp_path, "collector")
    assert bytes(loaded_sk) == bytes(sk) and bytes(loaded_vk) == bytes(vk)
    frames = sign_query(query(), loaded_sk)
    assert verify_query(frames, loaded_vk).case_ref == "CASE-2026-17"


def test_signing_pair_is_never_replaced_unless_forced(tmp_path):
    sk, _ = generate_signing_keypair(tmp_path, "collector")
    with pytest.raises(FileExistsError):
        generate_signing_keypair(tmp_path, "collector")
    sk2, _ = generate_signing_keypair(tmp_path, "collector", overwrite=True)
    assert bytes(sk2) != bytes(sk)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("collector.verify", None, "not found"),
        ("collector.verify", "public-key = zz\n", "64 hexadecimal"),
        ("collector.verify", "# nothing here\n", "no public-key"),
        ("collector.sign", "secret-seed = 12\n", "64 hexadecimal"),
    ],
)
def test_bad_key_files_name_the_file(tmp_path, name, text, match):
    if text is not None:
        (tmp_path / name).write_text(text)
    loader = load_verify_key if name.endswith(".verify") else load_signing_key
    with pytest.raises(KeyFileError, match=match) as e:
        loader(tmp_path, "collector")
    assert name in str(e.value)


def test_query_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        query().pattern = "X"  # type: ignore[misc]
    assert len(chunks("a" * 32, "n", [read(i) for i in range(MAX_CHUNK_READS)], 0, 0)) == 1
