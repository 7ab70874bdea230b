"""A trader starts live training from the page, watches the models learn, and stops it."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def text(driver, css: str) -> str:
    """Read in one script call: the cards are re-rendered every second, so an element found
    by one WebDriver call may be gone (stale) by the next."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : null;",
        css) or ""


def field(driver, model: str, name: str) -> str:
    return text(driver, f"#model-card-{model} td[data-field='{name}']")


def test_start_shows_active_and_learning_then_stop_stops(server_url, browser, services):
    browser.get(server_url)
    wait = WebDriverWait(browser, 60, poll_frequency=0.25)
    wait.until(lambda d: d.find_elements(By.ID, "model-card-dqn"), "model cards never appeared")
    assert text(browser, "#lt-state") == "INACTIVE"
    for model in ("cnn", "dqn", "cob"):
        assert text(browser, f"#model-card-{model} .mc-state") in ("UNTRAINED", "IDLE")

    import time

    browser.find_element(By.ID, "lt-start").click()
    started = time.monotonic()
    wait.until(lambda d: text(d, "#lt-state") == "ACTIVE", "Start did not make training ACTIVE")
    for model in ("cnn", "dqn", "cob"):
        wait.until(lambda d, m=model: text(d, f"#model-card-{m} .mc-state") == "ACTIVE")
    # On the default replay every model predicts, sees its predictions resolve and trains
    # within a wall minute of Start (config.yaml, replay.speed).
    for model in ("cnn", "cob", "dqn"):
        wait.until(lambda d, m=model: field(d, m, "loss (5-step MA)") != "not trained yet",
                   f"the {model} never reported a loss")
    took = time.monotonic() - started
    print(f"every model trained {took:.1f} s after Start")
    assert took < 60, "a model took over a wall minute to train"
    first = field(browser, "dqn", "loss (5-step MA)")
    # The DQN learns from 1h and 1d closes only, a batch of 8 about every 24 wall seconds at
    # x600; on a loaded 2-core machine the replay runs behind, so allow two wall minutes.
    WebDriverWait(browser, 120, poll_frequency=0.5).until(
        lambda d: field(d, "dqn", "loss (5-step MA)") != first,
        f"the loss never moved from {first!r}")
    # What is learned from, in words: the real 1h and 1d candles; 1s and 1m are interpolated.
    assert field(browser, "cnn", "scored on") == "1h, 1d · not scored: 1s, 1m (interpolated)"
    assert "not scored: interpolated" in text(browser, "#lt-accuracy")
    for model in ("cnn", "dqn", "cob"):  # each card leads with its verdict (or says why not)
        assert field(browser, model, "skill")
        assert text(browser, f"#model-card-{model} .mc-verdict") in (
            "learning", "no skill yet", "worse than baseline", "too few rows")
    epsilon = float(field(browser, "dqn", "epsilon"))
    assert 0.05 <= epsilon < 0.3
    assert int(field(browser, "cnn", "parameters").replace(",", "")) == \
        services.training.learners["cnn"].parameters_count()
    browser.save_screenshot(str(ARTIFACTS / "training.png"))

    browser.find_element(By.ID, "lt-stop").click()
    wait.until(lambda d: text(d, "#lt-state") == "INACTIVE", "Stop did not stop training")
    wait.until(lambda d: text(d, "#model-card-dqn .mc-state") == "IDLE")
    steps = services.training.learners["dqn"].train_steps
    predictions = sum(services.training.store.counts()["dqn"].values())
    time.sleep(2.0)  # stopped: no training and no new predictions while we wait (those made
    # before Stop still resolve when their candle closes: a count moves from pending only)
    assert services.training.learners["dqn"].train_steps == steps
    assert sum(services.training.store.counts()["dqn"].values()) == predictions
    assert "step" in field(browser, "dqn", "checkpoint")  # stop wrote a checkpoint
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
