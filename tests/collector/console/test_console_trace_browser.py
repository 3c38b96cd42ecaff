"""The investigators' search of the nodes' reads in a real headless Chromium (Debian's
chromium; skips without it): a real collector and console on loopback, minimal CURVE nodes
(helpers.search) answering from reads made here, at cameras whose places the nodes (or the
console's config) know.

One collector and one browser for the module: each test signs in afresh.  The search is
typed into the page's own form; the results, each node's state, and the journey (the
Leaflet polyline's own points, read back from the page) are checked as drawn.  Screenshots
go to test-artifacts/console/.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
from helpers.browser import MISSING, offline_chromium, shot, sign_in, wait
from helpers.console import make_jpeg
from helpers.link import Keys, collector_config, make_keys, wait_for
from helpers.search import MiniNode, attach, mini_node, signing_keys

from edge.collector.agencies import AgencyConfig
from edge.collector.console.accounts import ConsoleDB
from edge.collector.console.app import VENDOR
from edge.collector.console.config import CameraPlace, ConsoleConfig
from edge.collector.console.server import ConsoleServer
from edge.collector.service import CollectorService
from edge.collector.store import HitStore, Seen

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

NOW = dt.datetime.now(dt.UTC)
INVESTIGATOR = ("ines", "investigator password 1", "Ines Investigator")
OPERATOR = ("olga", "operator password 1", "Olga Operator")
PLATE = "LTA123"
# Where the cameras are, as their nodes know it; lt-b does not know where cam-x is, and
# the console's config says.
PLACES = {("lt-a", "cam-1"): (54.40, 23.30), ("lt-a", "cam-2"): (54.60, 23.90),
          ("lt-b", "cam-9"): (54.90, 23.95), ("lt-c", "cam-5"): (54.50, 24.50)}  # fmt: skip
CAM_X = CameraPlace(node="lt-b", camera="cam-x", lat=54.70, lon=25.28, label="Vilnius ring")
# (node, camera, hours ago) of the plate's reads; lt-a's 26 h old one is past its retention.
READS = [("lt-a", "cam-1", 5), ("lt-b", "cam-x", 4), ("lt-b", "cam-9", 3), ("lt-b", "cam-9", 2.5),
         ("lt-a", "cam-2", 1), ("lt-a", "cam-1", 26), ("lt-c", "cam-5", 0.5)]  # fmt: skip
# The journey in time order: one stop per camera passed (lt-b's two reads at cam-9 are one).
JOURNEY = ["lt-a/cam-1", "lt-b/cam-x", "lt-b/cam-9", "lt-a/cam-2"]


@dataclass
class World:
    root: Path
    keys: Keys
    ctx: zmq.Context
    service: CollectorService
    console: ConsoleServer
    nodes: dict[str, MiniNode]

    @property
    def url(self) -> str:
        return self.console.url

    def queries(self) -> dict[str, int]:
        return {n: len(x.queries) for n, x in self.nodes.items()}


def _node(world_root: Path, keys: Keys, service: CollectorService, name: str) -> MiniNode:
    places: dict[str, tuple[float, float] | None] = {
        cam: at for (node, cam), at in PLACES.items() if node == name}
    if name == "lt-b":
        places["cam-x"] = None
    n = mini_node(world_root, keys, service, name, retention_h=24, places=places)
    n.add_reads([(PLATE, NOW - dt.timedelta(hours=h), cam, "north", 0.91,
                  make_jpeg(f"{PLATE} {cam}")) for node, cam, h in READS if node == name]
                + [("LTZ555", NOW - dt.timedelta(hours=2), "cam-9", "south", 0.8,
                    make_jpeg("LTZ555"))])  # fmt: skip
    return n


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("trace")
    keys = make_keys(root)
    signing_keys(keys)
    config = collector_config(root, keys).model_copy(update={
        "agencies": [AgencyConfig(name="lt-vsat", nodes=["lt-*"])],
        "console": ConsoleConfig(port=0, poll_s=0.05, cameras=[CAM_X])})  # fmt: skip
    config.search.timeout_s = 3.0
    ctx = zmq.Context()
    service = CollectorService(config, ctx=ctx)
    db = ConsoleDB(config.console.database_path(config.data_dir), default_agency="lt-vsat")
    db.add_user(INVESTIGATOR[0], INVESTIGATOR[1], "investigator", INVESTIGATOR[2])
    db.add_user(OPERATOR[0], OPERATOR[1], "operator", OPERATOR[2])
    db.close()
    console = ConsoleServer(config, searches=attach(service, None))
    service.components.append(console)
    service.start()
    console.console.searches._audit = console.console.db.audit  # the console's trail
    nodes = {name: _node(root, keys, service, name) for name in ("lt-a", "lt-b", "lt-c")}
    for name in ("lt-a", "lt-b"):
        nodes[name].start(ctx)
    # lt-c is known (in the nodes table) but not connected: offline until a test starts it
    store = HitStore(config.db_path)
    store.record_seen([Seen("lt-c", NOW)])
    store.close()
    wait_for(lambda: {"lt-a", "lt-b"} <= service.connected_nodes(), what="nodes heard")
    world = World(root, keys, ctx, service, console, nodes)
    try:
        yield world
    finally:
        for n in nodes.values():
            n.stop()
        service.stop()
        ctx.term()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with offline_chromium(tmp_path_factory.mktemp("chromium") / "profile") as d:
        yield d


@pytest.fixture
def browser(driver: Any, world: World) -> Iterator[Any]:
    """The module's browser, signed out, at its full size."""
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.delete_all_cookies()
    yield driver
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def open_trace(browser: Any, world: World) -> None:
    sign_in(browser, world.url, INVESTIGATOR)
    browser.find_element(By.CSS_SELECTOR, 'a[data-tab="trace"]').click()
    wait(browser).until(lambda d: d.find_element(By.ID, "t-plate").is_displayed())


def fill(browser: Any, **fields: str) -> None:
    for field, value in fields.items():
        box = browser.find_element(By.ID, field)
        box.clear()
        if value:
            box.send_keys(value)


def nodes_shown(browser: Any) -> dict[str, str]:
    """Each node's state as the list shows it (read in one go: the list is redrawn as the
    answers come)."""
    return browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#trace-nodes li')]"
        ".map((li) => [li.dataset.node, li.dataset.state]))")  # fmt: skip


def journey(browser: Any) -> dict[str, Any]:
    return browser.execute_script("return window.ConsoleTrace.journey()")


def test_a_search_streams_each_node_s_answer_and_draws_the_journey(world, browser):
    map_built = (VENDOR / "built.json").is_file()
    open_trace(browser, world)
    fill(browser, **{"t-plate": "lta 123", "t-case": "CASE-7/2026",
                     "t-basis": "LED art. 8; CPC s. 123"})  # fmt: skip
    lt_c_asked = len(world.nodes["lt-c"].queries)
    browser.find_element(By.ID, "t-go").click()
    wait(browser).until(lambda d: d.execute_script(
        "return document.body.dataset.traceSettled") == "1")  # fmt: skip
    # Each node's state: lt-a and lt-b answered, lt-c (known, not connected) offline; and
    # the collector's own hits (none of this plate), searched first.
    assert nodes_shown(browser) == {"collector": "done", "lt-a": "done", "lt-b": "done",
                                    "lt-c": "offline"}
    states = {li.get_attribute("data-node"): li.text
              for li in browser.find_elements(By.CSS_SELECTOR, "#trace-nodes li")}  # fmt: skip
    assert "2 reads" in states["lt-a"] and "3 reads" in states["lt-b"], states
    assert "offline" in states["lt-c"], states
    assert browser.find_element(By.ID, "trace-retry").is_displayed()
    assert len(world.nodes["lt-c"].queries) == lt_c_asked  # never reached
    # The reads in time order, each with the stop of the journey it belongs to; lt-a's
    # read past its retention is not among them.
    rows = browser.find_elements(By.CSS_SELECTOR, "#trace-reads tbody tr")
    assert [r.get_attribute("data-camera") for r in rows] == [
        "lt-a/cam-1", "lt-b/cam-x", "lt-b/cam-9", "lt-b/cam-9", "lt-a/cam-2"]
    assert [r.find_element(By.CSS_SELECTOR, "td").text for r in rows] == ["1", "2", "3", "3", "4"]
    assert all("LTA123" in r.text for r in rows)
    # The journey: numbered stops in time order, joined by the line through their places
    # (cam-x's from the console's config: its node does not know it).
    drawn = journey(browser)
    assert [s["camera"] for s in drawn["stops"]] == JOURNEY
    assert [s["n"] for s in drawn["stops"]] == [1, 2, 3, 4]
    assert len(drawn["stops"][2]["seen"]) == 2
    places = [PLACES.get(tuple(c.split("/")), (CAM_X.lat, CAM_X.lon)) for c in JOURNEY]
    items = browser.find_elements(By.CSS_SELECTOR, "#journey-list li")
    assert [li.get_attribute("data-camera") for li in items] == JOURNEY
    if map_built:
        assert drawn["line"] == [list(p) for p in places]
        assert browser.find_elements(By.CSS_SELECTOR, "#journey-map path.journey-line")
        numbers = browser.find_elements(By.CSS_SELECTOR, "#journey-map .journey-n")
        assert sorted((int(n.text), n.get_attribute("data-camera")) for n in numbers) == list(
            enumerate(JOURNEY, 1))  # fmt: skip
        # fitted to the view: every stop's marker inside the map's box
        box = browser.find_element(By.ID, "journey-map").rect
        for n in numbers:
            r = n.rect
            assert box["x"] <= r["x"] <= box["x"] + box["width"], (n.text, r, box)
            assert box["y"] <= r["y"] <= box["y"] + box["height"], (n.text, r, box)
        tips = [t.text for t in browser.find_elements(By.CSS_SELECTOR, ".journey-time")]
        assert len(tips) == 4 and tips[0].startswith("1. "), tips
    else:  # without the built map the journey is still listed, and the page says why
        assert drawn["line"] is None
        assert "make console-map" in browser.find_element(By.ID, "journey-note").text
    # A crop is fetched when asked for (the collector audits it), not before.
    assert not browser.find_elements(By.CSS_SELECTOR, "#trace-reads img")
    rows[0].find_element(By.CSS_SELECTOR, "button.open-crop").click()
    img = wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#trace-reads img"))[0]
    wait(browser).until(lambda d: d.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", img))  # fmt: skip
    search_id = browser.execute_script("return document.body.dataset.traceId")
    db = ConsoleDB(world.console.database, default_agency="lt-vsat")
    try:
        trail = db.audit_trail(limit=200)
    finally:
        db.close()
    assert any(r["action"] == "search read opened" and search_id in r["detail"]
               and "CASE-7/2026" in r["detail"] for r in trail)  # fmt: skip
    href = browser.find_element(By.ID, "trace-csv").get_attribute("href")
    assert href == f"{world.url}/api/search/{search_id}.csv"
    shot(browser, "20-trace-journey")
    # lt-c comes back; "ask the offline ones again" brings its read, the journey's last stop.
    world.nodes["lt-c"].start(world.ctx)
    wait_for(lambda: "lt-c" in world.service.connected_nodes(), what="lt-c heard")
    browser.find_element(By.ID, "trace-retry").click()
    wait(browser).until(lambda d: nodes_shown(d).get("lt-c") == "done")
    wait(browser).until(lambda d: len(journey(d)["stops"]) == 5)
    drawn = journey(browser)
    assert [s["camera"] for s in drawn["stops"]] == [*JOURNEY, "lt-c/cam-5"]
    if map_built:
        assert drawn["line"][-1] == list(PLACES[("lt-c", "cam-5")])
    assert not browser.find_element(By.ID, "trace-retry").is_displayed()
    shot(browser, "21-trace-asked-again")


def test_no_case_reference_or_legal_basis_no_query(world, browser):
    open_trace(browser, world)
    asked = world.queries()
    for missing, present in (("t-case", "t-basis"), ("t-basis", "t-case")):
        fill(browser, **{"t-plate": PLATE, missing: "", present: "given"})
        browser.find_element(By.ID, "t-go").click()
        status = browser.find_element(By.ID, "trace-status")
        wait(browser).until(lambda d, s=status: "mandatory" in s.text)
        assert "error" in status.get_attribute("class")
        assert browser.find_element(By.ID, missing).get_attribute("aria-invalid") == "true"
        assert browser.switch_to.active_element.get_attribute("id") == missing
    assert world.queries() == asked
    # The server refuses it too, whatever a page sends.
    refused = browser.execute_script("""
        return fetch('/api/search', {method: 'POST', headers: {'Content-Type': 'application/json'},
          body: JSON.stringify({plate: 'LTA123', since: '2d', case_ref: 'X', legal_basis: ' '})})
          .then(async (r) => [r.status, (await r.json()).error]);""")  # fmt: skip
    assert refused[0] == 400 and "mandatory" in refused[1]
    assert world.queries() == asked
    shot(browser, "22-trace-no-case")


def test_an_area_is_drawn_on_the_map_as_a_box(world, browser):
    if not (VENDOR / "built.json").is_file():
        pytest.skip("the console's map is not built (`make test` builds it)")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 820, "height": 1180, "deviceScaleFactor": 2, "mobile": True})  # a tablet
    open_trace(browser, world)
    browser.find_element(By.ID, "t-draw").click()
    assert browser.find_element(By.ID, "t-draw").get_attribute("aria-pressed") == "true"
    area = browser.find_element(By.ID, "journey-map")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", area)
    w, h = area.rect["width"], area.rect["height"]
    corners = ActionChains(browser)
    corners.move_to_element_with_offset(area, int(-w * 0.3), int(h * 0.3)).click()
    corners.move_to_element_with_offset(area, int(w * 0.2), int(-h * 0.2)).click()
    corners.perform()
    wait(browser).until(lambda d: d.find_element(By.ID, "t-max-lon").get_attribute("value"))
    south, west, north, east = (float(browser.find_element(By.ID, f).get_attribute("value"))
                                for f in ("t-min-lat", "t-min-lon", "t-max-lat", "t-max-lon"))
    assert south < north and west < east, (south, west, north, east)
    assert browser.find_elements(By.CSS_SELECTOR, "#journey-map path.area-box")
    assert browser.find_element(By.ID, "t-draw").get_attribute("aria-pressed") == "false"
    # A tablet: nothing wider than the screen, the controls big enough for a finger.
    width = browser.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1] == 820, width
    for control in ("t-go", "t-draw", "t-plate", "t-case"):
        assert browser.find_element(By.ID, control).size["height"] >= 44, control
    shot(browser, "23-trace-area-tablet")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})  # a phone
    wait(browser).until(lambda d: d.execute_script("return innerWidth") == 390)
    width = browser.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1], width
    browser.find_element(By.ID, "t-clear-area").click()
    assert not browser.find_elements(By.CSS_SELECTOR, "#journey-map path.area-box")
    assert browser.find_element(By.ID, "t-min-lat").get_attribute("value") == ""


def test_an_operator_never_sees_the_search_of_the_nodes(world, browser):
    sign_in(browser, world.url, OPERATOR)
    assert not browser.find_elements(By.CSS_SELECTOR, 'a[data-tab="trace"]')
    assert not browser.find_elements(By.ID, "trace")
    browser.execute_script("location.hash = '#trace'")
    wait(browser).until(lambda d: d.find_element(By.ID, "live").is_displayed())
    assert browser.find_element(By.CSS_SELECTOR, 'a[data-tab="live"]').get_attribute(
        "class") == "active"  # fmt: skip
