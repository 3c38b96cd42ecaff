"""Exchange between agencies over a real nats-server: lists out, hits back, crashes, garbage."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from helpers.exchange import (
    Agency,
    StandInGrant,
    World,
    world_of,
)
from helpers.link import make_hit, wait_for

from edge.collector.exchange.link import Link, LinkSettings, PublishFailed
from edge.collector.exchange.messages import ListChange, encode_list_change
from edge.collector.exchange.outbox import Pending
from edge.collector.exchange.server_config import seed_file
from edge.collector.exchange.service import Exchange, _windows
from edge.collector.watchlist.master import WatchlistStore
from edge.core.link_protocol import WatchlistMatch
from edge.core.watchlist.entry import Entry, ListPolicy

LT, PL, LV = "lt-vsat", "pl-sg", "lv-vp"
DEADLINE = 5.0  # generous for a loaded 2-core machine; the flow itself takes < 1 s



SHARE = StandInGrant(PL, LT, lists=("stolen-pl",), hits_back=True)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with world_of(tmp_path, (LT, PL, LV), [SHARE]) as w:
        yield w


def entry(pattern: str, name: str = "stolen-pl", category: str = "stolen_vehicle") -> Entry:
    return Entry(0, pattern, name, "pl-sg", category, 2, "stolen in Białystok")


def plates(agency: Agency, name: str, now: float | None = None) -> set[str]:
    """The plates in force on list `name` of `agency`'s master store."""
    store = WatchlistStore(agency.watchlists, default_agency=agency.name)
    try:
        if name not in {n for n, i in store.lists().items() if i.active}:
            return set()
        t = time.time() if now is None else now
        return {e.pattern for e in store.entries(name) if e.active(t)}
    finally:
        store.close()


def edit(agency: Agency) -> WatchlistStore:
    return WatchlistStore(agency.watchlists, default_agency=agency.name)


def test_a_shared_list_reaches_the_partner_and_its_changes_follow(world: World) -> None:
    pl, lt, lv = world.agencies[PL], world.agencies[LT], world.agencies[LV]
    store = edit(pl)
    try:
        store.import_entries("stolen-pl", [entry("BI12345"), entry("BI777")],
                             policy=ListPolicy("stolen-pl", "fuzzy", 1.0, "stolen"))
        store.import_entries("internal", [entry("WX1", "internal")])  # granted to no one
        wait_for(lambda: plates(lt, "pl-sg.stolen-pl") == {"BI12345", "BI777"}, DEADLINE,
                 "the snapshot at lt-vsat")
        t0 = time.monotonic()
        store.add(entry("BI999"))
        wait_for(lambda: "BI999" in plates(lt, "pl-sg.stolen-pl"), DEADLINE, "an added entry")
        added_s = time.monotonic() - t0
        (gone,) = store.find("stolen-pl", "BI777")
        store.expire([gone.id])
        wait_for(lambda: plates(lt, "pl-sg.stolen-pl") == {"BI12345", "BI999"}, DEADLINE,
                 "an expired entry to stop at lt-vsat")
    finally:
        store.close()
    copy = edit(lt)
    try:
        assert copy.lists()["pl-sg.stolen-pl"].policy == ListPolicy(
            "pl-sg.stolen-pl", "fuzzy", 1.0, "stolen")
        assert "pl-sg.internal" not in copy.lists()
    finally:
        copy.close()
    assert plates(lv, "pl-sg.stolen-pl") == set()  # no grant to lv-vp
    assert added_s < 1.0 + 1.0  # the second, and a second of slack for a busy machine


def test_a_hit_on_a_partners_list_goes_back_exactly_once(world: World) -> None:
    lt, pl, lv = world.agencies[LT], world.agencies[PL], world.agencies[LV]
    on_shared = dataclasses.replace(make_hit(1, node="lt-e1", run="back"), match=WatchlistMatch(
        watchlist="pl-sg.stolen-pl", entry_id="7", entry_plate="BI12345", reason="stolen"))
    on_other = dataclasses.replace(on_shared, hit_id=make_hit(2, run="back").hit_id,
                                   match=dataclasses.replace(on_shared.match,
                                                             watchlist="pl-sg.other"))
    assert lt.exchange.forward_hits([on_shared, on_other]) == 1  # `other`: no hits back
    assert lt.exchange.forward_hits([on_shared]) == 0  # queued before: not again
    wait_for(lambda: pl.stored(), DEADLINE, "the hit at pl-sg")
    assert pl.stored() == [(on_shared.hit_id, "stolen-pl")]  # the owner's own list name
    assert pl.committed == [(on_shared.hit_id, LT)]  # with the partner as the agency
    wait_for(lambda: not lt.exchange.backlog(), DEADLINE, "the outbox to empty")
    assert lv.stored() == [] and lt.stored() == []


def test_kill_9_the_server_mid_flow_loses_nothing_and_doubles_nothing(world: World) -> None:
    lt, pl = world.agencies[LT], world.agencies[PL]
    hits = [dataclasses.replace(make_hit(i, node="lt-e1", run="crash", scene=2048),
                                match=WatchlistMatch(watchlist="pl-sg.stolen-pl",
                                                     entry_id="7", entry_plate="X"))
            for i in range(300)]
    lt.exchange.forward_hits(hits[:150])
    wait_for(lambda: len(pl.stored()) >= 20, DEADLINE, "the flow to start")
    world.server.kill()  # mid-flow: some sent, some PubAcks or acks lost with it
    lt.exchange.forward_hits(hits[150:])  # while the server is away: the outbox holds them
    store = edit(pl)
    try:
        store.import_entries("stolen-pl", [entry("BI4242")])  # a list change while away
    finally:
        store.close()
    world.server.start()
    want = {h.hit_id for h in hits}
    wait_for(lambda: {h for h, _ in pl.stored()} == want, 4 * DEADLINE, "every hit after")
    wait_for(lambda: "BI4242" in plates(lt, "pl-sg.stolen-pl"), DEADLINE, "the list change")
    stored = [h for h, _ in pl.stored()]
    assert len(stored) == len(set(stored)) == 300
    wait_for(lambda: not lt.exchange.backlog(), DEADLINE, "the outbox to empty")
    # The stream is a work queue: what pl-sg acked (after its commit) is gone from the
    # server, pictures and all.
    wait_for(lambda: stream_messages(world, PL) == 0, 15, "pl-sg's stream emptied")  # acks lost
    # in the kill come again after ack_wait


def test_a_sender_stopped_mid_pack_and_started_again_loses_and_doubles_nothing(
        world: World) -> None:
    lt, pl = world.agencies[LT], world.agencies[PL]
    hits = [dataclasses.replace(make_hit(i, node="lt-e1", run="restart", scene=60_000),
                                match=WatchlistMatch(watchlist="pl-sg.stolen-pl",
                                                     entry_id="7", entry_plate="X"))
            for i in range(600)]
    for i in range(0, 600, 16):  # as the collector hands them, an edge's batch at a time
        lt.exchange.forward_hits(hits[i : i + 16])
        if i == 288:
            wait_for(lambda: len(pl.stored()) >= 20, DEADLINE, "the flow to start")
    old = lt.exchange
    assert old.backlog()  # mid-flow: packs in flight, bodies held in memory and not sent
    old.stop()
    lt.exchange = Exchange(old.settings, db_path=old.db_path,
                           watchlists_path=old.watchlists_path, grants=old.grants,
                           commit_hits=old.commit_hits, poll_s=old.poll_s)
    lt.exchange.start()  # the rest from the body log
    want = {h.hit_id for h in hits}
    wait_for(lambda: {h for h, _ in pl.stored()} == want, 4 * DEADLINE, "every hit after")
    stored = [h for h, _ in pl.stored()]
    assert len(stored) == len(set(stored)) == 600
    for h in hits:  # each with its own pictures, byte for byte
        assert pl.hits.image(h.hit_id, "crop") == h.crop_jpeg
        assert pl.hits.image(h.hit_id, "scene") == h.scene_jpeg
    wait_for(lambda: not lt.exchange.backlog(), DEADLINE, "the outbox to empty")


def stream_messages(world: World, agency: str, kinds: tuple[str, ...] = ("hit", "hits")) -> int:
    """How many messages of `kinds` the agency's stream holds (duplicates are dropped by it;
    "hits": packs of them)."""
    async def count() -> int:
        nc = await nats.connect(world.server.url,
                                nkeys_seed=str(seed_file(world.creds, agency)))
        try:
            info = await nc.jetstream().stream_info("ANPR_IN", subjects_filter=">")
            subjects = info.state.subjects or {}
            return sum(n for s, n in subjects.items() if s.rpartition(".")[2] in kinds)
        finally:
            await nc.close()
    return asyncio.run(count())


def test_a_malformed_message_is_dead_lettered_and_the_flow_goes_on(world: World) -> None:
    lt = world.agencies[LT]
    link_of_pl = LinkSettings(agency=PL, url=world.server.url,
                              seed_file=seed_file(world.creds, PL))
    good = ListChange(PL, "stolen-pl", "e1", 1, "snapshot-begin",
                      policy=ListPolicy("stolen-pl"))
    upsert = ListChange(PL, "stolen-pl", "e1", 2, "upsert",
                        rows=(tuple(entry("BI5150")._replace(id=5)),))  # type: ignore[arg-type]

    async def send() -> None:
        link = Link(link_of_pl)
        await link.connect()
        subject = "in.lt-vsat.from.pl-sg.list"
        await link.publish(subject, b"{not json", "bad:1")
        await link.publish(subject, b'{"v": 1, "kind": "list", "owner": "lv-vp", "list": "x",'
                                    b' "epoch": "e", "seq": 1, "op": "withdrawn"}', "bad:2")
        await link.publish(subject, encode_list_change(good), good.msg_id)
        await link.publish(subject, encode_list_change(upsert), upsert.msg_id)
        await link.close()

    asyncio.run(send())
    wait_for(lambda: "BI5150" in plates(lt, "pl-sg.stolen-pl"), DEADLINE, "the good messages")
    dead = lt.exchange.dead_letters()
    assert [(s, i) for s, i, _ in dead] == [("in.lt-vsat.from.pl-sg.list", "bad:1"),
                                            ("in.lt-vsat.from.pl-sg.list", "bad:2")]
    assert "not JSON" in dead[0][2] and "lv-vp" in dead[1][2]


def test_no_import_no_delivery_and_a_revoked_grant_stops_the_flow(world: World) -> None:
    lt, pl = world.agencies[LT], world.agencies[PL]

    async def publish_as(agency: str, subject: str) -> None:
        link = Link(LinkSettings(agency=agency, url=world.server.url,
                                 seed_file=seed_file(world.creds, agency), publish_timeout_s=1))
        await link.connect()
        try:
            await link.publish(subject, b"{}", "probe:1")
        finally:
            await link.close()

    # lv-vp has no grant, so no import: its account cannot reach lt-vsat's stream
    with pytest.raises(PublishFailed, match="no stream answers"):
        asyncio.run(publish_as(LV, "in.lt-vsat.from.lv-vp.list"))
    # nor may pl-sg speak in lv-vp's name, or reach lv-vp
    with pytest.raises(PublishFailed):
        asyncio.run(publish_as(PL, "in.lt-vsat.from.lv-vp.list"))
    with pytest.raises(PublishFailed):
        asyncio.run(publish_as(PL, "in.lv-vp.from.pl-sg.list"))

    store = edit(pl)
    try:
        store.import_entries("stolen-pl", [entry("BI1")])
        wait_for(lambda: plates(lt, "pl-sg.stolen-pl") == {"BI1"}, DEADLINE, "the copy")
        world.regrant()  # the agreement revoked
        wait_for(lambda: plates(lt, "pl-sg.stolen-pl") == set(), DEADLINE,
                 "lt-vsat's copy to go")
        with pytest.raises(PublishFailed, match="no stream answers"):
            asyncio.run(publish_as(PL, "in.lt-vsat.from.pl-sg.list"))
        store.add(entry("BI2"))
        world.regrant(SHARE)  # signed again: a fresh snapshot
        wait_for(lambda: plates(lt, "pl-sg.stolen-pl") == {"BI1", "BI2"}, DEADLINE,
                 "the copy, again")
    finally:
        store.close()


def test_the_drainer_windows_hits_and_sends_each_list_change_alone() -> None:
    def row(i: int, kind: str) -> Pending:
        return Pending(i, PL, f"in.{PL}.from.{LT}.{kind}", f"{kind}:{i}", b"", 0)

    rows = [row(1, "hit"), row(2, "hit"), row(3, "hit"), row(4, "list"), row(5, "hit"),
            row(6, "list"), row(7, "list"), row(8, "hit")]
    assert [[r.id for r in g] for g in _windows(rows, 2)] == [[1, 2], [3], [4], [5], [6], [7],
                                                                [8]]
    assert [[r.id for r in g] for g in _windows(rows, 1)] == [[i] for i in range(1, 9)]
