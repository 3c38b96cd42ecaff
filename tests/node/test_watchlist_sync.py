"""Watchlist distribution over real ZeroMQ sockets on loopback: collector server, edge clients."""

from __future__ import annotations

import sqlite3
import time
import zlib

import pytest
import zmq

from edge.collector.watchlist.master import WatchlistStore
from edge.collector.watchlist.server import WatchlistServer
from edge.core.watchlist.entry import Entry, ListPolicy
from edge.core.watchlist.protocol import (
    CHUNK,
    HUGZ,
    LISTS,
    VERSION,
    hugz_body,
    list_topic,
    open_message,
    seal,
)
from edge.node.watchlist.sync import WatchlistSync

FAST = {"heartbeat_s": 0.1}


def eventually(check, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"{what} not met within {timeout} s")


def entry(pattern, list_name="stolen", **kw):
    kw.setdefault("agency", "PL-KGP")
    kw.setdefault("category", "stolen_vehicle")
    kw.setdefault("added_by", "test")
    return Entry(0, pattern, list_name, **kw)


def ids(matcher, text, **kw):
    return sorted(h.entry.id for h in matcher.match(text, **kw))


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)  # closes what a failed test left open


class Collector:
    """A master store and its server on ephemeral loopback ports."""

    def __init__(self, ctx, path, snapshot="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*", **kw):
        self.store = WatchlistStore(path)
        self.server = WatchlistServer(path, snapshot, publish, **{**FAST, "poll_s": 0.01, **kw})
        # A port given again (a restart) may still be held by the last socket's close,
        # which ZeroMQ finishes in its own thread.
        deadline = time.monotonic() + 5
        while True:
            try:
                self.server.start(ctx)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self):
        self.server.stop()
        self.store.close()


@pytest.fixture
def collector(ctx, tmp_path):
    c = Collector(ctx, tmp_path / "master.db")
    yield c
    c.stop()


@pytest.fixture
def edges(ctx, tmp_path):
    started = []

    def make(name="edge", collector=None, endpoint=None, **kw):
        server = collector.server if collector is not None else None
        sync = WatchlistSync(
            tmp_path / f"{name}.db",
            endpoint or server.snapshot_endpoint,
            ctx=ctx,
            updates_endpoint=kw.pop("updates_endpoint", None) or server.publish_endpoint,
            request_timeout_s=kw.pop("request_timeout_s", 2.0),
            **{**FAST, **kw},
        )
        sync.start()
        started.append(sync)
        return sync

    yield make
    for s in started:
        s.stop()
        s.replica.close()


def replica_rows(path):
    db = sqlite3.connect(path)
    try:
        return (
            db.execute("SELECT * FROM entries ORDER BY id").fetchall(),
            db.execute("SELECT * FROM lists ORDER BY name").fetchall(),
        )
    finally:
        db.close()


def test_snapshot_then_updates(collector, edges):
    store = collector.store
    store.import_entries("stolen", [entry("AB123CD"), entry("XY?99?")])
    store.import_entries("alerts", [entry("KR5OO1", "alerts", category="alert")],
                         policy=ListPolicy("alerts", "exact"))  # fmt: skip
    edge = edges(collector=collector)
    assert edge.wait_synced(5)
    m = edge.matcher
    assert ids(m, "AB123CD") == [1]
    assert ids(m, "A8123CD") == [1]  # fuzzy on a fuzzy list
    assert ids(m, "XY7991") == [2]
    assert ids(m, "KR5OO1") == [3] and ids(m, "KR5001") == []  # exact list

    t0 = time.monotonic()
    store.import_entries("stolen", [entry("WW111AA", reason="seen at the border")])
    hit = eventually(lambda: m.match("WW111AA"), 1.0, "new entry matched")
    assert hit[0].entry.reason == "seen at the border"
    assert time.monotonic() - t0 < 1.0

    store.import_entries("stolen", [entry("WW111AA", reason="updated")])
    eventually(lambda: m.match("WW111AA")[0].entry.reason == "updated", 1.0, "update")
    store.import_entries("stolen", [entry("WW111AA", reason="updated")], replace_all=True)
    eventually(lambda: not m.match("AB123CD"), 1.0, "entries removed by --replace")
    assert ids(m, "WW111AA") == [4]
    assert edge.status()["snapshots"] == 2 and "refused" not in edge.status()


def test_edge_away_catches_up_and_restarts_offline(ctx, collector, edges, tmp_path):
    store = collector.store
    store.import_entries("stolen", [entry("AB123CD"), entry("CD456EF")])
    store.import_entries("case7", [entry("ZZ*77", "case7", category="case")])
    edge = edges("away", collector)
    assert edge.wait_synced(5)
    edge.stop()
    edge.replica.close()

    # while the edge is away
    store.import_entries("stolen", [entry("NEW1234")])
    store.expire([2])
    store.drop_list("case7")

    # restarted with no collector to be reached: the replica still matches
    offline = edges("away", endpoint="tcp://127.0.0.1:1", updates_endpoint="tcp://127.0.0.1:2")
    assert ids(offline.matcher, "AB123CD") == [1]
    assert ids(offline.matcher, "ZZ1177") == [3]
    assert not offline.wait_synced(0.3)
    offline.stop()
    offline.replica.close()

    back = edges("away", collector)
    assert back.wait_synced(5)
    m = back.matcher
    assert ids(m, "NEW1234") == [4]
    assert ids(m, "CD456EF") == []  # expired while away
    assert ids(m, "ZZ1177") == []  # list dropped while away
    assert ids(m, "AB123CD") == [1]
    status = back.status()
    assert status["caught_up"] >= 3 and "snapshots" not in status  # from the log, not anew


def test_away_past_the_log_gets_a_full_snapshot(collector, edges):
    store = collector.store
    store.import_entries("stolen", [entry("AB123CD")])
    edge = edges("e", collector)
    assert edge.wait_synced(5)
    edge.stop()
    edge.replica.close()
    store.import_entries("stolen", [entry("LATE123")])
    store.import_entries("stolen", [entry("LATE456")], replace_all=True)
    store.purge(retention_s=-1)  # the log keeps only each list's last update
    back = edges("e", collector)
    assert back.wait_synced(5)
    assert ids(back.matcher, "LATE456") == [3]
    assert ids(back.matcher, "AB123CD") == ids(back.matcher, "LATE123") == []
    assert back.status()["snapshots"] == 1


def test_expired_entries_stop_matching_without_a_message(ctx, tmp_path, edges, caplog):
    c = Collector(ctx, tmp_path / "m.db")
    c.store.import_entries("stolen", [entry("AB123CD", valid_until=time.time() + 0.5)])
    edge = edges("e", c)
    assert edge.wait_synced(5)
    assert ids(edge.matcher, "AB123CD") == [1]
    c.stop()  # the centre goes silent
    eventually(lambda: not edge.matcher.match("AB123CD"), 2.0, "expiry")
    eventually(lambda: "collector silent" in caplog.text, 2.0, "silence noticed")


def test_expire_and_drop_from_the_centre(collector, edges):
    store = collector.store
    store.import_entries("stolen", [entry("AB123CD")])
    store.import_entries("case", [entry("CC111CC", "case")])
    edge = edges("e", collector)
    assert edge.wait_synced(5)
    store.expire([1])
    eventually(lambda: not edge.matcher.match("AB123CD"), 1.0, "expired entry")
    store.drop_list("case")
    eventually(lambda: not edge.matcher.match("CC111CC"), 1.0, "dropped list")
    # a list of the same name made again starts empty
    store.import_entries("case", [entry("DD222DD", "case")])
    eventually(lambda: edge.matcher.match("DD222DD"), 1.0, "list made again")
    assert not edge.matcher.match("CC111CC")
    assert edge.replica.count("case") == 1


def test_only_the_lists_that_concern_the_edge(collector, edges):
    store = collector.store
    store.import_entries("pl", [entry("AB123CD", "pl")])
    store.import_entries("de", [entry("B-XY 999", "de")])
    edge = edges("e", collector, lists=["pl"])
    assert edge.wait_synced(5)
    assert ids(edge.matcher, "AB123CD") == [1] and ids(edge.matcher, "BXY999") == []
    store.import_entries("de", [entry("DE111", "de")])
    store.import_entries("pl", [entry("PL222", "pl")])
    eventually(lambda: edge.matcher.match("PL222"), 1.0, "own list's update")
    assert not edge.matcher.match("DE111")
    assert set(edge.replica.lists()) == {"pl"}


def _fake_publisher(ctx):
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    return pub, f"tcp://127.0.0.1:{port}"


def test_garbage_on_the_update_socket_changes_nothing(ctx, collector, edges, caplog):
    store = collector.store
    store.import_entries("stolen", [entry("AB123CD")])
    pub, endpoint = _fake_publisher(ctx)
    edge = edges("e", collector, updates_endpoint=endpoint)
    assert edge.wait_synced(5)
    before = replica_rows(edge.replica.path)
    epoch, topic = store.epoch, list_topic("stolen")

    def heard():  # a valid heartbeat, until the subscription is through
        pub.send_multipart(seal(HUGZ, hugz_body(epoch, {"stolen": 2})))
        return edge.status()["heard_s_ago"] is not None

    eventually(heard, 5, "fake publisher heard")
    good = {"v": VERSION, "epoch": epoch, "list": "stolen", "seq": 3, "op": "upsert",
            "entries": [[99, "EVIL123", "X", "alert", 1, "", None, None, None, "x"]]}  # fmt: skip
    sealed = seal(topic, good)
    flipped = bytearray(sealed[1])
    flipped[5] ^= 0x20
    squeezed = seal(topic, {**good, "reason": "x" * 5000})  # compressed body
    garbage = [
        [topic],  # one frame
        [topic, b"\x00{}", b"\x00\x00\x00\x00"],  # bad checksum
        [sealed[0], bytes(flipped), sealed[2]],  # a flipped bit
        [squeezed[0], squeezed[1][:-20], squeezed[2]],  # truncated
        [topic, *seal(topic, good)[1:]][:2],  # a frame missing
        seal(topic, {**good, "v": 99}),
        seal(
            topic, {**good, "entries": [[99, "ev!l", "X", "alert", 1, "", None, None, None, "x"]]}
        ),
        seal(topic, {**good, "entries": [[99, "EVIL123", "X", "alert", 42, "", None, None, None]]}),
        seal(topic, {**good, "op": "explode"}),
        seal(list_topic("other"), good),  # topic and list disagree
        seal(topic, {**good, "seq": "3"}),
        [topic, b"\x01" + zlib.compress(b"[1, 2, 3]"), b""],
    ]
    for frames in garbage:
        pub.send_multipart(frames)
    eventually(lambda: edge.status().get("refused", 0) == len(garbage), 3, "all refused")
    # stale and foreign updates are valid messages, and ignored
    pub.send_multipart(seal(topic, {**good, "seq": 1}))
    pub.send_multipart(seal(topic, {**good, "epoch": "someone-else"}))
    eventually(lambda: edge.status().get("duplicates", 0) >= 1, 3, "duplicate ignored")
    assert replica_rows(edge.replica.path) == before
    assert not edge.matcher.match("EVIL123")
    assert ids(edge.matcher, "AB123CD") == [1]
    assert "checksum mismatch" in caplog.text
    pub.close()


def test_a_corrupt_snapshot_is_refused_and_the_replica_stays(ctx, collector, edges, tmp_path):
    collector.store.import_entries("stolen", [entry("AB123CD")])
    edge = edges("e", collector)
    assert edge.wait_synced(5)
    edge.stop()
    edge.replica.close()
    before = replica_rows(tmp_path / "e.db")

    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    pub, pub_endpoint = _fake_publisher(ctx)
    bad = edges("e", endpoint=f"tcp://127.0.0.1:{port}", updates_endpoint=pub_endpoint)
    served = 0
    deadline = time.monotonic() + 5
    while served < 4 and time.monotonic() < deadline:
        if not router.poll(100):
            continue
        ident, *frames = router.recv_multipart()
        _, req = open_message(frames)
        rid = req["rid"]
        if "cursor" not in req:  # catalogue: a new store with the list further on
            reply = seal(LISTS, {"v": VERSION, "rid": rid, "epoch": "forged", "lists": {
                "stolen": {"seq": 9, "active": True, "policy": {"name": "stolen"}}}})  # fmt: skip
        else:  # the snapshot's first chunk, cut short
            chunk = seal(CHUNK, {"v": VERSION, "rid": rid, "list": "stolen", "mode": "full",
                                 "epoch": "forged", "seq": 9, "active": True,
                                 "policy": {"name": "stolen"}, "next": None,
                                 "entries": [[5, "FAKE111", "X", "c", 1, "", None, None, None,
                                              "x"]] * 50})  # fmt: skip
            reply = [chunk[0], chunk[1][: len(chunk[1]) // 2], chunk[2]]
        router.send_multipart([ident, *reply])
        served += 1
    assert served >= 2
    eventually(lambda: bad.status().get("refused", 0) >= 1, 3, "bad reply refused")
    assert not bad.matcher.match("FAKE111")
    assert ids(bad.matcher, "AB123CD") == [1]
    router.close()
    pub.close()
    bad.stop()
    bad.replica.close()
    entries_before, _ = before
    entries_after, _ = replica_rows(tmp_path / "e.db")
    assert entries_after == entries_before  # the entries are as they were
    assert entries_before


def test_curve_only_allowed_edges_get_the_lists(ctx, tmp_path, edges):
    from edge.core.keys import generate_keypair, start_authenticator

    keys = tmp_path / "keys"
    server_keys = generate_keypair(keys, "collector")
    edge_keys = generate_keypair(keys / "allowed", "edge-1")
    stranger = zmq.curve_keypair()
    auth = start_authenticator(ctx, keys / "allowed")
    try:
        c = Collector(ctx, tmp_path / "m.db", keys=server_keys)
        c.store.import_entries("stolen", [entry("AB123CD")])
        server_public = server_keys[0]
        good = edges("good", c, server_public_key=server_public, client_keys=edge_keys)
        evil = edges("evil", c, server_public_key=server_public, client_keys=stranger,
                     request_timeout_s=0.5)  # fmt: skip
        assert good.wait_synced(5)
        assert ids(good.matcher, "AB123CD") == [1]
        assert not evil.wait_synced(1.0)
        assert not evil.matcher.match("AB123CD")
        evil.stop()
        good.stop()
        c.stop()
    finally:
        auth.stop()


def test_a_new_master_store_resets_the_edge(ctx, tmp_path, edges):
    first = Collector(ctx, tmp_path / "a.db")
    first.store.import_entries("stolen", [entry("AB123CD")])
    snapshot, publish = first.server.snapshot_endpoint, first.server.publish_endpoint
    edge = edges("e", first)
    assert edge.wait_synced(5)
    first.stop()
    second = Collector(ctx, tmp_path / "b.db", snapshot, publish)
    try:
        second.store.import_entries("other", [entry("ZZ999ZZ", "other")])
        eventually(lambda: edge.matcher.match("ZZ999ZZ"), 5, "the new store's lists")
        assert not edge.matcher.match("AB123CD")
        assert edge.replica.epoch == second.store.epoch
    finally:
        second.stop()


def test_server_refuses_garbage_requests_and_keeps_serving(ctx, collector, edges, caplog):
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(collector.server.snapshot_endpoint)
    dealer.send_multipart([b"nonsense"])
    dealer.send_multipart(seal(b"FETCH", {"v": VERSION, "rid": 1, "list": "../etc"}))
    replies = []
    for _ in range(2):
        assert dealer.poll(2000)
        replies.append(open_message(dealer.recv_multipart()))
    assert [(topic, body["rid"]) for topic, body in replies] == [(b"ERROR", None), (b"ERROR", 1)]
    assert "not a list name" in replies[1][1]["error"]
    dealer.close()
    collector.store.import_entries("stolen", [entry("AB123CD")])
    edge = edges("e", collector)
    assert edge.wait_synced(5) and edge.matcher.match("AB123CD")
    assert collector.server.counters["requests_refused"] == 2


def test_many_edges_see_a_change_within_a_second(ctx, collector, edges):
    collector.store.import_entries("stolen", [entry("AB123CD")])
    fleet = [edges(f"e{i}", collector) for i in range(8)]
    for e in fleet:
        assert e.wait_synced(5)
    t0 = time.monotonic()
    collector.store.import_entries("stolen", [entry("FAST123")])
    for e in fleet:
        eventually(lambda e=e: e.matcher.match("FAST123"), 1.0, "propagation")
    assert time.monotonic() - t0 < 1.0


def test_a_large_snapshot_is_loaded_by_a_rebuild(ctx, collector, edges):
    entries = [entry(f"AB{i:05d}") for i in range(3000)]
    collector.store.import_entries("stolen", entries)
    edge = edges("e", collector, rebuild_after=1000)
    assert edge.wait_synced(5)
    eventually(lambda: edge.matcher.match("AB02999"), 5, "rebuilt matcher")
    assert edge.status()["rebuilds"] >= 1 and edge.matcher.overlay_size == 0
    collector.store.import_entries("stolen", [entry("AB99999")])
    eventually(lambda: edge.matcher.match("AB99999"), 1.0, "update after the rebuild")


def test_a_store_put_back_to_an_older_state_is_fetched_again(ctx, tmp_path, edges):
    import shutil

    first = Collector(ctx, tmp_path / "m.db")
    first.store.import_entries("stolen", [entry("AB123CD")])
    snapshot, publish = first.server.snapshot_endpoint, first.server.publish_endpoint
    first.stop()
    shutil.copy(tmp_path / "m.db", tmp_path / "backup.db")  # at update 2
    first = Collector(ctx, tmp_path / "m.db", snapshot, publish)
    first.store.import_entries("stolen", [entry("LATER99")])  # update 3
    edge = edges("e", first)
    assert edge.wait_synced(5) and edge.matcher.match("LATER99")
    first.stop()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"m.db{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.db", tmp_path / "m.db")
    restored = Collector(ctx, tmp_path / "m.db", snapshot, publish)
    try:
        eventually(lambda: not edge.matcher.match("LATER99"), 5, "the restored state")
        assert ids(edge.matcher, "AB123CD") == [1]
        assert edge.replica.lists()["stolen"].seq == 2
    finally:
        restored.stop()
