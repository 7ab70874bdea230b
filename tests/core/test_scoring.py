"""Tests for core.scoring's scores: every score against its baseline, the block bootstrap and
verdicts (its building blocks, correctness, calibration, P&L, baselines: test_scoring_parts.py).

Hand sets are consecutive 1m candles (target_ts 0, 60 000, ...) predicted as they opened
(created_ts == target_ts), every reference price 100, so a change reads straight off the close
(101 is +1 %). With fee_rate 0.001 the round-trip fee is 0.2 % and the 1m HOLD band
(rewards.hold_band) is max(0.2 %, 1 % * sqrt(1 / 1440) = 0.026 %) = 0.2 % too.
"""

import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import scoring
from core.rewards import hold_band
from core.scoring import (
    block_length,
    causal_ewma,
    correctness,
    draw_block_starts,
    expected_calibration_error,
    group_rng,
    momentum,
    paper_pnl,
    previous_index,
    resample_sums,
    rolling,
    score_group,
    score_table,
    verdict,
)
from core.scoring.sums import Columns, pearson_of

MINUTE = 60_000
FEE = 0.001
A = 2.0 / 21.0  # EWMA-20 alpha
W = 1.0 - A  # weight of one candle older: 19/21


def frame(closes, actions, confs=None, **extra) -> pd.DataFrame:
    """Rows of model "m" on BTC/USDT 1m. ``extra`` overrides or adds columns (lists)."""
    n = len(closes)
    closes = np.asarray(closes, dtype=float)
    refs = np.asarray(extra.pop("refs", [100.0] * n), dtype=float)
    ts = np.arange(n) * MINUTE
    data = {
        "id": np.arange(1, n + 1),
        "model": "m",
        "symbol": "BTC/USDT",
        "timeframe": "1m",
        "created_ts": ts,
        "target_ts": ts,
        "reference_price": refs,
        "action": actions,
        "confidence": confs if confs is not None else [0.5] * n,
        "pred_open": np.nan,
        "pred_high": np.nan,
        "pred_low": np.nan,
        "pred_close": np.nan,
        "pred_volume": np.nan,
        "actual_open": refs,
        "actual_high": np.maximum(refs, closes) + 0.5,
        "actual_low": np.minimum(refs, closes) - 0.5,
        "actual_close": closes,
        "actual_volume": 1.0,
    }
    data.update(extra)
    return pd.DataFrame(data)


def score(df: pd.DataFrame, resamples: int = 200, seed: int = 7, tf: str = "1m") -> dict:
    return score_group(df, timeframe=tf, fee_rate=FEE, seed=seed, resamples=resamples)


def random_frame(n: int, seed: int = 0, *, actions=None, forecast: bool = True) -> pd.DataFrame:
    """A random walk with clustered volatility and a random BUY/SELL/HOLD model."""
    rng = np.random.default_rng(seed)
    vol = 0.002 * np.exp(np.convolve(rng.normal(0, 0.5, n), np.ones(20) / 5, mode="same"))
    ref = 100.0 * np.exp(np.cumsum(rng.normal(0, 1, n) * vol))
    close = ref * np.exp(rng.normal(0, 1, n) * vol)
    high = np.maximum(ref, close) * (1 + np.abs(rng.normal(0, 1, n)) * vol)
    low = np.minimum(ref, close) * (1 - np.abs(rng.normal(0, 1, n)) * vol)
    if actions is None:
        actions = rng.choice(["BUY", "SELL", "HOLD"], n)
    extra = {}
    if forecast:
        extra = {
            "pred_close": ref * (1 + rng.normal(0, 1, n) * vol),
            "pred_high": ref + (high - low) * 0.6 + rng.normal(0, 1, n) * vol * ref,
            "pred_low": ref - (high - low) * 0.4,
        }
    df = frame(close, actions, rng.uniform(0.3, 0.9, n), refs=ref, **extra)
    df["actual_high"], df["actual_low"] = high, low
    return df


# ----------------------------------------------------------------------- MAE skill

# Four candles at minutes 0, 1, 2 and 4 (minute 3 is missing), reference 100:
#   row  close  high   low    range  pred_close  pred range
#   0    101    102    100    2      100.5       2.5
#   1     99    101     98    3      100         2.5
#   2    102    103    100    3      101         3
#   3    100    100.5   99.5  1      101         2.5   (target minute 4: no previous candle)
MAE_ROWS = frame(
    [101.0, 99.0, 102.0, 100.0],
    ["BUY", "SELL", "BUY", "HOLD"],
    actual_high=[102.0, 101.0, 103.0, 100.5],
    actual_low=[100.0, 98.0, 100.0, 99.5],
    pred_close=[100.5, 100.0, 101.0, 101.0],
    pred_high=[101.5, 101.5, 102.0, 101.5],
    pred_low=[99.0, 99.0, 99.0, 99.0],
    target_ts=[0, MINUTE, 2 * MINUTE, 4 * MINUTE],
    created_ts=[0, MINUTE, 2 * MINUTE, 4 * MINUTE],
)


def test_close_skill_against_persistence():
    # model |pred - close| / 100: .005 .01 .01 .01 = .035
    # persistence (the reference 100) |100 - close| / 100: .01 .01 .02 0 = .04, every row
    # skill 1 - .035 / .04 = .125
    s = score(MAE_ROWS)["close_skill_persistence"]
    assert s["value"] == pytest.approx(0.125)
    assert s["n"] == 4
    assert (s["baseline"], s["baseline_value"], s["diff"]) == ("persistence", 0.0, s["value"])


def test_close_skill_against_the_ewma_by_hand():
    # EWMA of the previous closes, newest weight 1, then 19/21, (19/21)^2:
    #   row 0: none (left out)
    #   row 1: 101                                      -> error |101 - 99| = 2
    #   row 2: (99 + 101 * 19/21) / (1 + 19/21) = 3998/40 = 99.95 -> error 2.05
    #   row 3: (102 * 441 + 99 * 399 + 101 * 361) / 1201 = 120944/1201 (minute 3's absence
    #          does not matter: every earlier candle had closed)   -> error 120944/1201 - 100
    # model on rows 1-3: 1 + 1 + 1 = 3 (/ 100 each side)
    ewma_err = 2.0 + 2.05 + (120944 / 1201 - 100.0)
    s = score(MAE_ROWS)["close_skill_ewma"]
    assert s["value"] == pytest.approx(1.0 - 3.0 / ewma_err)
    assert s["n"] == 3


def test_causal_ewma_weights():
    # alpha 2/21: [2], [2, 3], [2, 3, 3] -> 2, (3 + 2 * 19/21) / (1 + 19/21) = 101/40,
    # (3 + 3 * 19/21 + 2 * (19/21)^2) / (1 + 19/21 + (19/21)^2) = 3242/1201
    values = np.array([2.0, 3.0, 3.0, 1.0])
    out = causal_ewma(values, np.array([0, 1, 2, 3]))
    assert np.isnan(out[0])
    assert out[1:].tolist() == pytest.approx([2.0, 101 / 40, 3242 / 1201])
    assert (3 + 3 * W + 2 * W**2) / (1 + W + W**2) == pytest.approx(3242 / 1201)
    # a row predicted before its previous candle closed sees one candle less
    assert causal_ewma(values, np.array([0, 0, 1, 1]))[3] == 2.0


def test_range_skill_against_persistence_leaves_out_a_missing_previous_candle():
    # model |pred range - range|: .5 .5 0 1.5
    # persistence = the previous candle's range: row 0 none; row 1: |2 - 3| = 1; row 2:
    # |3 - 3| = 0; row 3: its previous candle (minute 3) is missing -> left out for both.
    # model on rows 1, 2: .5 + 0 = .5; skill 1 - .5 / 1 = .5
    # (had row 3 used row 2's range: model 2, baseline 1 + 0 + 2 = 3, skill 1/3)
    s = score(MAE_ROWS)["range_skill_persistence"]
    assert s["value"] == pytest.approx(0.5)
    assert s["n"] == 2


def test_range_skill_against_the_ewma():
    # EWMA of previous ranges (price units): row 1: 2 -> |2 - 3| = 1; row 2: 101/40 = 2.525
    # -> .475; row 3: 3242/1201 -> |3242/1201 - 1|.  model on rows 1-3: .5 + 0 + 1.5 = 2
    ewma_err = 1.0 + 0.475 + (3242 / 1201 - 1.0)
    s = score(MAE_ROWS)["range_skill_ewma"]
    assert s["value"] == pytest.approx(1.0 - 2.0 / ewma_err)
    assert s["n"] == 3


def test_mae_skills_only_with_a_forecast():
    rows = MAE_ROWS.copy()
    rows[["pred_high", "pred_low", "pred_close"]] = None
    names = set(score(rows))
    assert not names & {
        "close_skill_persistence", "close_skill_ewma", "range_skill_persistence",
        "range_skill_ewma", "ic_close",
    }  # fmt: skip
    assert {"ic", "balanced_accuracy", "pnl", "accuracy"} <= names


def previous_changes(target, created, changes, tf_ms):
    """Each row's previous candle's change (NaN if unknown), through previous_index."""
    changes = np.asarray(changes, dtype=float)
    prev = previous_index(np.asarray(target, dtype=np.int64), np.asarray(created, dtype=np.int64),
                          tf_ms)
    return np.where(prev >= 0, changes[np.maximum(prev, 0)], np.nan)


def test_previous_index_finds_the_candle_closed_before_each_prediction():
    target = np.array([0, 1, 2, 4, 5, 5, 6]) * MINUTE
    created = target.copy()
    created[4] = 5 * MINUTE - 1  # predicted before minute 4 closed: no previous candle
    prev = previous_index(target, created, MINUTE)
    # row 5 and row 4 are both minute 5: row 6's previous candle is the last of them, row 5
    # (row 3 is minute 4, whose minute 3 is missing: none)
    assert prev.tolist() == [-1, 0, 1, -1, -1, 3, 5]


def test_perfect_range_forecast_has_skill_on_40_rows():
    rng = np.random.default_rng(3)
    closes = 100 + rng.normal(0, 0.5, 40)
    half = rng.uniform(0.2, 2.0, 40)
    rows = frame(closes, ["HOLD"] * 40, actual_high=closes + half, actual_low=closes - half,
                 pred_high=101 + half, pred_low=101 - half, pred_close=closes)  # fmt: skip
    scores = score(rows)
    for name in ("range_skill_persistence", "range_skill_ewma"):
        s = scores[name]
        # 1 up to rounding: (101 + h) - (101 - h) and (c + h) - (c - h) differ in the last bit
        assert s["value"] == pytest.approx(1.0) and s["diff_ci"] == pytest.approx([1.0, 1.0])
        assert s["n"] == 39 and s["verdict"] == "skill"


# ----------------------------------------------------------------------- IC

# Six candles; row 0 has no previous candle, so the IC is over rows 1-5.
#   row  close   r (approx)  action  conf  view   pred_close
#   0    100.5   +0.5 %      BUY     .6    (out)  100
#   1    101     +1 %        BUY     .5    +.5    100.4
#   2    102     +2 %        BUY     .8    +.8    100.3
#   3     99     -1 %        HOLD    .5     0     99.7
#   4     98     -2 %        SELL    .9    -.9    99.8
#   5    100.3   +0.3 %      SELL    .4    -.4    100.0
IC_ROWS = frame(
    [100.5, 101.0, 102.0, 99.0, 98.0, 100.3],
    ["BUY", "BUY", "BUY", "HOLD", "SELL", "SELL"],
    [0.6, 0.5, 0.8, 0.5, 0.9, 0.4],
    pred_close=[100.0, 100.4, 100.3, 99.7, 99.8, 100.0],
)


def test_ic_is_spearman_of_the_signed_confidence_with_momentum_by_hand():
    # ranks over rows 1-5, rho = 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 sum d^2 / 120:
    #   r:        +1 +2 -1 -2 +.3      -> 4 5 2 1 3
    #   view:     .5 .8 0 -.9 -.4      -> 4 5 3 1 2   d^2 0 0 1 0 1 = 2 -> IC .9
    #   momentum: r of the row before: +.5 +1 +2 -1 -2 -> 3 4 5 2 1
    #             d^2 1 1 9 1 4 = 16 -> IC 1 - 96/120 = .2 (beats the constant's 0)
    s = score(IC_ROWS)["ic"]
    assert s["value"] == pytest.approx(0.9)
    assert (s["baseline"], s["baseline_value"]) == ("momentum", pytest.approx(0.2))
    assert s["diff"] == pytest.approx(0.7)
    assert s["n"] == 5
    assert s["verdict"] == "too few rows"


def test_ic_close_ranks_the_predicted_move():
    # pred_close rows 1-5: 100.4 100.3 99.7 99.8 100 -> ranks 5 4 1 2 3 vs r's 4 5 2 1 3:
    # d^2 1 1 1 1 0 = 4 -> 1 - 24/120 = .8
    assert score(IC_ROWS)["ic_close"]["value"] == pytest.approx(0.8)


def test_ic_close_is_of_the_predicted_move_not_the_price():
    # a perfect move forecast (pred_close / ref = close / ref) on references that jump around,
    # so the predicted prices themselves rank otherwise: IC 1
    refs = [100.0, 50.0, 200.0, 80.0, 150.0, 120.0, 60.0]
    moves = np.array([0.01, -0.02, 0.005, 0.03, -0.01, 0.0, 0.02])
    closes = np.array(refs) * (1 + moves)
    rows = frame(closes, ["HOLD"] * 7, refs=refs, pred_close=closes)
    assert score(rows)["ic_close"]["value"] == pytest.approx(1.0)


def test_ic_of_a_constant_stretch_is_exactly_0():
    # x constant but not 0 (0.1 on 3 rows): its variance from sums is rounding-sized, not 0
    cols = Columns(3)
    stat = pearson_of(cols, np.ones(3, bool), np.full(3, 0.1), np.array([1.0, 2, 4]))
    assert stat(cols.matrix().sum(axis=0), 3) == 0.0


def test_ic_compares_with_a_constant_when_momentum_is_negative():
    # reversed closes flip momentum's sign: IC of momentum < 0, so the constant (IC 0) is the
    # better baseline and diff = value
    rows = frame([100.0, 101.0, 99.0, 101.5, 98.0, 102.0, 99.5], ["BUY"] * 7)
    s = score(rows)["ic"]
    assert (s["baseline"], s["baseline_value"]) == ("constant", 0.0)
    assert s["value"] == 0.0 and s["ci"] == [0.0, 0.0]  # a constant view


# ----------------------------------------------------------------------- direction, precision

#   row  close   change   action  beyond the 0.2 % fee   momentum (previous change)
#   0    101     +1 %     BUY     up   hit                HOLD (unknown)
#   1    100.1   +0.1 %   BUY     -    (left out)         BUY
#   2    100.5   +0.5 %   HOLD    up   miss (HOLD)        BUY
#   3    100.3   +0.3 %   SELL    up   miss               BUY
#   4     99     -1 %     SELL    down hit                BUY
#   5     99.5   -0.5 %   BUY     down miss               SELL
#   6     99.85  -0.15 %  SELL    -    (left out)         SELL
#   7    100.4   +0.4 %   BUY     up   hit                SELL
#   8     98     -2 %     SELL    down hit                BUY (+0.4 % before)
DIR_ROWS = frame(
    [101.0, 100.1, 100.5, 100.3, 99.0, 99.5, 99.85, 100.4, 98.0],
    ["BUY", "BUY", "HOLD", "SELL", "SELL", "BUY", "SELL", "BUY", "SELL"],
    [0.9, 0.6, 0.5, 0.7, 0.8, 0.3, 0.5, 0.7, 0.9],
)


def test_balanced_accuracy_with_the_fee_band_and_random_like():
    # up-moves 0 2 3 7: hits 0, 7 -> 2/4; down-moves 4 5 8: hits 4, 8 -> 2/3
    # balanced (1/2 + 2/3) / 2 = 7/12; rows 1 and 6 moved less than the fee: left out
    # momentum: up 0 2 3 7 -> HOLD BUY BUY SELL 2/4; down 4 5 8 -> BUY SELL BUY 1/3: 5/12
    # random_like: of the 7 scored rows, 3 long calls (0 5 7) and 3 short (3 4 8):
    # (3/7 + 3/7) / 2 = 3/7 > 5/12, so random_like is the baseline; diff 7/12 - 3/7 = 13/84
    s = score(DIR_ROWS)["balanced_accuracy"]
    assert s["value"] == pytest.approx(7 / 12)
    assert (s["baseline"], s["baseline_value"]) == ("random_like", pytest.approx(3 / 7))
    assert s["diff"] == pytest.approx(13 / 84)
    assert s["n"] == 7


def test_balanced_accuracy_random_like_is_a_blind_call_mix():
    # all SELL on DIR_ROWS: up 0/4, down 3/3 -> 1/2; random_like: 7 short calls of the 7
    # scored rows -> (0 + 7/7) / 2 = 1/2 > momentum's 5/12; the same 1/2 on every resample
    s = score(DIR_ROWS.assign(action="SELL"))["balanced_accuracy"]
    assert s["value"] == pytest.approx(0.5)
    assert (s["baseline"], s["baseline_value"]) == ("random_like", pytest.approx(0.5))
    assert s["diff_ci"] == [0.0, 0.0]


def test_balanced_accuracy_momentum_when_it_is_better():
    #   change %  +1 +1 +1 -1 -1 -1 +1 +1, every call BUY: up 5/5, down 0/3 -> 1/2
    #   random_like: 8 long calls of 8 -> (1 + 0) / 2 = 1/2
    #   momentum HOLD BUY BUY BUY SELL SELL SELL BUY: up rows 0 1 2 6 7 -> 1 2 7 right, 3/5;
    #   down rows 3 4 5 -> 4 5 right, 2/3: (3/5 + 2/3) / 2 = 19/30, the better baseline
    rows = frame([101.0, 101, 101, 99, 99, 99, 101, 101], ["BUY"] * 8)
    s = score(rows)["balanced_accuracy"]
    assert s["value"] == pytest.approx(0.5)
    assert (s["baseline"], s["baseline_value"]) == ("momentum", pytest.approx(19 / 30))
    assert s["diff"] == pytest.approx(-2 / 15)
    # a model that is momentum: ties with it, diff exactly 0 on every resample
    mom = momentum(previous_changes(rows["target_ts"], rows["created_ts"],
                                    rows["actual_close"] / 100 - 1, MINUTE)).actions  # fmt: skip
    s = score(rows.assign(action=mom))["balanced_accuracy"]
    assert (s["baseline"], s["diff"], s["diff_ci"]) == ("momentum", 0.0, [0.0, 0.0])


def test_balanced_accuracy_needs_both_sides():
    rows = frame([101.0, 102.0, 103.0], ["BUY"] * 3)  # no down-move
    assert math.isnan(score(rows)["balanced_accuracy"]["value"])
    assert score(rows)["balanced_accuracy"]["verdict"] == "too few rows"


def test_precision_and_its_base_rate():
    # calls: every row but 2 (8); right beyond the fee: 0 4 7 8 (row 1's +0.1 % and row 6's
    # -0.15 % are right in sign but within the fee) -> 4/8
    # base rate: P(up beyond fee) = 4/9 (0 2 3 7), P(down) = 3/9 (4 5 8); 4 long calls
    # (0 1 5 7), 4 short (3 4 6 8): (4 * 4/9 + 4 * 3/9) / 8 = 7/18
    s = score(DIR_ROWS)["precision"]
    assert s["value"] == pytest.approx(0.5)
    assert (s["baseline"], s["baseline_value"]) == ("base_rate", pytest.approx(7 / 18))
    assert s["n"] == 8
    cov = score(DIR_ROWS)["coverage"]
    assert cov["value"] == pytest.approx(8 / 9)
    assert cov["baseline"] is None and cov["verdict"] is None and cov["diff_ci"] is None


# ----------------------------------------------------------------------- confidence

# correct by action_correct with the 0.2 % band: 1 1 0 0 1 0 1 1 1 (row 1's BUY +0.1 % is
# right in sign; row 2's HOLD on +0.5 % is beyond the band; row 6's SELL -0.15 % right)


def test_brier_skill_against_the_expanding_base_rate():
    # base rate b_i = mean of the earlier rows' y, .5 first:
    #   .5, 1, 1, 2/3, 1/2, 3/5, 1/2, 4/7, 5/8
    # (b - y)^2: .25 0 1 4/9 .25 .36 .25 9/49 9/64
    # (p - y)^2: .01 .16 .25 .49 .04 .09 .25 .09 .01 = 1.39
    base = 0.25 + 0 + 1 + 4 / 9 + 0.25 + 0.36 + 0.25 + 9 / 49 + 9 / 64
    s = score(DIR_ROWS)["brier_skill"]
    assert s["value"] == pytest.approx(1.0 - 1.39 / base)
    assert (s["baseline"], s["baseline_value"], s["diff_ci"]) == ("base_rate", 0.0, s["ci"])


def test_ece_uses_evaluation_bins():
    # |right - sum of confidences| per bin: .9 (rows 0, 8: 2 right of 1.8) .2; .8 (4: 1 of .8)
    # .2; .7 (3, 7: 1 of 1.4) .4; .6 (1: 1 of .6) .4; .5 (2, 6: 1 of 1) 0; .3 (5: 0 of .3) .3
    # -> 1.5 / 9 (5 bins would merge .6 with .7 and .8 with .9: .7 / 9)
    s = score(DIR_ROWS)["ece"]
    assert s["value"] == pytest.approx(1.5 / 9)
    correct = correctness(DIR_ROWS["action"], DIR_ROWS["actual_close"] / 100 - 1, 0.002)
    assert s["value"] == pytest.approx(expected_calibration_error(DIR_ROWS["confidence"], correct))
    assert s["baseline"] is None and s["verdict"] is None


# ----------------------------------------------------------------------- P&L, accuracy


def test_pnl_is_evaluation_paper_pnl_against_the_best_baseline():
    # 1000 USD a trade, 2 USD of fees: 8 -1 0 -5 8 -7 -.5 2 18 = 22.5
    # buy-and-hold: 10 1 5 3 -10 -5 -1.5 4 -20 - 9 * 2 = -31.5
    # momentum: 0 -1 3 1 -12 3 -.5 -6 -22 = -34.5
    # always_hold (not trading): 0 -> the best; diff 22.5
    s = score(DIR_ROWS)["pnl"]
    assert s["value"] == pytest.approx(22.5)
    total = paper_pnl(DIR_ROWS["action"], DIR_ROWS["reference_price"],
                      DIR_ROWS["actual_close"], FEE)["total"]  # fmt: skip
    assert s["value"] == pytest.approx(total)
    assert (s["baseline"], s["baseline_value"], s["diff"]) == ("always_hold", 0.0, s["value"])


def test_accuracy_uses_the_timeframe_band_against_the_best_baseline():
    # model 6/9; always_hold: |change| <= .2 %: rows 1, 6 -> 2/9; buy_and_hold: rows 0 1 2 3 7
    # -> 5/9; momentum HOLD BUY BUY BUY BUY SELL SELL SELL BUY: 0 1 1 1 0 1 1 0 0 -> 5/9
    # (a tie: buy_and_hold, listed first, is the baseline); diff 1/9
    s = score(DIR_ROWS)["accuracy"]
    assert s["value"] == pytest.approx(6 / 9)
    assert (s["baseline"], s["baseline_value"]) == ("buy_and_hold", pytest.approx(5 / 9))
    assert s["diff"] == pytest.approx(1 / 9)


def test_direction_model_faces_no_always_hold():
    rows = DIR_ROWS.assign(action=np.where(DIR_ROWS["action"] == "SELL", "DOWN", "UP"))
    scores = score(rows)
    assert scores["pnl"]["baseline"] != "always_hold"
    assert scores["accuracy"]["baseline"] != "always_hold"
    # momentum as UP/DOWN: row 0 (unknown) is UP, and right (+1 %): 6/9 > buy_and_hold's 5/9
    assert scores["accuracy"]["baseline"] == "momentum"
    assert scores["accuracy"]["baseline_value"] == pytest.approx(6 / 9)
    # P&L: momentum gains row 0's 10 - 2: -34.5 + 8 = -26.5 > buy-and-hold's -31.5
    assert scores["pnl"]["baseline"] == "momentum"
    assert scores["pnl"]["baseline_value"] == pytest.approx(-26.5)


# ----------------------------------------------------------------------- constants cannot win


@pytest.mark.parametrize("kind", ["random", "mean_reverting", "trending"])
def test_always_hold_has_ic_0_balanced_accuracy_0_and_no_skill(kind):
    n = 400
    rows = random_frame(n, seed=11, actions=["HOLD"] * n, forecast=False)
    rng = np.random.default_rng(5)
    moves = np.abs(rng.normal(0, 0.004, n))
    if kind == "mean_reverting":  # momentum's IC is strongly negative: a constant beats it
        rows["actual_close"] = 100 * (1 + moves * (-1.0) ** np.arange(n))
        rows["reference_price"] = 100.0
    elif kind == "trending":  # small drift: buy-and-hold would lose to nothing after fees
        rows["actual_close"] = rows["reference_price"] * (1 + rng.normal(0.0005, 0.003, n))
    rows["confidence"] = 0.6
    scores = score(rows)
    assert scores["ic"]["value"] == 0.0
    assert scores["balanced_accuracy"]["value"] == 0.0
    assert scores["coverage"]["value"] == 0.0
    assert all(s["verdict"] != "skill" for s in scores.values()), {
        k: s["verdict"] for k, s in scores.items()
    }


# ----------------------------------------------------------------------- verdicts


def test_verdict_rule():
    assert verdict([0.01, 0.2], 30, 0.1) == "skill"
    assert verdict([-0.2, -0.01], 30, -0.1) == "worse"
    assert verdict([-0.01, 0.2], 30, 0.1) == "no skill yet"
    assert verdict([0.0, 0.0], 30, 0.0) == "no skill yet"  # touching 0 is not above it
    assert verdict([0.01, 0.2], 29, 0.1) == "too few rows"
    assert verdict([0.01, 0.2], 100, math.nan) == "too few rows"
    assert verdict([math.nan, math.nan], 100, 0.1) == "too few rows"


def test_scores_carry_verdicts_from_the_diff_interval():
    scores = score(random_frame(600, seed=2), resamples=300)
    for name, s in scores.items():
        if s["baseline"] is None:
            assert s["verdict"] is None, name
            continue
        lo, hi = s["diff_ci"]
        expect = "skill" if lo > 0 else "worse" if hi < 0 else "no skill yet"
        assert s["verdict"] == (expect if s["n"] >= 30 else "too few rows"), name
        assert s["diff"] == pytest.approx(s["value"] - s["baseline_value"]), name


# ----------------------------------------------------------------------- bootstrap


def test_block_length_is_the_cube_root():
    for n in (1, 2, 7, 8, 27, 100, 1000, 20_000):
        assert block_length(n) == max(1, round(n ** (1 / 3)))
    assert block_length(20_000) == 27 and block_length(1000) == 10
    starts = draw_block_starts(np.random.default_rng(0), 1000, 50)
    assert starts.shape == (50, 100)  # k = ceil(1000 / 10)
    assert starts.min() >= 0 and starts.max() <= 990
    assert draw_block_starts(np.random.default_rng(0), 1001, 5).shape == (5, 101)


def test_resample_sums_equal_summing_the_drawn_rows():
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(97, 5))
    length = block_length(97)  # 5
    starts = draw_block_starts(rng, 97, 40)  # [40, 20]
    rows = (starts[:, :, None] + np.arange(length)).reshape(40, -1)  # [R, k * L]
    slow = matrix[rows].sum(axis=1)
    np.testing.assert_allclose(resample_sums(matrix, starts, length), slow, rtol=1e-10, atol=1e-10)
    identical = resample_sums(np.repeat(matrix[:, :1], 2, axis=1), starts, length)
    assert (identical[:, 0] == identical[:, 1]).all()  # bit for bit: paired diffs are exact


def test_interval_is_seeded():
    rows = random_frame(300, seed=4)
    a, b = score(rows, seed=1), score(rows, seed=1)
    c = score(rows, seed=2)
    for name in a:
        assert (a[name]["ci"], a[name]["diff_ci"]) == (b[name]["ci"], b[name]["diff_ci"]), name
    assert a["accuracy"]["ci"] != c["accuracy"]["ci"]
    # seeded per group: another symbol draws other blocks
    other = score(rows.assign(symbol="ETH/USDT"), seed=1)
    assert other["accuracy"]["ci"] != a["accuracy"]["ci"]


def test_interval_is_paired():
    # every row BUY is buy_and_hold itself; on a rising market it is the best baseline
    n = 200
    rows = random_frame(n, seed=6, actions=["BUY"] * n, forecast=False)
    rows["actual_close"] = rows["reference_price"] * 1.01
    s = score(rows)
    for name in ("accuracy", "pnl"):
        assert s[name]["baseline"] == "buy_and_hold"
        assert s[name]["diff"] == 0.0 and s[name]["diff_ci"] == [0.0, 0.0]
        assert s[name]["ci"][0] < s[name]["ci"][1] or name == "accuracy"
        assert s[name]["verdict"] == "no skill yet"


def test_interval_contains_the_value_and_narrows_with_more_rows():
    small = score(random_frame(300, seed=8), resamples=400)
    large = score(random_frame(6000, seed=8), resamples=400)
    for name, s in small.items():
        assert s["ci"][0] <= s["value"] <= s["ci"][1], name
        assert s["ci"][0] < s["ci"][1], name
    for name in ("accuracy", "balanced_accuracy", "ic", "brier_skill", "range_skill_ewma"):
        width = large[name]["ci"][1] - large[name]["ci"][0]
        assert width < 0.5 * (small[name]["ci"][1] - small[name]["ci"][0]), name


def test_sums_bootstrap_equals_plain_index_resampling():
    """A slow bootstrap that resamples rows by index, on the same drawn block starts."""
    n, resamples, seed = 300, 150, 9
    rows = random_frame(n, seed=10)
    fast = score(rows, resamples=resamples, seed=seed)
    length = round(n ** (1 / 3))  # 7
    k = math.ceil(n / length)
    rng = np.random.default_rng([seed, zlib.crc32(b"m|BTC/USDT|1m")])
    starts = rng.integers(0, n - length + 1, size=(resamples, k))

    ref, close = rows["reference_price"].to_numpy(), rows["actual_close"].to_numpy()
    actions = rows["action"].to_numpy()
    change = close / ref - 1
    band = hold_band(MINUTE, FEE)
    prev = previous_changes(rows["target_ts"], rows["created_ts"], change, MINUTE)
    mom = momentum(prev).actions
    hits = correctness(actions, change, band)
    baseline_hits = {
        "momentum": correctness(mom, change, band),
        "always_hold": correctness(["HOLD"] * n, change, band),
        "buy_and_hold": correctness(["BUY"] * n, change, band),
    }[fast["accuracy"]["baseline"]]
    net = np.array([paper_pnl([a], [r], [c], FEE)["total"] for a, r, c in zip(actions, ref, close)])
    view = np.where(actions == "BUY", 1, np.where(actions == "SELL", -1, 0)) * rows["confidence"]
    known = ~np.isnan(prev)
    x_rank = np.zeros(n)
    y_rank = np.zeros(n)
    x_rank[known] = pd.Series(view[known]).rank().to_numpy()  # full-sample ranks
    y_rank[known] = pd.Series(np.log(close / ref)[known]).rank().to_numpy()
    up, down = change > 2 * FEE, change < -2 * FEE
    long, short = actions == "BUY", actions == "SELL"

    acc, pnl, ic, bal = [], [], [], []
    for b in range(resamples):
        idx = (starts[b][:, None] + np.arange(length)).ravel()  # k * L row indices
        acc.append(hits[idx].mean() - baseline_hits[idx].mean())
        pnl.append(net[idx].sum() * n / len(idx))
        use = idx[known[idx]]
        ic.append(np.corrcoef(x_rank[use], y_rank[use])[0, 1])
        bal.append(((long & up)[idx].sum() / up[idx].sum()
                    + (short & down)[idx].sum() / down[idx].sum()) / 2)  # fmt: skip

    def interval(stats):
        return pytest.approx(np.percentile(stats, [2.5, 97.5]).tolist(), rel=1e-9, abs=1e-9)

    assert fast["accuracy"]["diff_ci"] == interval(acc)
    assert fast["pnl"]["ci"] == interval(pnl)
    assert fast["ic"]["ci"] == interval(ic)
    assert fast["balanced_accuracy"]["ci"] == interval(bal)


def test_twenty_thousand_rows_are_fast():
    import time

    rows = random_frame(20_000, seed=12)
    score(rows, resamples=1000)  # warm up
    start = time.perf_counter()
    scores = score(rows, resamples=1000)
    assert time.perf_counter() - start < 2.0  # about 0.3 s here; slack for a busy machine
    assert len(scores) == 13


# ----------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.drop(columns="actual_close"), "actual_close"),
        (lambda d: d.assign(actual_close=[101.0, np.nan, 102.0, 100.0]), "actual_close"),
        (lambda d: d.assign(reference_price=[100.0, 0.0, 100.0, 100.0]), "reference_price"),
        (lambda d: d.assign(action=["BUY", "LONG", "BUY", "HOLD"]), "LONG"),
        (lambda d: d.assign(confidence=[0.5, 1.5, 0.5, 0.5]), "confidence"),
        (lambda d: d.assign(model=["m", "n", "m", "m"]), "model"),
        (lambda d: d.assign(timeframe="5m"), "5m"),
        (lambda d: d.assign(pred_close=[np.inf, 1.0, 1.0, 1.0]), "pred_close"),
        (lambda d: d.iloc[:0], "empty"),
    ],
)
def test_invalid_input_names_the_problem(change, message):
    with pytest.raises(ValueError, match=message):
        score(change(MAE_ROWS))


def test_rows_are_sorted_before_scoring():
    shuffled = DIR_ROWS.sample(frac=1.0, random_state=3)
    assert score(shuffled) == score(DIR_ROWS)


# ----------------------------------------------------------------------- table, headline


def test_score_table_groups_and_sorts():
    rows = pd.concat([DIR_ROWS.assign(symbol="ETH/USDT"), DIR_ROWS, IC_ROWS.assign(model="a")])
    table = score_table(rows, fee_rate=FEE, seed=7, resamples=100)
    assert [(t["model"], t["symbol"], t["timeframe"], t["n"]) for t in table] == [
        ("a", "BTC/USDT", "1m", 6), ("m", "BTC/USDT", "1m", 9), ("m", "ETH/USDT", "1m", 9),
    ]  # fmt: skip
    assert table[1]["scores"] == score(DIR_ROWS, resamples=100)


# ----------------------------------------------------------------------- rolling


def test_rolling_accuracy_over_a_trailing_window():
    # correct 1 1 0 0 1 0 1 1 1, window 3: NaN NaN 2/3 1/3 1/3 1/3 2/3 2/3 1
    # buy_and_hold (the full sample's baseline) 1 1 1 1 0 0 0 1 0: 1 1 2/3 1/3 0 1/3 1/3
    out = rolling(DIR_ROWS, timeframe="1m", fee_rate=FEE, metric="accuracy", window=3)
    assert list(out.columns) == ["created_ts", "value", "baseline_value"]
    assert out["created_ts"].tolist() == (np.arange(9) * MINUTE).tolist()
    assert out["value"].tolist()[:2] == [pytest.approx(math.nan, nan_ok=True)] * 2
    assert out["value"].tolist()[2:] == pytest.approx([2/3, 1/3, 1/3, 1/3, 2/3, 2/3, 1])  # fmt: skip
    assert out["baseline_value"].tolist()[2:] == pytest.approx([1, 1, 2/3, 1/3, 0, 1/3, 1/3])  # fmt: skip


def test_rolling_matches_score_group_on_a_full_window():
    rows = random_frame(120, seed=3)
    for metric in ("pnl", "balanced_accuracy", "brier_skill", "close_skill_ewma", "ece"):
        out = rolling(rows, timeframe="1m", fee_rate=FEE, metric=metric, window=120)
        assert out["value"].iloc[-1] == pytest.approx(score(rows)[metric]["value"]), metric
    pnl = rolling(rows, timeframe="1m", fee_rate=FEE, metric="pnl", window=50)
    assert pnl["value"].isna().sum() == 29  # NaN until 30 rows
    with pytest.raises(ValueError, match="metric"):
        rolling(rows, timeframe="1m", fee_rate=FEE, metric="sharpe")
    no_forecast = rolling(DIR_ROWS, timeframe="1m", fee_rate=FEE, metric="range_skill_ewma")
    assert no_forecast["value"].isna().all()


def test_group_rng_is_keyed():
    a = group_rng(1, "m", "BTC/USDT", "1m").integers(0, 1 << 30)
    b = np.random.default_rng([1, zlib.crc32(b"m|BTC/USDT|1m")]).integers(0, 1 << 30)
    assert a == b


def test_module_has_no_torch():
    for path in Path(scoring.__file__).parent.glob("*.py"):  # every module of the package
        source = path.read_text()
        assert "import torch" not in source and "from torch" not in source, path.name


