"""A real Tickwise server (bundled replay) in this process and one headless Chromium."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from core.config import load_config
from core.services import build_services
from dashboard.app import create_app
from dashboard.server import bind, make_server, stop

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "e2e"
CHROME_FLAGS = [
    "--headless=new", "--window-size=1400,1000", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-extensions", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
]


@pytest.fixture(scope="package")
def services(tmp_path_factory):
    # The default speed (600: an hour every 6 wall seconds), as a new user gets it: the
    # training test checks that every model trains within a wall minute of Start.
    cfg = load_config(ROOT / "config.yaml", {
        "market.source": "replay",
        "runtime_dir": str(tmp_path_factory.mktemp("runtime")),
        "models.dqn.buffer_size": 5000,
    }, environ={})
    services = build_services(cfg)
    yield services
    services.stop()


@pytest.fixture(scope="package")
def server_url(services):
    app = create_app(services.config, services.market, services.training)
    sock = bind("127.0.0.1", 0)  # as app.py serves: waitress on a port bound first
    server = make_server(app.server, sock, services.config.server)
    services.start()  # market pump + APScheduler, as app.py does
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    stop(server)


@pytest.fixture(scope="package")
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("chromium and chromedriver are needed: run scripts/setup.sh --dev")
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def fresh_page(request):
    """Each browser test starts on a blank page with an empty browser log.

    The browser is shared by the package; a page an earlier test left open keeps polling its
    server, and once that server is shut down its failed polls would land in this test's log.
    """
    if "browser" not in request.fixturenames:
        yield
        return
    driver = request.getfixturevalue("browser")
    driver.get("about:blank")
    driver.get_log("browser")  # reading the log empties it
    yield
