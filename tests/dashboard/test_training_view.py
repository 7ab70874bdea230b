"""The model card's skill lines: the verdict in words, with its interval and baseline."""

from __future__ import annotations

from dashboard.training_view import loss_text, scored_on, skill_lines
from tests.dash_text import texts

ROLES = {
    "1s": {"scored": False, "reason": "interpolated", "label": "not scored: interpolated"},
    "1m": {"scored": False, "reason": "interpolated", "label": "not scored: interpolated"},
    "1h": {"scored": True, "label": "trained and scored"},
    "1d": {"scored": True, "label": "trained and scored"},
}


def test_scored_on_names_the_real_timeframes_and_why_the_others_are_not():
    assert scored_on(ROLES) == "1h, 1d · not scored: 1s, 1m (interpolated)"
    assert scored_on(None) == "—"


def test_loss_shows_four_significant_digits_so_small_losses_still_move():
    assert loss_text(None, []) == "not trained yet"
    # two DQN-sized 5-step averages that 4 decimals both printed as "0.0004"
    a, b = loss_text(0.00041234, []), loss_text(0.00043789, [])
    assert (a, b) == ("0.0004123", "0.0004379")
    assert loss_text(2.68534, []) == "2.685"


def test_a_model_with_nothing_resolved_says_so():
    headline, verdict, spark, accuracy = skill_lines(None)
    assert headline == "no resolved predictions yet" and verdict == "too few rows"
    assert spark == "" and accuracy == "—"


def test_skill_lines_show_the_headline_rolling_skill_and_accuracy_beside_its_baseline():
    text = "range forecast 1h BTC/USDT: skill +0.06 [+0.05, +0.07] vs ewma: learning"
    quality = {
        "headline": {"text": text, "verdict": "learning", "symbol": "BTC/USDT",
                     "timeframe": "1h", "metric": "range_skill_ewma"},
        "rolling": {"metric": "range_skill_ewma", "timeframe": "1h", "window": 60,
                    "values": [None, 0.0, 0.05, 0.1], "baseline_values": [0, 0, 0, 0]},
        "groups": [
            {"symbol": "ETH/USDT", "timeframe": "1h", "scores": {}},
            {"symbol": "BTC/USDT", "timeframe": "1h", "scores": {"accuracy": {
                "value": 0.52, "baseline": "always_hold", "baseline_value": 0.47, "n": 400}}},
        ],
    }
    headline, verdict, spark, accuracy = skill_lines(quality)
    assert headline == text and verdict == "learning"
    # Rising rolling skill: 0 -> bar 0, 0.05 -> round(3.5) = bar 4, 0.1 -> bar 7 (None, before
    # a full window, is skipped).
    assert spark.startswith("▁▅█ ") and "rolling 1h (last 60 per point)" in spark
    # Accuracy never alone: beside its best naive baseline, on the headline's rows.
    assert accuracy == "52.0% vs always_hold 47.0% (1h, n=400)"


def test_the_predictions_table_marks_a_prediction_made_while_stale():
    from dashboard.training_view import predictions_table

    row = {"created_ts": 1_704_067_200_000, "model": "cnn", "symbol": "ETH/USDT",
           "timeframe": "1h", "action": "BUY", "confidence": 0.7, "pred_close": 101.0,
           "actual_close": None, "status": "pending", "action_correct": None, "reward": None}
    fresh, stale = predictions_table([{**row, "stale": False}]), predictions_table(
        [{**row, "stale": True}])
    assert "STALE" not in texts(fresh) and "CNN  STALE ETH/USDT" in texts(stale)


def test_the_panel_shows_a_store_that_is_down_and_hides_a_healthy_sqlite_one():
    from dashboard.training_view import store_text

    down = {"backend": "postgresql", "where": "postgresql://tickwise@db/tick", "state": "DOWN",
            "down_since": 1_704_067_200.0, "error": "OperationalError: refused",
            "retry_in_s": 3.6, "queued_rows": 57, "outages": 1, "last_write": None,
            "symbols": ["ETH/USDT"]}
    assert store_text(down) == ("postgresql://tickwise@db/tick (ETH/USDT): DOWN since 00:00:00 "
                                "UTC (OperationalError: refused); retry in 4 s, 57 rows waiting "
                                "in memory")
    assert store_text({**down, "state": "OK"}) == "postgresql://tickwise@db/tick (ETH/USDT): OK"


def test_job_errors_say_how_long_ago_the_last_one_was():
    from dashboard.training_view import errors_text

    errors = {"flush": {"type": "OperationalError", "message": "refused", "count": 5,
                        "last_wall_ts": 1000.0},
              "signal": {"type": "ValueError", "message": "nan", "count": 1,
                         "last_wall_ts": 1000.0}}
    assert errors_text(errors, 1012.4) == ("flush: OperationalError x5, last 12 s ago; "
                                           "signal: ValueError x1, last 12 s ago")
    assert errors_text({"flush": errors["flush"]}, 1000.0 + 600) == \
        "flush: OperationalError x5, last 10 min ago"


def test_the_panel_says_when_training_drops_experiences():
    from dashboard.training_view import panel_stats

    status = {"predictions_per_second": 1.0, "training_batches_per_minute": 6.0, "cycle": None,
              "signal_generation": {"state": "ACTIVE", "last_signal_ms": None},
              "paper": {"realised_pnl": 0.0, "positions": {}}, "errors": {},
              "dropped_experiences": {"cnn": 0, "dqn": 0}}
    assert "dropped" not in texts(panel_stats(status))
    status["dropped_experiences"] = {"cnn": 1234, "dqn": 0}
    assert "experiences dropped (training behind) cnn 1,234" in texts(panel_stats(status))
