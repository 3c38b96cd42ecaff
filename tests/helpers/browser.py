"""Debian's chromium driven by Selenium for the console's browser tests, and what they do on a
page; `MISSING` says why they skip where chromium, its driver or selenium is absent."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.console import ARTIFACTS

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the browser tests skip, saying so (MISSING)
    SELENIUM = False
else:
    SELENIUM = True

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

MISSING: str | None = None
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    MISSING = ("Debian's chromium and chromium-driver are not installed (`make test` installs "
               "them where it may: apt-get install -y chromium chromium-driver)")  # fmt: skip
elif not SELENIUM:
    MISSING = "selenium is not installed (pip install -e '.[test]')"

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--no-default-browser-check",
    "--window-size=1400,1000",
    # Lets the alert sound play without a click on the page first, so the test can see
    # it was played (in a control room the first click on the page does the same).
    "--autoplay-policy=no-user-gesture-required",
)  # fmt: skip


def chromium(profile: Path, performance_log: bool = False) -> Any:
    """A headless chromium with its own profile in `profile`; quit it when done.  With
    `performance_log`, `driver.get_log("performance")` gives the DevTools events (Network.*:
    every request the page made)."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    if performance_log:
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    return driver


@contextlib.contextmanager
def offline_chromium(profile: Path, performance_log: bool = False) -> Iterator[Any]:
    """`chromium(profile, performance_log)`, with Selenium Manager kept off the network
    (SE_OFFLINE) while it runs; quit and the environment put back afterwards (for a
    browser a module shares)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SE_OFFLINE", "true")
    try:
        driver = chromium(profile, performance_log)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        mp.undo()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A headless chromium for one test (skips where there is none)."""
    if MISSING:
        pytest.skip(MISSING)
    # Selenium Manager must never go looking for a driver on the network.
    monkeypatch.setenv("SE_OFFLINE", "true")
    driver = chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    return path


def wait(driver: Any, timeout: float = 10.0) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.02)


def sign_in(driver: Any, url: str, who: tuple[str, str, str], screenshot: str | None = None
            ) -> None:
    driver.get(url + "/")
    wait(driver).until(ec.url_to_be(url + "/login"))  # nothing without a session
    driver.find_element(By.ID, "login-name").send_keys(who[0])
    driver.find_element(By.ID, "login-password").send_keys(who[1])
    if screenshot:
        shot(driver, screenshot)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver).until(page_ready)
    assert who[2] in driver.find_element(By.ID, "whoami").text


def page_ready(driver: Any) -> bool:
    """The console page has loaded its board and opened its live stream."""
    return bool(driver.execute_script(
        "return location.pathname === '/' && document.body && document.body.dataset.ready"))


def body_data(driver: Any, name: str) -> str | None:
    return driver.execute_script("return document.body.dataset[arguments[0]] || null", name)


def card(driver: Any, hit_id: str) -> Any:
    found = driver.find_elements(By.CSS_SELECTOR, f'article.hit[data-hit="{hit_id}"]')
    return found[0] if found else None
