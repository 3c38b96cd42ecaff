"""The console end to end in a real headless Chromium (Debian's chromium + chromedriver, Selenium).

Sign in, see a hit an edge sends over the real link appear within a second, acknowledge
it, find it by search, see its camera on the map; without a session nothing shows.
Screenshots are kept in test-artifacts/console/ at the repository's root.
"""

from __future__ import annotations

import time

import pytest
from helpers.browser import MISSING, body_data, card, page_ready, shot, sign_in, wait
from helpers.console import ADMIN, OPERATOR, Client, console_hit, live_status, running_stack
from helpers.link import wait_for

from edge.collector.console.app import NOT_BUILT, VENDOR
from edge.core.link_protocol import CameraLocation

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)
BUILT = (VENDOR / "built.json").is_file()
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402


def test_sign_in_live_hit_acknowledge_search_and_map(stack, browser):
    admin = stack.client(ADMIN)
    status, entry = admin.post("/api/watchlists/stolen/entries", {
        "plate": "WX 12345", "country": "PL", "category": "stolen_vehicle", "priority": 1,
        "agency": "PL-KGP", "reason": "stolen Skoda Octavia"})  # fmt: skip
    assert status == 200, entry
    outbox = stack.edge("edge-a", status=live_status("cam-north"))
    # An older, less urgent hit already on the board: the new one must go above it.
    older = console_hit("KR77777", priority=5, reason="unpaid fines", entry_id="99",
                        location=CameraLocation(52.2297, 21.0122, "S8 km 12", "to Warsaw"))
    outbox.add_hit(older)
    wait_for(lambda: stack.stored(older.hit_id), 20, "the first hit to be stored")

    sign_in(browser, stack.url, OPERATOR, screenshot="01-sign-in")
    wait(browser).until(lambda d: card(d, older.hit_id))
    wait(browser).until(lambda d: d.find_element(By.ID, "link-state").text == "live")
    alerts_before = int(body_data(browser, "alerts") or 0)

    hit = console_hit("WX12345", priority=1, entry_id=str(entry["id"]), kind="fuzzy",
                      distance=1, entry_plate="WX12845", reason="stolen Skoda Octavia")  # fmt: skip
    sent = time.monotonic()
    outbox.add_hit(hit)
    try:
        wait(browser, 5).until(lambda d: card(d, hit.hit_id))
    except TimeoutException:
        pytest.fail("the hit did not appear on the page within 5 s")
    took = time.monotonic() - sent
    assert took < 1.0, f"the hit took {took:.2f} s to appear"
    new = card(browser, hit.hit_id)
    text = new.text
    assert "WX1 2345" in text and "PL" in text
    assert "stolen" in text and "stolen Skoda Octavia" in text and "PL-KGP" in text
    assert "fuzzy at distance 1" in text and "edge-a/cam-north" in text
    assert "p-critical" in new.get_attribute("class")
    # Highest priority first.
    order = [a.get_attribute("data-hit") for a in
             browser.find_elements(By.CSS_SELECTOR, "#open-hits article.hit")]  # fmt: skip
    assert order.index(hit.hit_id) < order.index(older.hit_id)
    # Impossible to miss: the banner, and the sound (it was played, and sound is on).
    flash = browser.find_element(By.ID, "flash")
    assert flash.is_displayed() and "WX1 2345" in flash.text
    assert int(body_data(browser, "alerts")) == alerts_before + 1
    assert int(body_data(browser, "sounded") or 0) >= 1
    # The pictures are the ones the edge sent, shown.
    for cls in ("crop", "scene"):
        img = new.find_element(By.CSS_SELECTOR, f"img.{cls}")
        wait(browser).until(lambda d, img=img: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", img))  # fmt: skip
    shot(browser, "02-live-hit")

    # Acknowledge, with a note.
    new.find_element(By.CSS_SELECTOR, "input.ack-note").send_keys("unit 7 en route")
    new.find_element(By.CSS_SELECTOR, "button.ack-button").click()
    wait(browser).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, f'#done-hits article.hit[data-hit="{hit.hit_id}"]'))  # fmt: skip
    done = card(browser, hit.hit_id)
    assert "Acknowledged by Olga Operator" in done.text and "unit 7 en route" in done.text
    assert not browser.find_element(By.ID, "flash").is_displayed()  # someone has it now
    shot(browser, "03-acknowledged")
    (row,) = [h for h in admin.get(f"/api/hits?plate={hit.plate.text}")[1]["hits"]]
    assert [(a["user"], a["note"]) for a in row["acks"]] == [("olga", "unit 7 en route")]

    # Find it by search, with a wildcard.
    browser.find_element(By.CSS_SELECTOR, 'a[data-tab="search"]').click()
    plate = browser.find_element(By.ID, "q-plate")
    plate.clear()
    plate.send_keys("wx1*")
    browser.find_element(By.ID, "q-go").click()
    wait(browser).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, f'#results tr[data-hit="{hit.hit_id}"]'))  # fmt: skip
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert [r.get_attribute("data-hit") for r in rows] == [hit.hit_id]
    assert "Olga Operator" in rows[0].text and "PL-KGP" in rows[0].text
    assert "plate=wx1*" in browser.find_element(By.ID, "export-csv").get_attribute("href")
    shot(browser, "04-search")

    # The camera on the map, coloured by its health, linking to its hits.
    browser.find_element(By.CSS_SELECTOR, 'a[data-tab="cameras"]').click()
    if not BUILT:  # the console runs without its map, and says why
        wait(browser).until(lambda d: "make console-map" in d.find_element(By.ID, "map-note").text)
        pytest.skip(f"{NOT_BUILT} (`make test` builds it): the map part not checked")
    dot = wait(browser).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, '#map .cam-dot[data-camera="edge-a/cam-north"]'))[0]  # fmt: skip
    assert "live" in dot.get_attribute("class").split()
    kalvarija = browser.find_element(By.CSS_SELECTOR, '#map .cam-dot[data-camera="edge-b/cam-x"]')
    assert "late" in kalvarija.get_attribute("class").split()  # in the config, never heard
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#map path.land"))
    row = browser.find_element(By.CSS_SELECTOR, '#camera-list tr[data-camera="edge-a/cam-north"]')
    assert "live" in row.text and "S8 km 12" in row.text
    shot(browser, "05-cameras-map")
    row.find_element(By.LINK_TEXT, "recent hits").click()
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results tbody tr")) == 2)
    assert browser.find_element(By.ID, "q-camera").get_attribute("value") == "edge-a/cam-north"


def test_without_a_session_nothing_shows(stack, browser):
    browser.get(stack.url + "/")
    wait(browser).until(ec.url_to_be(stack.url + "/login"))
    assert browser.find_elements(By.ID, "login-form")
    assert not browser.find_elements(By.ID, "open-hits")
    browser.get(stack.url + "/api/live")
    assert "sign in first" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(stack.url + "/static/app.js")
    assert "sign in first" in browser.find_element(By.TAG_NAME, "body").text
    shot(browser, "00-refused")
    status, _, _ = Client(stack.url).request("GET", "/api/live")
    assert status == 401
    # A wrong password says so, and lets nobody in.
    browser.get(stack.url + "/login")
    browser.find_element(By.ID, "login-name").send_keys("olga")
    browser.find_element(By.ID, "login-password").send_keys("not the password")
    browser.find_element(By.ID, "login-submit").click()
    error = wait(browser).until(ec.visibility_of_element_located((By.ID, "login-error")))
    assert "wrong name or password" in error.text
    assert browser.current_url == stack.url + "/login"


def test_signing_out_ends_the_session(stack, browser):
    sign_in(browser, stack.url, OPERATOR)
    browser.find_element(By.ID, "logout").click()
    wait(browser).until(ec.url_to_be(stack.url + "/login"))
    browser.get(stack.url + "/")
    wait(browser).until(ec.url_to_be(stack.url + "/login"))


def test_muted_alerts_are_shown_but_not_sounded(stack, browser):
    outbox = stack.edge("edge-a")
    sign_in(browser, stack.url, OPERATOR)
    wait(browser).until(lambda d: d.find_element(By.ID, "link-state").text == "live")
    mute = browser.find_element(By.ID, "mute")
    mute.click()
    assert mute.text == "Sound off" and mute.get_attribute("aria-pressed") == "true"
    hit = console_hit("LV1234", priority=3)
    outbox.add_hit(hit)
    wait(browser, 5).until(lambda d: card(d, hit.hit_id))
    assert body_data(browser, "alerts") == "1"
    assert body_data(browser, "sounded") is None
    assert "p-high" in card(browser, hit.hit_id).get_attribute("class")
    browser.refresh()  # the choice is remembered
    wait(browser).until(page_ready)
    assert browser.find_element(By.ID, "mute").text == "Sound off"


def test_admin_imports_adds_and_expires_entries_and_sees_the_audit(stack, browser, tmp_path):
    sign_in(browser, stack.url, ADMIN)
    browser.find_element(By.CSS_SELECTOR, 'a[data-tab="watchlists"]').click()
    csv_file = tmp_path / "border.csv"
    csv_file.write_text("plate,country,category,priority,reason,agency\n"
                        "LV AB 1234,LV,stolen_vehicle,2,stolen van,LV-VP\n"
                        "KR 55555,PL,wanted_person,1,armed,PL-KGP\n")  # fmt: skip
    browser.find_element(By.ID, "import-list").send_keys("border")
    browser.find_element(By.ID, "import-file").send_keys(str(csv_file))
    browser.find_element(By.CSS_SELECTOR, "#import-form button").click()
    wait(browser).until(lambda d: "2 added" in d.find_element(By.ID, "list-status").text)
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-list="border"]'))
    for field, value in (("add-list", "border"), ("add-plate", "TR 34 ABC 99"),
                         ("add-country", "TR"), ("add-agency", "TR-EGM"),
                         ("add-reason", "customs")):  # fmt: skip
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#add-form button").click()
    wait(browser).until(lambda d: "TR34ABC99 added" in d.find_element(By.ID, "list-status").text)
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#entries tbody tr")) == 3)
    row = browser.find_element(By.XPATH, '//table[@id="entries"]//tr[td[2]="KR55555"]')
    row.find_element(By.CSS_SELECTOR, "button.expire").click()
    browser.switch_to.alert.accept()
    wait(browser).until(lambda d: "expired" in d.find_element(By.ID, "list-status").text)
    row = wait(browser).until(lambda d: d.find_element(
        By.XPATH, '//table[@id="entries"]//tr[td[2]="KR55555"]'))  # fmt: skip
    assert "expired" in row.get_attribute("class")
    shot(browser, "06-watchlists")
    browser.find_element(By.CSS_SELECTOR, 'a[data-tab="audit"]').click()
    wait(browser).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#audit-list tbody tr")) >= 4)
    actions = [r.find_elements(By.TAG_NAME, "td")[3].text  # after the agency
               for r in browser.find_elements(By.CSS_SELECTOR, "#audit-list tbody tr")]  # fmt: skip
    assert actions[:3] == ["watchlist expire", "watchlist add", "watchlist import"]
    assert "sign-in" in actions
    shot(browser, "07-audit")


def test_an_operator_sees_no_admin_controls(stack, browser):
    sign_in(browser, stack.url, OPERATOR)
    assert not browser.find_element(By.CSS_SELECTOR, 'a[data-tab="audit"]').is_displayed()
    browser.find_element(By.CSS_SELECTOR, 'a[data-tab="watchlists"]').click()
    assert not browser.find_element(By.ID, "import-form").is_displayed()
    assert not browser.find_element(By.ID, "add-form").is_displayed()


def test_a_sites_tile_server_is_drawn_under_the_outline(tmp_path, browser):
    """With `tile_url` set, the map asks the site's tile server (here one on loopback) for
    its tiles, which the page's Content-Security-Policy lets in, and nothing else."""
    if not BUILT:
        pytest.skip(f"{NOT_BUILT} (`make test` builds it)")
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from edge.collector.console.config import CameraPlace, ConsoleConfig

    asked: list[str] = []
    import cv2
    import numpy as np

    tile = np.full((256, 256, 3), (200, 220, 235), np.uint8)
    cv2.line(tile, (0, 0), (255, 255), (90, 90, 90), 2)
    png = cv2.imencode(".png", tile)[1].tobytes()

    class Tiles(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: object) -> None:
            pass

    tiles = ThreadingHTTPServer(("127.0.0.1", 0), Tiles)
    threading.Thread(target=tiles.serve_forever, daemon=True).start()
    tile_url = f"http://127.0.0.1:{tiles.server_address[1]}/tiles/{{z}}/{{x}}/{{y}}.png"
    config = ConsoleConfig(port=0, tile_url=tile_url, tile_attribution="test tiles",
                           cameras=[CameraPlace(node="edge-z", camera="gate", lat=41.7,
                                                lon=26.5, label="Kapikule")])  # fmt: skip
    try:
        for s in running_stack(tmp_path, config):
            sign_in(browser, s.url, OPERATOR)
            browser.find_element(By.CSS_SELECTOR, 'a[data-tab="cameras"]').click()
            wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#map img.leaflet-tile"))
            wait_for(lambda: asked, 10, "the browser to ask for a tile")
            assert all(p.startswith("/tiles/") and p.endswith(".png") for p in asked)
            hrefs = [i.get_attribute("src")
                     for i in browser.find_elements(By.CSS_SELECTOR, "#map img.leaflet-tile")]
            assert all(h.startswith(tile_url.split("{")[0]) for h in hrefs)
            attribution = browser.find_element(By.CSS_SELECTOR, "#map .leaflet-control-attribution")
            assert "test tiles" in attribution.text
            assert browser.find_elements(By.CSS_SELECTOR, '.cam-dot[data-camera="edge-z/gate"]')
            shot(browser, "08-map-with-tiles")
    finally:
        tiles.shutdown()
        tiles.server_close()
