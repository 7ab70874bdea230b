"""source: auto with no exchange reachable: the page replays and says so in a warning banner."""

from __future__ import annotations

import threading

import pytest
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from core.config import load_config
from core.market.service import build_market
from dashboard.app import create_app
from tests.e2e.conftest import ARTIFACTS, ROOT

pytestmark = pytest.mark.browser


@pytest.fixture
def fallback_url(tmp_path, browser):
    cfg = load_config(ROOT / "config.yaml", {
        "market.source": "auto", "exchange.rest_url": "http://127.0.0.1:9",
        "exchange.connect_timeout_s": 3, "runtime_dir": str(tmp_path)}, environ={})
    market = build_market(cfg)
    market.start()
    server = make_server("127.0.0.1", 0, create_app(cfg, market).server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    browser.get("about:blank")  # leave the page before its server goes: no failed polls
    server.shutdown()
    market.stop()


def test_fallback_banner_is_shown(fallback_url, browser):
    browser.get(fallback_url)
    notice = WebDriverWait(browser, 30, poll_frequency=0.25).until(
        lambda d: d.execute_script(
            "const e = document.getElementById('hdr-notice');"
            "return e && e.innerText.includes('unreachable') ? "
            "{text: e.innerText, cls: e.className} : null;"),
        "the fallback banner never appeared")
    assert notice["text"].startswith("auto: binance is unreachable")
    assert "replaying bundled history" in notice["text"]
    assert "tw-notice-warning" in notice["cls"]
    assert browser.execute_script("return document.getElementById('hdr-source').innerText") \
        == "REPLAY"
    WebDriverWait(browser, 30, poll_frequency=0.25).until(lambda d: d.execute_script(
        "const g = document.querySelector('#card-ETH-USDT .js-plotly-plot');"
        "return g && g.data && g.data[0].x.length > 0;"), "the replay's candles never showed")
    browser.save_screenshot(str(ARTIFACTS / "fallback.png"))
