"""Revocation: a key taken off the allow-list is refused on the connection it already has.

Real CURVE sockets on loopback.  ZAP judges a key at the handshake only; these show
that the collector also judges every message, cuts the connection, and that what the
edge sent meanwhile waits in its outbox until the key is put back.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter

import zmq
from helpers.link import (
    Keys,
    collector_config,
    make_hit,
    start_collector,
    stored_ids,
    wait_for,
)
from zmq.utils.monitor import recv_monitor_message

from edge.collector.service import CollectorService
from edge.collector.watchlist.master import WatchlistStore
from edge.collector.watchlist.server import WatchlistServer
from edge.core.keys import (
    AllowList,
    PeerCheck,
    generate_keypair,
    load_keypair,
    make_curve_client,
    make_curve_server,
    start_authenticator,
)
from edge.core.watchlist.entry import Entry
from edge.core.watchlist.protocol import CATALOGUE, ERROR, FETCH, LISTS, VERSION, open_message, seal
from edge.node.outbox import Outbox
from edge.node.sender import HitSender
from edge.node.watchlist.sync import WatchlistSync


def _dealer(ctx: zmq.Context, keys: Keys, name: str, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.immediate = True
    make_curve_client(sock, *keys.edge(name), keys.server_public)
    sock.connect(endpoint)
    return sock


def _send_when_connected(sock: zmq.Socket, frames: list[bytes]) -> None:
    def attempt() -> bool:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    wait_for(attempt, 10, "the CURVE handshake")


def _disconnected(monitor: zmq.Socket) -> bool:
    while monitor.poll(0):
        if recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED:
            return True
    return False


def _entry(pattern: str) -> Entry:
    return Entry(0, pattern, "stolen", "PL-KGP", "stolen_vehicle", added_by="test")


def test_a_key_rewritten_in_place_is_noticed_without_a_directory_change(tmp_path):
    allowed = tmp_path / "allowed"
    generate_keypair(tmp_path / "a", "node")
    generate_keypair(tmp_path / "b", "node")
    allowed.mkdir()
    shutil.copy(tmp_path / "a" / "node.key", allowed / "node.key")
    old, new = (load_keypair(tmp_path / d, "node")[0] for d in "ab")
    allow = AllowList(allowed, rescan_s=0.05)
    assert allow.current().get(old) == "node"
    revision = allow.revision
    # Written over in place: the directory's own time does not change.
    (allowed / "node.key").write_bytes((tmp_path / "b" / "node.key").read_bytes())
    wait_for(lambda: allow.current().get(new) == "node", 5, "the rewritten key")
    assert old not in allow.current()
    assert allow.revision > revision


def test_a_removed_key_is_refused_on_its_open_connection_and_cut(tmp_path, keys, ctx, caplog):
    caplog.set_level(logging.WARNING, logger="edge.core.keys")
    public, secret = load_keypair(keys.collector_dir, "collector")
    auth = start_authenticator(ctx, keys.allowed_dir)
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    make_curve_server(router, public, secret)
    endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    check = PeerCheck(auth.allow_list, "tests", endpoint)
    try:
        sock = _dealer(ctx, keys, "edge-1", endpoint)
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        _send_when_connected(sock, [b"1"])
        assert router.poll(5000)
        frames = router.recv_multipart(copy=False)
        assert check.sender(frames[1], frames[0].bytes) == "edge-1"

        (keys.allowed_dir / "edge-1.key").unlink()
        sock.send(b"2")
        assert router.poll(5000)
        frames = router.recv_multipart(copy=False)
        assert check.sender(frames[1], frames[0].bytes) is None
        assert check.cut == 1
        # A message that was queued behind it on the same connection: refused, and
        # the connection (perhaps another's by now, under the same number) not cut again.
        assert check.sender(frames[1], frames[0].bytes) is None
        assert check.refused == 2 and check.cut == 1
        wait_for(lambda: _disconnected(monitor), 5, "the edge to see its connection cut")
        # ZeroMQ connects again by itself; this time ZAP refuses the key.
        wait_for(lambda: auth.allow_list.denied >= 1, 10, "the reconnect to be refused")
        logged = [r.getMessage() for r in caplog.records if "refusing tests" in r.getMessage()]
        assert len(logged) == 1 and "edge-1" in logged[0]

        shutil.copy(keys.edge_dir("edge-1") / "edge-1.key", keys.allowed_dir / "edge-1.key")
        sock.disconnect(endpoint)  # (the sender does this itself after a refusal)
        sock.connect(endpoint)
        _send_when_connected(sock, [b"4"])
        assert router.poll(5000)
        frames = router.recv_multipart(copy=False)
        assert frames[1].bytes == b"4"
        assert check.sender(frames[1], frames[0].bytes) == "edge-1"
        assert any("its key is back" in r.getMessage() for r in caplog.records)
        monitor.close()
        sock.close()
    finally:
        router.close()
        auth.stop()


def test_a_revoked_edge_s_hits_wait_in_its_outbox_until_its_key_is_back(tmp_path, keys, ctx):
    pair = load_keypair(keys.collector_dir, "collector")
    server = WatchlistServer(tmp_path / "master.db", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                             keys=pair, heartbeat_s=0.1, poll_s=0.01)  # fmt: skip
    store = WatchlistStore(tmp_path / "master.db")
    store.import_entries("stolen", [_entry("AB123CD")])
    service = CollectorService(collector_config(tmp_path, keys), components=[server], ctx=ctx)
    service.start()
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    public, secret = keys.edge("edge1")
    sender = HitSender(outbox, service.endpoint, node_id="edge1", public_key=public,
                       secret_key=secret, server_key=keys.server_public, ctx=ctx,
                       ack_timeout_s=1.0, reconnect_max_s=0.2, max_backoff_s=0.5)  # fmt: skip
    requests = _dealer(ctx, keys, "edge1", server.snapshot_endpoint)
    monitor = requests.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    db = service.config.db_path
    try:
        sender.start()
        for n in range(5):
            outbox.add_hit(make_hit(n))
        wait_for(lambda: outbox.backlog() == 0, what="the first hits to be delivered")
        _send_when_connected(requests, seal(CATALOGUE, {"lists": None, "v": VERSION, "rid": 1}))
        assert requests.poll(5000)
        assert open_message(requests.recv_multipart())[0] == LISTS

        (keys.allowed_dir / "edge1.key").unlink()
        for n in range(5, 10):
            outbox.add_hit(make_hit(n))
        first = {make_hit(n).hit_id for n in range(5)}
        wait_for(lambda: service.stats().get("refused_revoked", 0) >= 1
                 or set(stored_ids(db)) - first, 5, "hits refused or stored")  # fmt: skip
        assert set(stored_ids(db)) == first
        wait_for(lambda: service.stats()["connections_cut"] >= 1, 5, "the connection cut")
        wait_for(lambda: service.stats()["connections_refused"] >= 1, 10, "the reconnect refused")
        assert set(stored_ids(db)) == first
        assert outbox.backlog() == 5  # waiting, not put aside

        # The open watchlist connection: a fetch gets no list, and the connection goes.
        requests.send_multipart(seal(FETCH, {"list": "stolen", "v": VERSION, "rid": 2}))
        wait_for(lambda: server.counters.get("requests_revoked", 0) >= 1 or requests.poll(0),
                 5, "the fetch refused or answered")  # fmt: skip
        wait_for(lambda: _disconnected(monitor), 5, "the watchlist connection cut")
        while requests.poll(0):  # the refusal may have got out before the cut
            assert open_message(requests.recv_multipart())[0] == ERROR

        shutil.copy(keys.edge_dir("edge1") / "edge1.key", keys.allowed_dir / "edge1.key")
        wait_for(lambda: outbox.backlog() == 0, 20, "the waiting hits to be delivered")
        counts = Counter(stored_ids(db))
        assert counts == Counter(make_hit(n).hit_id for n in range(10))  # each once
        assert sender.error is None
    finally:
        monitor.close()
        requests.close()
        sender.stop()
        service.stop()
        outbox.close()
        store.close()


def test_a_revoked_edge_gets_no_more_watchlist_updates(tmp_path, keys, ctx):
    pair = load_keypair(keys.collector_dir, "collector")
    auth = start_authenticator(ctx, keys.allowed_dir)
    server = WatchlistServer(tmp_path / "master.db", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                             keys=pair, heartbeat_s=0.1, poll_s=0.01)  # fmt: skip
    store = WatchlistStore(tmp_path / "master.db")
    store.import_entries("stolen", [_entry("AB123CD")])
    server.start(ctx)
    syncs = {}
    try:
        for name in ("good", "gone"):
            syncs[name] = WatchlistSync(
                tmp_path / f"{name}.db", server.snapshot_endpoint, ctx=ctx,
                updates_endpoint=server.publish_endpoint, server_public_key=keys.server_public,
                client_keys=keys.edge(name), heartbeat_s=0.1, request_timeout_s=1.0,
            )  # fmt: skip
            syncs[name].start()
        for sync in syncs.values():
            assert sync.wait_synced(10)
            wait_for(lambda s=sync: s.matcher.match("AB123CD"), 5, "the first entry")

        (keys.allowed_dir / "gone.key").unlink()
        store.import_entries("stolen", [_entry("XY987ZZ")])
        good, gone = (
            (lambda: syncs["good"].matcher.match("XY987ZZ")),
            (lambda: syncs["gone"].matcher.match("XY987ZZ")),
        )
        wait_for(lambda: gone() or (good() and server.counters.get("subscribers_cut")),
                 5, "the update at the allowed edge, its subscription cut")  # fmt: skip
        assert not gone()

        shutil.copy(keys.edge_dir("gone") / "gone.key", keys.allowed_dir / "gone.key")
        wait_for(gone, 30, "the edge back in sync")
    finally:
        for sync in syncs.values():
            sync.stop()
            sync.replica.close()
        server.stop()
        store.close()
        auth.stop()


def test_the_collector_judges_by_the_key_not_only_the_name(tmp_path, keys, ctx):
    """A node's key file replaced by a new key: the old key's connection is refused."""
    service = start_collector(tmp_path, keys, ctx)
    outbox = Outbox(tmp_path / "edge" / "outbox.db")
    public, secret = keys.edge("edge1")
    sender = HitSender(outbox, service.endpoint, node_id="edge1", public_key=public,
                       secret_key=secret, server_key=keys.server_public, ctx=ctx,
                       ack_timeout_s=1.0, reconnect_max_s=0.2, max_backoff_s=0.5)  # fmt: skip
    try:
        sender.start()
        outbox.add_hit(make_hit(0))
        wait_for(lambda: outbox.backlog() == 0, what="the first hit")
        generate_keypair(tmp_path / "new", "edge1")
        (keys.allowed_dir / "edge1.key").unlink()  # replaced as `anpr-edge keys` would
        shutil.copy(tmp_path / "new" / "edge1.key", keys.allowed_dir / "edge1.key")
        outbox.add_hit(make_hit(1))
        db = service.config.db_path
        wait_for(lambda: service.stats().get("refused_revoked", 0) >= 1
                 or len(stored_ids(db)) > 1, 5, "the old key refused")  # fmt: skip
        assert stored_ids(db) == [make_hit(0).hit_id]
        assert outbox.backlog() == 1
    finally:
        sender.stop()
        service.stop()
        outbox.close()
