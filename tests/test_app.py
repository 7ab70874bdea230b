"""The entry point: flags override config, bad config stops start-up, nothing starts early."""

from __future__ import annotations

import threading
from pathlib import Path

import app
from core.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_flags_override_config_and_env():
    args = app.parse_args(["--source", "replay", "--speed", "40", "--host", "0.0.0.0",
                           "--port", "9001", "--no-load-models", "--recording", "binance-btcusdt-1m"])
    cfg = load_config(ROOT / "config.yaml", app.overrides(args),
                      environ={"TICKWISE_REPLAY__SPEED": "25", "TICKWISE_SERVER__PORT": "7000"})
    assert cfg.market.source == "replay"
    assert cfg.replay.speed == 40.0  # the flag beats the environment
    assert cfg.server.host == "0.0.0.0" and cfg.server.port == 9001
    assert cfg.models.load_checkpoints is False
    assert cfg.replay.recording == "binance-btcusdt-1m"


def test_unset_flags_leave_config_alone():
    assert app.overrides(app.parse_args([])) == {}


def test_bad_config_stops_startup_naming_the_key(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "config.yaml"
    bad.write_text("replay:\n  on_end: again\n")
    monkeypatch.chdir(ROOT)
    assert app.main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "replay.on_end" in err and "loop, stop" in err


def test_bad_env_value_stops_startup(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TICKWISE_SERVER__PORT", "eighty")
    assert app.main([]) == 2
    assert "server.port" in capsys.readouterr().err


def test_building_the_app_starts_no_threads():
    from core.market.service import build_market
    from dashboard.app import create_app

    before = threading.active_count()
    cfg = load_config(ROOT / "config.yaml", {"market.source": "replay"}, environ={})
    market = build_market(cfg)
    create_app(cfg, market)
    assert threading.active_count() == before
    assert not market.started
    # The clock is held at the replay's start until start(): no market time passes before.
    assert market.clock.now_ms() == market.source.start_ms
