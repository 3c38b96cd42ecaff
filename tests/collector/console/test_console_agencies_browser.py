"""Whose camera and whose list, in a real headless Chromium (Debian's chromium; skips without
it): two agencies on one collector under an agreement, `lt-vsat`'s operator and admin.

The world is built directly in the collector's databases: hits of both agencies (one at our
camera on our list, one at our camera on pl-sg's list `pl-sg.stolen-pl`, one at pl-sg's
camera on our list, sent back to us, and one of pl-sg's alone that we must not see), and the
partner cameras the exchange holds (one fresh, one stale).  One collector and one browser
for the module; screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.browser import MISSING, card, offline_chromium, page_ready, shot, wait
from helpers.console import console_hit

from edge.collector.agencies import AgencyConfig
from edge.collector.agreements import Agreements
from edge.collector.config import CollectorConfig
from edge.collector.console.accounts import ConsoleDB
from edge.collector.console.app import VENDOR
from edge.collector.console.config import CameraPlace, ConsoleConfig
from edge.collector.console.server import ConsoleServer, watchlists_path
from edge.collector.exchange.cameras import CameraReceiver, setup_schema
from edge.collector.exchange.messages import CameraReport, CameraReports
from edge.collector.exchange.outbox import Outbox
from edge.collector.store import HitStore, Seen
from edge.collector.watchlist.master import WatchlistStore
from edge.core.link_protocol import CameraLocation, HitMessage
from edge.core.status import Place
from edge.core.watchlist.entry import Entry

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)
from selenium.webdriver.common.by import By  # noqa: E402

LT, PL = "lt-vsat", "pl-sg"
LT_NAME, PL_NAME = "Valstybės sienos apsaugos tarnyba", "Straż Graniczna"
PASSWORD = "agency password 1"
USERS = {"lt-op": ("operator", LT), "lt-admin": ("admin", LT)}
AGENCIES_YAML = f"""\
{LT}: {{name: "{LT_NAME}", country: LT}}
{PL}: {{name: "{PL_NAME}", country: PL}}
"""
AGREEMENT_YAML = f"""\
agreement: LT-PL-2026-017
title: Border Guard cooperation, Podlaskie
parties: [{LT}, {PL}]
valid_from: 2026-01-01T00:00:00Z
grants:
  - from: {PL}
    to: {LT}
    lists: [stolen-pl]
    hits_back: true
    cameras: ["pl-edge1", "pl-edge2"]
  - from: {LT}
    to: {PL}
    lists: [stolen]
    hits_back: true
"""
GATE = Place(lat=54.0301, lon=23.4502, road="DK16 Budzisko", direction="to Lithuania")


@dataclass
class World:
    url: str
    hits: dict[str, HitMessage]


def _entry(list_name: str, plate: str) -> Entry:
    return Entry(0, plate, list_name, "SG", "stolen_vehicle", 1, "stolen", "PL", None, None,
                 "test")  # fmt: skip


def _hit(plate: str, node: str, camera: str, watchlist: str, seconds: int) -> HitMessage:
    seen = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5) + dt.timedelta(seconds=seconds)
    return console_hit(plate, node=node, camera=camera, watchlist=watchlist, seen_at=seen,
                       priority=2, location=CameraLocation(54.39, 23.05, "A5", "to Poland"))


def _partner_cameras(exchange_db: Path, agreements: Agreements) -> None:
    """What lt-vsat's exchange holds of pl-sg's cameras: cam-b reported now, cam-c whose
    reports stopped 20 minutes ago (stale after 3 times its 30 s refresh)."""
    outbox = Outbox(exchange_db)
    try:
        setup_schema(outbox)
        clock = [time.time() - 1200]
        receiver = CameraReceiver(LT, outbox, clock=lambda: clock[0])
        old = CameraReports(owner=PL, epoch="e1", seq=1, refresh_s=30.0, cameras=(
            CameraReport(node="pl-edge2", camera="cam-c", health="live", place=Place(
                lat=53.9, lon=23.6, road="DK8 Ogrodniki")),))  # fmt: skip
        assert receiver.apply(PL, old, agreements) == "applied"
        clock[0] = time.time()
        fresh = CameraReports(owner=PL, epoch="e1", seq=2, refresh_s=3600.0, cameras=(
            CameraReport(node="pl-edge1", camera="cam-b", health="live", place=GATE),))
        assert receiver.apply(PL, fresh, agreements) == "applied"
    finally:
        outbox.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("agencies-browser")
    (root / "agreements").mkdir()
    (root / "agreements" / "agencies.yaml").write_text(AGENCIES_YAML, encoding="utf-8")
    (root / "agreements" / "lt-vsat--pl-sg.yaml").write_text(AGREEMENT_YAML, encoding="utf-8")
    agreements = Agreements.load(root / "agreements")
    places = [CameraPlace(node="lt-edge1", camera="cam-a", lat=54.3520, lon=23.3510,
                          label="Kalvarija")]  # fmt: skip
    config = CollectorConfig(
        listen="tcp://127.0.0.1:0", data_dir=root / "data", credentials_dir=None,
        allowed_keys_dir=root / "allowed",
        console=ConsoleConfig(port=0, poll_s=0.05, cameras=places),
        agencies=[AgencyConfig(name=LT, nodes=["lt-*"]), AgencyConfig(name=PL, nodes=["pl-*"])],
    )  # fmt: skip
    lists = WatchlistStore(watchlists_path(config), default_agency=config.default_agency)
    for name, owner, plate in (("stolen", LT, "LT111"), ("pl-sg.stolen-pl", PL, "PLX333"),
                               ("wanted", PL, "PL555")):  # fmt: skip
        lists.add(_entry(name, plate), create=True, agency=owner)
    lists.close()
    hits = {
        "own": _hit("LT111", "lt-edge1", "cam-a", "stolen", 1),
        "their_list": _hit("PLX333", "lt-edge1", "cam-a", "pl-sg.stolen-pl", 2),
        "their_camera": _hit("LT444", "pl-edge1", "cam-b", "stolen", 3),
        "theirs_only": _hit("PL555", "pl-edge3", "cam-d", "wanted", 4),
    }
    store = HitStore(config.db_path, agency_of_node=config.agency_of_node)
    try:
        store.commit([hits["own"], hits["their_list"], hits["theirs_only"]])
        # pl-sg's camera read a plate on our list: sent back to us, ours to deal with
        store.commit([hits["their_camera"]], agency=PL, list_agency=LT)
        store.record_seen([Seen("lt-edge1", dt.datetime.now(dt.UTC), cameras={"cam-a"})])
    finally:
        store.close()
    _partner_cameras(config.data_dir / "exchange.db", agreements)
    server = ConsoleServer(config, agreements=lambda: agreements)
    db = ConsoleDB(server.database, default_agency=config.default_agency)
    for name, (role, agency) in USERS.items():
        db.add_user(name, PASSWORD, role, agency=agency)
    db.close()
    server.start()
    try:
        yield World(server.url, hits)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with offline_chromium(tmp_path_factory.mktemp("chromium") / "profile") as d:
        yield d


@pytest.fixture
def browser(driver: Any, world: World) -> Any:
    driver.delete_all_cookies()
    return driver


def sign_in(driver: Any, url: str, name: str) -> None:
    driver.get(url + "/login")
    driver.find_element(By.ID, "login-name").send_keys(name)
    driver.find_element(By.ID, "login-password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver).until(page_ready)


def by(driver: Any, selector: str, attribute: str, least: int) -> dict[str, Any] | None:
    """The elements `selector` finds, by their `attribute`; None while fewer than `least`."""
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return {e.get_attribute(attribute): e for e in found} if len(found) >= least else None


def partner_marks(element: Any) -> dict[str, str]:
    return {m.get_attribute("data-mark"): m.text
            for m in element.find_elements(By.CSS_SELECTOR, ".partner-mark")}  # fmt: skip


def test_the_board_says_whose_camera_and_list_and_marks_the_partners(world, browser):
    sign_in(browser, world.url, "lt-op")
    assert browser.find_element(By.ID, "my-agency").text == f"agency: {LT_NAME} ({LT})"
    h = world.hits
    cards = {k: wait(browser).until(lambda d, k=k: card(d, h[k].hit_id)) for k in
             ("own", "their_list", "their_camera")}  # fmt: skip
    assert card(browser, h["theirs_only"].hit_id) is None  # pl-sg's alone: not ours to see

    own = cards["own"]
    assert own.get_attribute("data-partner") is None and partner_marks(own) == {}
    assert "partner" not in own.get_attribute("class").split()
    assert own.find_element(By.CSS_SELECTOR, ".whose").text == (
        f"camera: {LT_NAME} ({LT}) \u00b7 list: stolen ({LT_NAME}, {LT})")

    mine_theirs = cards["their_list"]  # our camera, pl-sg's list
    assert mine_theirs.get_attribute("data-partner") == "list"
    assert partner_marks(mine_theirs) == {"list": f"partner's list: {PL}"}
    assert mine_theirs.find_element(By.CSS_SELECTOR, ".whose").text == (
        f"camera: {LT_NAME} ({LT}) \u00b7 list: pl-sg.stolen-pl ({PL_NAME}, {PL})")

    theirs_mine = cards["their_camera"]  # pl-sg's camera, our list
    assert theirs_mine.get_attribute("data-partner") == "camera"
    assert partner_marks(theirs_mine) == {"camera": f"partner's camera: {PL}"}
    assert theirs_mine.find_element(By.CSS_SELECTOR, ".whose-camera").text == (
        f"camera: {PL_NAME} ({PL})")
    for c in (mine_theirs, theirs_mine):  # seen at a glance: the card itself is ringed
        assert "partner" in c.get_attribute("class").split()
        assert c.value_of_css_property("outline-style") == "dashed"
    assert own.value_of_css_property("outline-style") == "none"
    shot(browser, "40-agencies-board")

    # the search's rows say the same
    browser.find_element(By.CSS_SELECTOR, 'a[data-tab="search"]').click()
    browser.find_element(By.ID, "q-go").click()
    rows = wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results tbody tr")
                               if len(d.find_elements(By.CSS_SELECTOR, "#results tbody tr")) == 3
                               else None)  # fmt: skip
    marked = {r.get_attribute("data-hit"): r.get_attribute("data-partner") for r in rows}
    assert marked == {h["own"].hit_id: None, h["their_list"].hit_id: "list",
                      h["their_camera"].hit_id: "camera"}  # fmt: skip


def test_the_cameras_mark_partner_and_stale_ones_in_the_table_and_on_the_map(world, browser):
    sign_in(browser, world.url, "lt-op")
    browser.find_element(By.CSS_SELECTOR, 'a[data-tab="cameras"]').click()
    want = {"lt-edge1/cam-a", "pl-edge1/cam-b", "pl-edge2/cam-c"}
    rows = wait(browser).until(lambda d: by(d, "#camera-list tbody tr", "data-camera", 3))
    # one row a camera: pl-sg's cam-b is known from its report and from the hit sent back
    assert sorted(rows) == sorted(want), sorted(rows)
    own, fresh, stale = rows["lt-edge1/cam-a"], rows["pl-edge1/cam-b"], rows["pl-edge2/cam-c"]
    assert own.get_attribute("data-partner") is None and "shared by" not in own.text
    assert LT_NAME in own.text
    for r in (fresh, stale):
        assert r.get_attribute("data-partner") == "1"
        assert r.find_element(By.CSS_SELECTOR, ".partner-mark").text == f"shared by {PL}"
    assert fresh.get_attribute("data-stale") is None and "stale" not in fresh.text.split()
    assert stale.get_attribute("data-stale") == "1"
    assert stale.find_element(By.CSS_SELECTOR, ".stale-mark").text == "stale"
    assert "not heard from pl-sg" in stale.text  # the exchange's word for how long
    if not (VENDOR / "built.json").is_file():
        shot(browser, "41-agencies-cameras")
        pytest.skip("the map was not built (`make console-map`): the table was checked")
    # around the cameras (as first shown): each apart, none in a cluster
    dots = wait(browser).until(lambda d: by(d, "#map .cam-dot", "data-camera", 3))
    assert sorted(dots) == sorted(want)
    assert dots["lt-edge1/cam-a"].get_attribute("class").split() == ["cam-dot", "live"]
    assert {"partner"} <= set(dots["pl-edge1/cam-b"].get_attribute("class").split())
    assert {"partner", "stale"} <= set(dots["pl-edge2/cam-c"].get_attribute("class").split())
    partner_colour = dots["pl-edge1/cam-b"].value_of_css_property("border-top-color")
    assert partner_colour != dots["lt-edge1/cam-a"].value_of_css_property("border-top-color")
    shot(browser, "41-agencies-cameras")


def test_a_partner_s_list_is_read_only_and_the_audit_names_the_agency(world, browser):
    sign_in(browser, world.url, "lt-admin")
    browser.find_element(By.CSS_SELECTOR, 'a[data-tab="watchlists"]').click()
    rows = wait(browser).until(lambda d: by(d, "#lists tbody tr", "data-list", 1))
    assert sorted(rows) == ["pl-sg.stolen-pl", "stolen"]  # pl-sg's `wanted` is not shared
    theirs, ours = rows["pl-sg.stolen-pl"], rows["stolen"]
    assert theirs.get_attribute("data-read-only") == "1"
    assert ours.get_attribute("data-read-only") is None
    assert theirs.find_element(By.CSS_SELECTOR, ".read-only-mark").text == "read-only"
    assert theirs.find_elements(By.TAG_NAME, "td")[1].text.startswith(PL)
    assert ours.find_elements(By.TAG_NAME, "td")[1].text == LT

    ours.find_element(By.TAG_NAME, "a").click()  # ours: an admin may expire its entries
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#entries button.expire"))
    assert not browser.find_element(By.ID, "list-owner").is_displayed()
    browser.find_element(By.CSS_SELECTOR, '#lists tr[data-list="pl-sg.stolen-pl"] a').click()
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#entries tbody tr"))
    assert browser.find_elements(By.CSS_SELECTOR, "#entries button.expire") == []
    note = browser.find_element(By.ID, "list-owner")
    assert note.is_displayed() and f"{PL_NAME} ({PL})" in note.text
    # the forms refuse a partner's list before the server does (403)
    browser.find_element(By.ID, "add-list").send_keys("pl-sg.stolen-pl")
    add = browser.find_element(By.CSS_SELECTOR, '#add-form button[type="submit"]')
    assert not add.is_enabled()
    assert "belongs to" in browser.find_element(By.ID, "list-status").text
    shot(browser, "42-agencies-lists")
    browser.find_element(By.ID, "add-list").clear()
    browser.find_element(By.ID, "add-list").send_keys("x")  # an input event: ours again
    assert add.is_enabled() and browser.find_element(By.ID, "list-status").text == ""

    browser.find_element(By.CSS_SELECTOR, 'a[data-tab="audit"]').click()
    heads = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#audit-list thead th")]
    assert heads[:3] == ["When", "Who", "Agency"]
    cells = wait(browser).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, "#audit-list tbody tr td:nth-child(3)"))  # fmt: skip
    assert {c.text for c in cells} == {LT}
    shot(browser, "43-agencies-audit")
