"""The console's page sends a file's own bytes: a latin-1 file is refused by name, then read
right once its encoding is chosen (Debian's chromium; skips without it, as the other
browser tests do)."""

from __future__ import annotations

import pytest
from test_console_browser import browser, sign_in, stack, wait  # noqa: F401  (skips there)
from test_console_support import ADMIN

By = pytest.importorskip("selenium.webdriver.common.by").By
Select = pytest.importorskip("selenium.webdriver.support.ui").Select


def test_a_latin1_file_is_refused_then_read_in_the_encoding_chosen(stack, browser, tmp_path):  # noqa: F811
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
