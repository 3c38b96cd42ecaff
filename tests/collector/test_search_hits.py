"""The collector's own hits as a search source (edge.collector.search_hits): the modes, time,
cameras and area as on the nodes; scope by agency, lists and agreements that grant search;
one pass that hit several lists is one result."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from helpers.link import make_hit

from edge.collector.agreements import Agreements
from edge.collector.search_hits import HitSearch
from edge.collector.store import HitStore
from edge.core.link_protocol import CameraLocation, HitPlate, WatchlistMatch
from edge.core.search import SearchQuery, new_query_id

UTC = dt.UTC
T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
AGENCIES = "lt-vsat: {name: VSAT, country: LT}\npl-sg: {name: SG, country: PL}\n"
LT_PL = """\
agreement: LT-PL-1
title: search of the Polish cameras
parties: [lt-vsat, pl-sg]
valid_from: 2026-01-01T00:00:00Z
valid_until: 2027-12-31T23:59:59Z
grants:
  - from: pl-sg
    to: lt-vsat
    cameras: ["pl-a"]
    search: true
"""


def hit(n: int, plate: str, node: str, *, minutes: float = 0, watchlist: str = "stolen",
        camera: str = "cam1", lat: float = 54.6, pass_of: int | None = None):  # fmt: skip
    h = make_hit(n, node=node, camera=camera)
    seen = T0 - dt.timedelta(minutes=minutes)
    if pass_of is not None:
        seen = T0 - dt.timedelta(minutes=pass_of)
    return dataclasses.replace(
        h, seen_at=seen, plate=HitPlate(plate, plate, plate, "LT", 0.93),
        match=WatchlistMatch(watchlist=watchlist, entry_id=f"e{n}", kind="exact",
                             entry_plate=plate, priority=1, reason="stolen"),
        location=CameraLocation(lat, 25.3, "A1", "north"))  # fmt: skip


def query(pattern: str, mode: str = "exact", **kw: object) -> SearchQuery:
    base: dict[str, object] = dict(
        query_id=new_query_id(), pattern=pattern, mode=mode, max_distance=0.0,
        since=T0 - dt.timedelta(days=1), until=T0, nodes=("lt-a",), case_ref="C-1",
        legal_basis="LED art. 8", requested_by="ivan", agency="lt-vsat")  # fmt: skip
    base.update(kw)
    return SearchQuery(**base)  # type: ignore[arg-type]


@pytest.fixture
def hits(tmp_path: Path):
    store = HitStore(tmp_path / "hits.db", agency_of_node=lambda n: n.split("-")[0] == "pl"
                     and "pl-sg" or "lt-vsat")  # fmt: skip
    store.commit([
        hit(1, "LTA123", "lt-a", minutes=10),
        hit(2, "LTA123", "lt-a", minutes=10, watchlist="wanted"),  # the same pass, 2 lists
        hit(3, "LTA123", "lt-a", minutes=2 * 24 * 60),  # before the range
        hit(4, "LTA124", "lt-b", minutes=20, camera="cam2", lat=55.5),
        hit(5, "LTA123", "pl-a", minutes=30),  # a partner's camera
        hit(6, "LTA123", "pl-b", minutes=40),  # a partner's camera no agreement opens
        hit(7, "XYZ999", "lt-a", minutes=5),
    ])  # fmt: skip
    store.close()
    agreements_dir = tmp_path / "agreements"
    agreements_dir.mkdir()
    (agreements_dir / "agencies.yaml").write_text(AGENCIES)
    (agreements_dir / "lt-pl.yaml").write_text(LT_PL)
    agreements = Agreements.load(agreements_dir)
    search = HitSearch(tmp_path / "hits.db", default_agency="lt-vsat",
                       agreements=lambda: agreements)  # fmt: skip
    yield search
    search.close()


def test_exact_finds_the_agency_s_and_the_granted_partner_s_hits_once_per_pass(hits):
    found, total = hits.find(query("LTA123"), "lt-vsat")
    assert total == 2
    assert [(f.node, f.agency) for f in found] == [("lt-a", "lt-vsat"), ("pl-a", "pl-sg")]
    first = found[0]
    assert first.watchlists == ("stolen", "wanted") and len(first.hit_ids) == 2
    assert first.read.text == "LTA123" and first.read.crop_jpeg[:3] == b"\xff\xd8\xff"
    assert first.read.lat == 54.6 and first.read.seen_at == T0 - dt.timedelta(minutes=10)


def test_without_the_agreement_the_partner_s_hits_are_not_searched(hits):
    hits._agreements = Agreements.empty
    found, _ = hits.find(query("LTA123"), "lt-vsat")
    assert [f.node for f in found] == ["lt-a"]
    found, _ = hits.find(query("LTA123", agency="pl-sg"), "pl-sg")
    assert [f.node for f in found] == ["pl-a", "pl-b"]  # its own cameras


def test_wildcard_fuzzy_cameras_area_and_nodes_as_the_nodes_do(hits):
    assert {f.read.text for f in hits.find(query("LTA12?", "wildcard"), "lt-vsat")[0]} == {
        "LTA123", "LTA124"}  # fmt: skip
    fuzzy = hits.find(query("LTA125", "fuzzy", max_distance=1.0), "lt-vsat")[0]
    assert {f.read.text for f in fuzzy} == {"LTA123", "LTA124"}
    assert hits.find(query("LTA125", "fuzzy", max_distance=0.5), "lt-vsat")[0] == []
    on_cam2 = hits.find(query("LTA12*", "wildcard", cameras=("cam2",)), "lt-vsat")[0]
    assert [f.node for f in on_cam2] == ["lt-b"]
    north = hits.find(query("LTA12*", "wildcard", area=(55.0, 25.0, 56.0, 26.0)), "lt-vsat")[0]
    assert [f.node for f in north] == ["lt-b"]
    only = hits.find(query("LTA12*", "wildcard"), "lt-vsat", nodes=("pl-a",))[0]
    assert [f.node for f in only] == ["pl-a"]


def test_max_rows_keeps_the_newest_and_total_counts_them_all(hits):
    found, total = hits.find(query("LTA12*", "wildcard", max_rows=1), "lt-vsat")
    assert total == 3 and [f.node for f in found] == ["lt-a"]


def test_no_hits_database_yet_finds_nothing(tmp_path):
    search = HitSearch(tmp_path / "none.db", default_agency="lt-vsat")
    try:
        assert search.find(query("LTA123"), "lt-vsat") == ([], 0)
    finally:
        search.close()
