"""The console's page sends a file's own bytes: a latin-1 file is refused by name, then read
right once its encoding is chosen (Debian's chromium; skips without it, as the other
browser tests do)."""

from __future__ import annotations

import pytest
from helpers.browser import MISSING, sign_in, wait
from helpers.console import ADMIN

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


def test_a_latin1_file_is_refused_then_read_in_the_encoding_chosen(stack, browser, tmp_path):
    sign_in(browser, stack.url, ADMIN)
    browser.find_element(By.CSS_SELECTOR, 'a[data-tab="watchlists"]').click()
    path = tmp_path / "vienna.csv"
    path.write_bytes("plate,country,category,priority,reason,agency\n"
                     "W 12345 X,AT,alert,2,Müller Straße,AT-BK\n".encode("latin-1"))  # fmt: skip
    browser.find_element(By.ID, "import-list").send_keys("vienna")
    browser.find_element(By.ID, "import-file").send_keys(str(path))
    browser.find_element(By.CSS_SELECTOR, "#import-form button").click()
    status = wait(browser).until(lambda d: d.find_element(By.ID, "list-status").text)
    assert "not utf-8 text" in status and "encoding" in status, status
    assert stack.client(ADMIN).get("/api/watchlists")[1]["lists"] == []  # nothing imported
    Select(browser.find_element(By.ID, "import-encoding")).select_by_value("windows-1252")
    browser.find_element(By.ID, "import-file").send_keys(str(path))
    browser.find_element(By.CSS_SELECTOR, "#import-form button").click()
    wait(browser).until(lambda d: "1 added" in d.find_element(By.ID, "list-status").text)
    (entry,) = stack.client(ADMIN).get("/api/watchlists/vienna/entries")[1]["entries"]
    assert entry["reason"] == "Müller Straße"
