"""The consumer's batches, without a server: a fetched batch's hits committed in one sink call,
then acked; a malformed message dead-lettered alone; a store error acks nothing not stored;
list changes applied in their place between the hits."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from helpers.exchange import StandInGrant, StandInGrants
from helpers.link import make_hit

from edge.collector.exchange.link import LinkSettings
from edge.collector.exchange.messages import (
    HitPack,
    ListChange,
    decode_message,
    encode_hit,
    encode_hit_parts,
    encode_list_change,
    pack_bodies,
    pack_msg_id,
    pack_parts,
)
from edge.collector.exchange.outbox import Pending
from edge.collector.exchange.service import GAP_PATIENCE, Exchange, _packs, _windows
from edge.collector.exchange.share import HitReceiver
from edge.collector.watchlist.master import WatchlistStore
from edge.core.link_protocol import HitMessage, WatchlistMatch
from edge.core.watchlist.entry import Entry, ListPolicy

LT, PL = "lt-vsat", "pl-sg"
GRANTS = StandInGrants({LT: {}, PL: {}}, [
    StandInGrant(PL, LT, lists=("stolen-pl",)),          # pl-sg's list held by lt-vsat
    StandInGrant(LT, PL, lists=("wanted",), hits_back=True),  # pl-sg's hits on lt's list back
])


@dataclasses.dataclass
class FakeMsg:
    """What the consumer uses of a fetched `nats.aio.msg.Msg`."""

    subject: str
    data: bytes
    msg_id: str
    acked: bool = False
    naked: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return {"Nats-Msg-Id": self.msg_id}

    async def ack(self) -> None:
        self.acked = True

    async def nak(self, delay: float | None = None) -> None:
        self.naked = True


class Sink:
    def __init__(self, watchlists: Path):
        # (hit ids, agency, the plates of the copy at the time) of each call
        self.calls: list[tuple[list[str], str, set[str] | None]] = []
        self.fail = False
        self.watchlists = watchlists

    def __call__(self, hits: Sequence[HitMessage], agency: str) -> None:
        if self.fail:
            raise OSError("disk full")
        self.calls.append(([h.hit_id for h in hits], agency, self.copy()))

    def copy(self) -> set[str] | None:
        """The plates of lt-vsat's copy of pl-sg's list; None while there is no copy."""
        store = WatchlistStore(self.watchlists, default_agency=LT)
        try:
            if "pl-sg.stolen-pl" not in store.lists():
                return None
            return {e.pattern for e in store.entries("pl-sg.stolen-pl")}
        finally:
            store.close()


@pytest.fixture
def lt(tmp_path: Path) -> Iterator[tuple[Exchange, Sink]]:
    sink = Sink(tmp_path / "watchlists.db")
    ex = Exchange(LinkSettings(agency=LT, url="nats://127.0.0.1:1", seed_file=tmp_path / "x.nk"),
                  db_path=tmp_path / "exchange.db", watchlists_path=sink.watchlists,
                  grants=lambda: GRANTS, commit_hits=sink)  # type: ignore[arg-type]
    ex._worker.submit(ex._open_stores).result(10)  # the stores, without the loop or a server
    try:
        yield ex, sink
    finally:
        ex.stop()


def hit(i: int) -> FakeMsg:
    h = dataclasses.replace(make_hit(i, node="pl-e1", run="batch"), match=WatchlistMatch(
        watchlist="lt-vsat.wanted", entry_id="1", entry_plate="X"))
    return FakeMsg(f"in.{LT}.from.{PL}.hit", encode_hit(h), f"hit:{h.hit_id}")


def change(seq: int, op: str, **kw: object) -> FakeMsg:
    c = ListChange(PL, "stolen-pl", "e1", seq, op, **kw)  # type: ignore[arg-type]
    return FakeMsg(f"in.{LT}.from.{PL}.list", encode_list_change(c), c.msg_id)


def ids(msgs: Sequence[FakeMsg]) -> list[str]:
    return [m.msg_id.removeprefix("hit:") for m in msgs]


def test_a_batchs_hits_are_one_commit_and_a_malformed_one_is_dead_lettered_alone(lt) -> None:
    ex, sink = lt
    good = [hit(i) for i in range(5)]
    bad = FakeMsg(f"in.{LT}.from.{PL}.hit", b"ANPX\x09", "hit:bad")
    batch = [*good[:2], bad, *good[2:]]
    asyncio.run(ex._take(batch))  # type: ignore[arg-type]
    assert [(c[0], c[1]) for c in sink.calls] == [(ids(good), PL)]  # one commit, the rest
    assert all(m.acked and not m.naked for m in batch)
    assert [(i, why) for _, i, why in ex.dead_letters()] == [
        ("hit:bad", "garbage: a hit has 3 or 4 frames, not 9")]
    assert ex.counts == {"applied": 5, "dead-lettered": 1}


def test_a_store_error_acks_nothing_and_the_batch_comes_again(lt) -> None:
    ex, sink = lt
    batch = [hit(i) for i in range(4)]
    sink.fail = True
    asyncio.run(ex._take(batch))  # type: ignore[arg-type]
    assert not any(m.acked for m in batch) and all(m.naked for m in batch)
    assert sink.calls == [] and ex.dead_letters() == []
    sink.fail = False
    again = [dataclasses.replace(m, naked=False) for m in batch]  # redelivered
    asyncio.run(ex._take(again))  # type: ignore[arg-type]
    assert [c[0] for c in sink.calls] == [ids(batch)]
    assert all(m.acked and not m.naked for m in again)


def test_list_changes_are_applied_in_their_place_between_the_hits(lt) -> None:
    ex, sink = lt
    row = tuple(Entry(5, "BI5150", "stolen-pl", PL, "stolen_vehicle", 2, "stolen"))
    h = [hit(i) for i in range(4)]
    batch = [h[0], h[1], change(1, "snapshot-begin", policy=ListPolicy("stolen-pl")),
             change(2, "upsert", rows=(row,)), h[2], change(3, "snapshot-end"), h[3]]
    asyncio.run(ex._take(batch))  # type: ignore[arg-type]
    assert [(c[0], c[2]) for c in sink.calls] == [
        (ids(h[:2]), None),           # before the list came
        (ids(h[2:3]), {"BI5150"}),    # after its upsert
        (ids(h[3:]), {"BI5150"}),
    ]
    assert all(m.acked for m in batch)


def test_after_a_store_error_no_later_list_change_is_applied(lt) -> None:
    ex, sink = lt
    sink.fail = True
    batch = [hit(0), change(1, "snapshot-begin", policy=ListPolicy("stolen-pl")), hit(1)]
    asyncio.run(ex._take(batch))  # type: ignore[arg-type]
    assert [(m.acked, m.naked) for m in batch] == [(False, True)] * 3
    assert sink.copy() is None and ex.counts == {}  # the list change was not applied


def test_a_list_change_before_the_ones_it_follows_waits_for_them(lt) -> None:
    ex, sink = lt
    row = tuple(Entry(5, "BI5150", "stolen-pl", PL, "stolen_vehicle", 2, "stolen"))
    later = tuple(Entry(6, "BI6160", "stolen-pl", PL, "stolen_vehicle", 2, "stolen"))
    asyncio.run(ex._take([change(1, "snapshot-begin", policy=ListPolicy("stolen-pl")),
                          change(2, "snapshot-end")]))  # type: ignore[arg-type]
    # change 4 overtook change 3 (3 was nak'd after a store error, and comes again later)
    early, after = change(4, "upsert", rows=(later,)), hit(9)
    asyncio.run(ex._take([early, after]))  # type: ignore[arg-type]
    assert (early.acked, early.naked, after.acked, after.naked) == (False, True, False, True)
    assert sink.copy() == set()
    batch = [change(3, "upsert", rows=(row,)), dataclasses.replace(early, naked=False)]
    asyncio.run(ex._take(batch))  # type: ignore[arg-type]
    assert all(m.acked for m in batch) and sink.copy() == {"BI5150", "BI6160"}


def test_a_list_change_whose_predecessors_never_come_is_applied_after_waiting(lt) -> None:
    ex, sink = lt
    asyncio.run(ex._take([change(1, "snapshot-begin", policy=ListPolicy("stolen-pl")),
                          change(2, "snapshot-end")]))  # type: ignore[arg-type]
    row = tuple(Entry(6, "BI6160", "stolen-pl", PL, "stolen_vehicle", 2, "stolen"))

    class Meta:
        num_delivered = GAP_PATIENCE

    late = change(5, "upsert", rows=(row,))
    object.__setattr__(late, "metadata", Meta())
    asyncio.run(ex._take([late]))  # type: ignore[arg-type]
    assert late.acked and sink.copy() == {"BI6160"}


def test_a_part_of_the_loop_that_fails_is_started_again(lt) -> None:
    ex, _ = lt
    ex.restart_s = 0.0
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise OSError("disk I/O error")

    async def run() -> None:
        await asyncio.wait_for(ex._supervised(flaky), 10)

    asyncio.run(run())
    assert len(runs) == 3 and ex.counts["restarts"] == 2


def pack(msgs: Sequence[FakeMsg]) -> FakeMsg:
    return FakeMsg(f"in.{LT}.from.{PL}.hits", pack_bodies([m.data for m in msgs]),
                   pack_msg_id([m.msg_id for m in msgs]))


def test_a_pack_of_hits_round_trips_and_is_committed_with_the_single_hits(lt) -> None:
    ex, sink = lt
    hits = [hit(i) for i in range(7)]
    decoded = decode_message(pack(hits[:3]).data)
    assert isinstance(decoded, HitPack)
    assert [h.hit_id for h in decoded.hits] == ids(hits[:3])
    assert decoded.hits == tuple(decode_message(m.data) for m in hits[:3])  # pictures and all
    # packs, an old sender's single hit, and a hit packed again after a failed publish
    batch = [pack(hits[:3]), hits[3], pack(hits[2:6]), change(1, "snapshot-begin",
             policy=ListPolicy("stolen-pl")), pack(hits[6:])]
    asyncio.run(ex._take(batch))  # type: ignore[arg-type]
    assert [c[0] for c in sink.calls] == [ids(hits[:6]), ids(hits[6:])]  # each hit once
    assert all(m.acked and not m.naked for m in batch)
    assert ex.dead_letters() == []
    assert ex.counts["applied"] == 7 + 1  # the hits, each once, and the list change


@pytest.mark.parametrize("mangle, reason", [
    (lambda b: b[:-3], "truncated: pack: hit 3 of 3 cut short"),
    (lambda b: b + b"x", "garbage: 1 bytes after the pack's hits"),
    (lambda b: b[:4] + (0).to_bytes(4, "big") + b[8:], "invalid: a pack holds 1..1024 hits, not 0"),
])
def test_a_malformed_pack_is_dead_lettered_whole(lt, mangle, reason) -> None:
    ex, sink = lt
    good = [hit(i) for i in range(3)]
    bad = pack(good)
    bad.data = mangle(bad.data)
    after = hit(9)
    asyncio.run(ex._take([bad, after]))  # type: ignore[arg-type]
    assert [c[0] for c in sink.calls] == [ids([after])]  # none of the pack's hits
    assert bad.acked and after.acked
    assert [(i, why) for _, i, why in ex.dead_letters()] == [(bad.msg_id, reason)]


def test_a_pack_with_a_hit_not_on_our_list_is_dead_lettered_whole(lt) -> None:
    ex, sink = lt
    h = dataclasses.replace(make_hit(5, node="pl-e1", run="batch"), match=WatchlistMatch(
        watchlist="lv-vp.other", entry_id="1", entry_plate="X"))
    bad = pack([hit(1), FakeMsg("", encode_hit(h), ""), hit(2)])
    asyncio.run(ex._take([bad]))  # type: ignore[arg-type]
    assert sink.calls == [] and bad.acked
    assert [why.split(" from")[0] for _, _, why in ex.dead_letters()] == [
        f"invalid: hit {h.hit_id}"]


def test_the_drainer_packs_consecutive_hits_within_the_budget() -> None:
    def row(i: int, kind: str, size: int = 100, to: str = LT) -> Pending:
        return Pending(i, to, f"in.{to}.from.{PL}.{kind}", f"{kind}:{i}", b"h" * size, 0)

    rows = [row(1, "hit"), row(2, "hit"), row(3, "hit"), row(4, "list"), row(5, "hit"),
            row(6, "hit", 900), row(7, "hit"), row(8, "cam"), row(9, "hit"), row(10, "hit"),
            row(11, "hit", to="lv-vp")]
    out = list(_packs(rows, 1000, 3))
    assert [[r.id for r in m.rows] for m in out] == [[1, 2, 3], [4], [5], [6], [7], [8],
                                                      [9, 10], [11]]
    first = out[0]
    assert first.subject == f"in.{LT}.from.{PL}.hits"
    assert first.msg_id == pack_msg_id(["hit:1", "hit:2", "hit:3"])
    assert first.body == pack_bodies([b"h" * 100] * 3)
    assert len({m.msg_id for m in out}) == len(out)
    alone = out[2]  # a lone hit goes as itself, as before packs
    assert (alone.subject, alone.msg_id, alone.body) == (rows[4].subject, "hit:5", b"h" * 100)
    # the same rows, the same id: a pack published again is a duplicate to the stream
    assert next(_packs(rows[:3], 1000, 3)).msg_id == first.msg_id
    assert [[r.id for r in m.rows] for m in _packs(rows, 10**6, 1)] == [[i] for i in range(1, 12)]
    # packs in flight together, each other message alone
    assert [[m.msg_id for m in g] for g in _windows(out, 32)] == [
        [out[0].msg_id], ["list:4"], ["hit:5", "hit:6", "hit:7"], ["cam:8"],
        [out[6].msg_id, "hit:11"]]


def test_a_pack_made_of_pieces_is_the_same_and_decodes_to_hits_of_their_own_bytes() -> None:
    hits = [dataclasses.replace(make_hit(i, node="pl-e1", run="parts"), match=WatchlistMatch(
        watchlist="lt-vsat.wanted", entry_id="1", entry_plate="X")) for i in range(3)]
    body = pack_parts([encode_hit_parts(h) for h in hits])
    assert body == pack_bodies([encode_hit(h) for h in hits])
    decoded = decode_message(body)
    assert isinstance(decoded, HitPack) and decoded.hits == tuple(hits)
    for h in decoded.hits:  # the pictures copied out of the pack, not views into it
        assert type(h.crop_jpeg) is bytes and type(h.scene_jpeg) is bytes
    del body
    assert decoded.hits[0].scene_jpeg == hits[0].scene_jpeg


def test_a_partners_hit_is_taken_on_our_list_name_and_its_own_copy() -> None:
    h = dataclasses.replace(make_hit(1, node="pl-e1", run="accept"), match=WatchlistMatch(
        watchlist="lt-vsat.wanted", entry_id="1", entry_plate="X", reason="r"))
    ours = HitReceiver(LT, lambda hits, agency: None).accept(PL, h, GRANTS)  # type: ignore[arg-type]
    assert ours == dataclasses.replace(h, match=dataclasses.replace(h.match, watchlist="wanted"))
    assert ours is not None and ours.match.watchlist == "wanted"
    assert h.match.watchlist == "lt-vsat.wanted"  # the decoded hit is left as it was
