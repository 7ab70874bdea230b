"""Scores in words (core/verdicts.py): the headline a card, /status and the report lead with,
and the plain sentence on direction skill."""

from __future__ import annotations

from core.scoring import score_table
from core.verdicts import direction_summary, headline
from tests.core.test_scoring import FEE, random_frame


def _s(value, lo, hi, verdict_, baseline="ewma", baseline_value=0.0, n=100):
    return {"value": value, "ci": [lo, hi], "baseline": baseline, "baseline_value": baseline_value,
            "diff": value - baseline_value, "diff_ci": [lo - baseline_value, hi - baseline_value],
            "verdict": verdict_, "n": n}  # fmt: skip


def _table(*scores_by_row):
    return [{"model": "cnn", "symbol": "BTC/USDT", "timeframe": tf, "n": 100, "scores": s}
            for tf, s in scores_by_row]  # fmt: skip


def test_headline_picks_the_clearest_skill():
    table = _table(
        ("1h", {"range_skill_ewma": _s(0.12, 0.08, 0.15, "skill"),
                "ic": _s(0.02, -0.01, 0.05, "no skill yet", "momentum", 0.0)}),
        ("1m", {"range_skill_ewma": _s(0.3, 0.01, 0.6, "skill")}),
    )  # fmt: skip
    out = headline(table, "cnn")
    assert out["verdict"] == "learning"
    assert (out["metric"], out["timeframe"], out["symbol"]) == (
        "range_skill_ewma",
        "1h",
        "BTC/USDT",
    )
    assert out["text"] == "range forecast 1h BTC/USDT: skill +0.12 [+0.08, +0.15] vs ewma: learning"
    assert out["value"] == 0.12 and out["ci"] == [0.08, 0.15] and out["baseline"] == "ewma"


def test_headline_judges_a_forecast_against_the_best_naive_forecast():
    # Beating persistence by 0.55 while tying the EWMA is no skill: the EWMA is the better
    # naive forecast on these rows, so it is the one the headline holds the model to.
    table = _table(("1m", {"close_skill_ewma": _s(0.55, 0.50, 0.59, "skill"),
                           "close_skill_persistence": _s(-0.003, -0.007, 0.0004, "no skill yet",
                                                         "persistence")}))  # fmt: skip
    out = headline(table, "cnn")
    assert out["verdict"] == "no skill yet" and out["metric"] == "close_skill_persistence"
    # Skill against both: the headline shows the smaller one, against the stronger baseline.
    table = _table(("1h", {"range_skill_persistence": _s(0.17, 0.13, 0.20, "skill",
                                                         "persistence"),
                           "range_skill_ewma": _s(0.086, 0.058, 0.114, "skill")}))  # fmt: skip
    out = headline(table, "cnn")
    assert out["verdict"] == "learning" and out["metric"] == "range_skill_ewma"


def test_without_skill_the_headline_shows_the_models_main_measure():
    # A zero-width precision tie is no news; the range forecast is the CNN's main measure.
    table = _table(("1h", {"range_skill_ewma": _s(0.01, -0.02, 0.04, "no skill yet"),
                           "precision": _s(0.51, 0.51, 0.51, "no skill yet", "base_rate",
                                           0.51)}))  # fmt: skip
    out = headline(table, "cnn", priority=("range_skill_ewma", "ic", "precision"))
    assert out["verdict"] == "no skill yet" and out["metric"] == "range_skill_ewma"
    # A skill anywhere still wins over the order.
    table[0]["scores"]["precision"] = _s(0.55, 0.53, 0.57, "skill", "base_rate", 0.51)
    assert headline(table, "cnn", priority=("range_skill_ewma",))["metric"] == "precision"


def test_headline_without_skill():
    no_skill = _table(("5m", {"ic": _s(0.02, -0.01, 0.05, "no skill yet", "momentum", 0.01),
                              "pnl": _s(-5.0, -9.0, -1.0, "worse", "always_hold", 0.0)}))  # fmt: skip
    out = headline(no_skill, "cnn")
    assert out["verdict"] == "no skill yet" and out["metric"] == "ic"
    assert out["text"].startswith("IC 5m BTC/USDT: +0.02 vs momentum +0.01, diff +0.01")
    worse = _table(("5m", {"pnl": _s(-5.0, -9.0, -1.0, "worse", "always_hold", 0.0),
                           "ic": _s(0.0, 0.0, 0.0, "too few rows", "momentum", 0.0, n=10)}))  # fmt: skip
    assert headline(worse, "cnn")["verdict"] == "worse than baseline"
    few = _table(("5m", {"ic": _s(0.1, 0.0, 0.2, "too few rows", n=10)}))
    assert headline(few, "cnn")["verdict"] == "too few rows"
    assert headline(few, "other")["verdict"] == "too few rows"


def test_headline_from_a_real_table():
    rows = random_frame(40, seed=1)
    half = (rows["actual_high"] - rows["actual_low"]) / 2
    rows["pred_high"], rows["pred_low"] = 200 + half, 200 - half  # a perfect range
    table = score_table(rows, fee_rate=FEE, seed=1, resamples=200)
    out = headline(table, "m")
    assert out["verdict"] == "learning" and out["metric"].startswith("range_skill")
    assert out["text"].startswith("range forecast 1m BTC/USDT: skill +1.00 [+1.00, +1.00] vs ")


def test_direction_summary_says_plainly_when_no_model_calls_the_direction():
    none = _table(("1h", {"range_skill_ewma": _s(0.09, 0.08, 0.11, "skill"),
                          "ic": _s(0.01, -0.01, 0.03, "no skill yet", "constant", 0.0),
                          "balanced_accuracy": _s(0.2, 0.18, 0.22, "worse", "momentum",
                                                  0.45)}))  # fmt: skip
    out = direction_summary(none)  # a range forecast is skill, but not a direction
    assert out["any"] is False and out["text"].startswith("No model has direction skill")
    some = none + [{"model": "cob", "symbol": "BTC/USDT", "timeframe": "1h", "n": 100,
                    "scores": {"ic": _s(0.08, 0.06, 0.10, "skill", "constant", 0.0)}}]
    out = direction_summary(some)
    assert out["any"] is True and [f["model"] for f in out["found"]] == ["cob"]
    assert out["text"].startswith("Direction skill: COB IC 1h BTC/USDT: +0.08 vs constant")

