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
from edge.collector.exchange.messages import ListChange, encode_hit, encode_list_change
from edge.collector.exchange.service import GAP_PATIENCE, Exchange
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
