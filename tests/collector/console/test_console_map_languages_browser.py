"""The console's map, languages, desktop notifications and phone layout in a real headless
Chromium (Debian's chromium; skips without it; the map's test also without the map that
`make console-map` builds).

One collector and one browser for the module: each test signs in afresh.  The browser's
DevTools performance log lists every request the page made, so "offline" is checked, not
assumed.  Screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.browser import (
    MISSING,
    body_data,
    card,
    offline_chromium,
    page_ready,
    shot,
    sign_in,
    wait,
)
from helpers.console import OPERATOR, Stack, console_hit, live_status, running_stack

from edge.collector.console.app import NOT_BUILT, VENDOR
from edge.collector.console.config import CameraPlace, ConsoleConfig
from edge.collector.console.i18n import CATALOGUES, LANGUAGES
from edge.core.link_protocol import CameraLocation

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)
from selenium.webdriver.common.by import By  # noqa: E402

# Three cameras at one crossing (a cluster at the region's zoom) and one far from them.
PLACES = [
    CameraPlace(node="edge-b", camera="lane-1", lat=54.3520, lon=23.3510, label="Kalvarija"),
    CameraPlace(node="edge-b", camera="lane-2", lat=54.3522, lon=23.3530, label="Kalvarija"),
    CameraPlace(node="edge-b", camera="lane-3", lat=54.3518, lon=23.3550, label="Kalvarija"),
    CameraPlace(node="edge-c", camera="gate", lat=41.7110, lon=26.3560, label="Kapitan Andreevo"),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("console-map")
    yield from running_stack(root, ConsoleConfig(port=0, cameras=PLACES))


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    profile = tmp_path_factory.mktemp("chromium") / "profile"
    with offline_chromium(profile, performance_log=True) as d:
        yield d


@pytest.fixture
def browser(driver: Any, stack: Stack) -> Iterator[Any]:
    """The module's browser, signed out, at its full size, language and log emptied."""
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.delete_all_cookies()
    driver.get_log("performance")
    yield driver
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def requests(driver: Any) -> list[str]:
    """The URLs of the requests the page made since the log was last read."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def english() -> dict[str, str]:
    return json.loads((CATALOGUES / "en.json").read_text(encoding="utf-8"))


def test_the_map_draws_borders_towns_and_cameras_with_nothing_from_elsewhere(stack, browser):
    if not (VENDOR / "built.json").is_file():
        pytest.skip(f"{NOT_BUILT} (`make test` builds it)")
    outbox = stack.edge("edge-b", status=live_status("lane-1"))
    hit = console_hit("ABC123", node="edge-b", camera="lane-1", country="LT", priority=2,
                      location=CameraLocation(54.3520, 23.3510, "A5", "to Poland"))
    outbox.add_hit(hit)
    sign_in(browser, stack.url, OPERATOR)
    browser.find_element(By.CSS_SELECTOR, 'a[data-tab="cameras"]').click()
    wait(browser).until(lambda d: body_data(d, "mapLayers") == "1")
    assert browser.find_elements(By.CSS_SELECTOR, "#map path.land")
    assert browser.find_elements(By.CSS_SELECTOR, "#map path.border")
    assert browser.find_elements(By.CSS_SELECTOR, "#map .town-label")
    # At the whole region's zoom the three lanes are one cluster of 3; the gate stands alone.
    browser.find_element(By.ID, "map-fit").click()
    cluster = wait(browser).until(lambda d: [
        c for c in d.find_elements(By.CSS_SELECTOR, "#map .marker-cluster") if c.text == "3"])[0]
    assert browser.find_elements(By.CSS_SELECTOR, '#map .cam-dot[data-camera="edge-c/gate"]')
    shot(browser, "10-map-region-clusters")
    cluster.click()  # zooms in to the lanes
    dot = wait(browser).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, '#map .cam-dot[data-camera="edge-b/lane-1"]'))[0]  # fmt: skip
    wait(browser).until(lambda d: dot.is_displayed() and not d.execute_script(
        "return document.querySelector('.leaflet-zoom-anim')"))  # fmt: skip
    dot.click()
    popup = wait(browser).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, f'.cam-popup .cam-hit[data-hit="{hit.hit_id}"]'))[0]  # fmt: skip
    assert "ABC 123" in popup.text and "P2" in popup.text
    shot(browser, "11-map-camera-hits")
    urls = requests(browser)
    assert any(u.endswith("/api/map/borders.geojson") for u in urls), urls
    assert any("/static/vendor/leaflet/leaflet.js" in u for u in urls), urls
    elsewhere = [u for u in urls if not (u.startswith(stack.url + "/") or u.startswith("data:"))]
    assert not elsewhere, f"requests left the page's origin: {elsewhere}"


def test_each_language_shows_all_its_strings_and_is_remembered(stack, browser):
    sign_in(browser, stack.url, OPERATOR)
    en = english()
    for lang in LANGUAGES:
        words = json.loads((CATALOGUES / f"{lang}.json").read_text(encoding="utf-8"))
        if lang != "en":
            # Chosen in the page's own control: the route stores it, the page reloads.
            browser.execute_script(
                "const s = document.getElementById('language'); s.value = arguments[0];"
                "s.dispatchEvent(new Event('change'));", lang)  # fmt: skip
            wait(browser).until(lambda d, lang=lang: d.execute_script(
                "return document.documentElement.lang") == lang and page_ready(d))  # fmt: skip
        browser.refresh()  # remembered: the user's, not the page's
        wait(browser).until(page_ready)
        assert browser.execute_script("return document.documentElement.lang") == lang
        state = browser.execute_script("""
            const i = window.ConsoleI18n, args = {count: 3, limit: 1000, mib: 15, fps: 12.5};
            const bad = [];
            for (const k of i.keys()) {
              try { if (!i.t(k, args).trim()) bad.push(k); } catch (e) { bad.push(k + ': ' + e); }
            }
            const shown = [...document.querySelectorAll('[data-i18n]')].filter(
              (n) => n.textContent !== i.t(n.dataset.i18n)).map((n) => n.dataset.i18n);
            return {missing: i.missing, bad, shown, count: i.t('search.count', {count: 3}),
                    date: i.dateTime(new Date(Date.UTC(2025, 0, 31, 14, 5, 9))),
                    locale: i.locale};
        """)  # fmt: skip
        assert state["missing"] == [] and state["bad"] == [] and state["shown"] == [], lang
        tab = browser.find_element(By.CSS_SELECTOR, 'a[data-tab="search"]').text
        assert tab == words["tab.search"], lang
        if lang != "en":
            assert words["live.waiting"] != en["live.waiting"]
        heading = browser.find_element(By.CSS_SELECTOR, "#live h2").get_attribute("textContent")
        assert heading == words["live.waiting"], lang
        assert "3" in state["count"] and "31" in state["date"], state
        shot(browser, f"12-language-{lang}")
    # Numbers and dates as the locale writes them.
    assert state["locale"] == "tr-TR" and state["date"].startswith("31.01.2025"), state
    browser.execute_script(
        "return fetch('/api/me/language', {method: 'POST', headers: {'Content-Type': "
        "'application/json'}, body: JSON.stringify({language: 'en'})})")  # fmt: skip


def test_a_p1_hit_in_the_background_raises_a_desktop_notification(stack, browser):
    browser.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": stack.url, "permissions": ["notifications"]})  # fmt: skip
    outbox = stack.edge("edge-c")
    sign_in(browser, stack.url, OPERATOR)
    assert browser.execute_script("return Notification.permission") == "granted"
    wait(browser).until(lambda d: d.find_element(By.ID, "link-state").text == "live")
    # In the foreground the page itself says it (banner, sound): no notification.
    front = console_hit("PL00001", node="edge-c", camera="gate", priority=1)
    outbox.add_hit(front)
    wait(browser, 5).until(lambda d: card(d, front.hit_id))
    assert body_data(browser, "notified") is None
    before = int(body_data(browser, "waiting") or 0)
    # Another tab in front (made through DevTools, so that chromedriver does not bring the
    # console's forward again when it reads it): the console goes to the background.
    other = browser.execute_cdp_cmd("Target.createTarget", {"url": "about:blank"})["targetId"]
    try:
        wait(browser).until(lambda d: d.execute_script("return document.visibilityState")
                            == "hidden")  # fmt: skip
        low = console_hit("PL00005", node="edge-c", camera="gate", priority=5)
        p1 = console_hit("WX12345", node="edge-c", camera="gate", priority=1, reason="armed")
        outbox.add_hit(low)
        outbox.add_hit(p1)
        wait(browser, 5).until(lambda d: card(d, p1.hit_id) and card(d, low.hit_id))
        hidden = browser.execute_script("return document.visibilityState")
    finally:
        browser.execute_cdp_cmd("Target.closeTarget", {"targetId": other})
    assert hidden == "hidden"
    assert body_data(browser, "notified") == "1"  # the P1, not the P5
    assert body_data(browser, "notifiedTitle") == "P1: WX1 2345"
    # The title and the tab's icon show how many wait.
    assert body_data(browser, "waiting") == str(before + 2)
    assert browser.title.startswith(f"({before + 2}) ")
    icon = browser.find_element(By.ID, "favicon").get_attribute("href")
    assert icon.startswith("data:image/png;base64,")
    shot(browser, "13-notified")


def test_the_phone_layout_has_one_column_and_no_sideways_scroll(stack, browser):
    outbox = stack.edge("edge-b")
    hit = console_hit("LVAB1234", node="edge-b", camera="lane-2", priority=1, country="LV")
    outbox.add_hit(hit)
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})  # fmt: skip
    sign_in(browser, stack.url, OPERATOR)
    wait(browser).until(lambda d: card(d, hit.hit_id))
    button = card(browser, hit.hit_id).find_element(By.CSS_SELECTOR, "button.ack-button")
    size = button.size
    assert size["width"] >= 300 and size["height"] >= 56, size
    pictures = card(browser, hit.hit_id).find_element(By.CSS_SELECTOR, ".pictures")
    assert button.location["y"] > pictures.location["y"]  # below, not beside: one column
    shot(browser, "14-phone-live")
    for tab in ("live", "search", "cameras", "watchlists"):
        browser.find_element(By.CSS_SELECTOR, f'a[data-tab="{tab}"]').click()
        wait(browser).until(lambda d, tab=tab: d.find_element(By.ID, tab).is_displayed())
        width = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1] == 390, (tab, width)
    shot(browser, "15-phone-cameras")
