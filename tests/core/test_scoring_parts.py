"""Tests for core.scoring's building blocks: accuracy, calibration, paper P&L and baselines.

Every expected number is worked out by hand in a comment, on one tiny set of eight candles:

=====  ======  ==========  =====  ========  =======
row    action  confidence  close  change    correct
=====  ======  ==========  =====  ========  =======
0      BUY     0.9         102    +2 %      yes
1      SELL    0.8         99     -1 %      yes
2      BUY     0.7         99.5   -0.5 %    no
3      HOLD    0.6         100.3  +0.3 %    yes  (inside the 0.5 % band)
4      SELL    0.9         101    +1 %      no
5      BUY     0.4         100    0 (flat)  no   (a flat BUY earns nothing: wrong)
6      HOLD    0.2         101    +1 %      no   (outside the band)
7      BUY     0.3         103    +3 %      yes
=====  ======  ==========  =====  ========  =======

Every reference price is 100, so a change reads straight off the close; the candles are
consecutive 1m candles (target_ts 0, 60 000, ...) predicted as they opened (created_ts ==
target_ts), so the previous row is the previous candle. Changes go through real prices, so
binary rounding (99.5 / 100 - 1 = -0.0050000000000000044) is compared with approx.
"""

import math

import numpy as np
import pandas as pd
import pytest

from core.scoring import (
    always_hold,
    as_direction,
    correctness,
    expected_calibration_error,
    momentum,
    paper_pnl,
    reliability,
    rolling_accuracy,
)

ACTIONS = ["BUY", "SELL", "BUY", "HOLD", "SELL", "BUY", "HOLD", "BUY"]
CONFIDENCES = [0.9, 0.8, 0.7, 0.6, 0.9, 0.4, 0.2, 0.3]
CLOSES = [102.0, 99.0, 99.5, 100.3, 101.0, 100.0, 101.0, 103.0]
REFS = [100.0] * 8
CHANGES = [c / 100.0 - 1.0 for c in CLOSES]  # +.02 -.01 -.005 +.003 +.01 0 +.01 +.03
CORRECT = [True, True, False, True, False, False, False, True]
MINUTE = 60_000




# ----------------------------------------------------------------------- accuracy, baselines


def test_correctness_follows_action_correct_and_its_band():
    assert correctness(ACTIONS, CHANGES).tolist() == CORRECT  # rows 0, 1, 3, 7 right
    # a 0.2 % band makes row 3's HOLD (+0.3 %) wrong too
    assert correctness(ACTIONS, CHANGES, hold_band=0.002).tolist() == [
        True, True, False, False, False, False, False, True]


def test_always_hold_baseline():
    # HOLD is right within 0.5 %: rows 2 (-.5 %, at the band), 3 (+.3 %), 5 (0): 3 / 8;
    # ECE at confidence .5: |.375 - .5| = .125
    actions, conf = always_hold(8)
    assert actions.tolist() == ["HOLD"] * 8 and conf.tolist() == [0.5] * 8
    assert correctness(actions, CHANGES).mean() == 0.375
    assert expected_calibration_error(conf, correctness(actions, CHANGES)) == pytest.approx(0.125)


def test_momentum_baseline_and_its_direction_form():
    # previous changes: unknown, +.02, -.01, -.005, +.003, +.01, 0, +.01
    prev = [math.nan, *CHANGES[:-1]]
    actions, conf = momentum(prev)
    assert actions.tolist() == ["HOLD", "BUY", "SELL", "SELL", "BUY", "BUY", "HOLD", "BUY"]
    assert conf.tolist() == [0.5] * 8
    # right: 2 SELL -.5 %, 4 BUY +1 %, 7 BUY +3 % -> 3 / 8
    assert correctness(actions, CHANGES).mean() == 0.375
    # P&L: 1 -10-2 = -12, 2 5-2 = 3, 3 -3-2 = -5, 4 10-2 = 8, 5 -2, 7 30-2 = 28 -> 20, 3 wins
    pnl = paper_pnl(actions, REFS, CLOSES, 0.001)
    assert pnl["total"] == pytest.approx(20.0) and (pnl["trades"], pnl["wins"]) == (6, 3)
    # An UP/DOWN model's momentum: HOLD (no information) becomes UP, the long side.
    assert as_direction(momentum(prev)).actions.tolist() == [
        "UP", "UP", "DOWN", "DOWN", "UP", "UP", "UP", "UP"]
    with pytest.raises(ValueError, match="finite numbers or NaN"):
        momentum([0.01, math.inf])


# ----------------------------------------------------------------------- accuracy, reward


def test_rolling_accuracy_is_a_trailing_mean():
    # correct 1 1 0 1 0 0 0 1, window 4:
    #   [3] 1 1 0 1 = .75   [4] 1 0 1 0 = .5   [5] 0 1 0 0 = .25
    #   [6] 1 0 0 0 = .25   [7] 0 0 0 1 = .25
    out = rolling_accuracy(CORRECT, 4)
    assert np.isnan(out[:3]).all()
    assert out[3:].tolist() == pytest.approx([0.75, 0.5, 0.25, 0.25, 0.25])
    assert rolling_accuracy(CORRECT, 1).tolist() == [1.0, 1, 0, 1, 0, 0, 0, 1]
    assert np.isnan(rolling_accuracy(CORRECT, 9)).all()  # not one full window yet


def test_rolling_accuracy_rejects_a_bad_window():
    with pytest.raises(ValueError, match="window"):
        rolling_accuracy(CORRECT, 0)


# ----------------------------------------------------------------------- calibration


def test_reliability_with_two_bins():
    # [0, .5): rows 5 (.4, no), 6 (.2, no), 7 (.3, yes): 3 rows, mean conf .3, accuracy 1/3
    # [.5, 1]: rows 0-4: confs .9 .8 .7 .6 .9 -> 3.9 / 5 = .78; right 1 1 0 1 0 -> .6
    (lo0, hi0, n0, c0, a0), (lo1, hi1, n1, c1, a1) = reliability(CONFIDENCES, CORRECT, bins=2)
    assert (lo0, hi0, n0, lo1, hi1, n1) == (0.0, 0.5, 3, 0.5, 1.0, 5)
    assert (c0, a0, c1, a1) == pytest.approx((0.3, 1 / 3, 0.78, 0.6))


def test_ece_with_two_and_three_bins():
    # 2 bins: 3/8 * |1/3 - .3| + 5/8 * |.6 - .78| = 3/8 * 1/30 + 5/8 * .18 = .0125 + .1125
    assert expected_calibration_error(CONFIDENCES, CORRECT, bins=2) == pytest.approx(0.125)
    # 3 bins [0, 1/3) [1/3, 2/3) [2/3, 1]:
    #   rows 6, 7 (.2 no, .3 yes): conf .25, acc .5 -> 2/8 * .25 = .0625
    #   rows 5, 3 (.4 no, .6 yes): conf .5,  acc .5 -> 0
    #   rows 0, 1, 2, 4 (.9 .8 .7 .9; yes yes no no): conf .825, acc .5 -> 4/8 * .325 = .1625
    # ECE .225
    assert expected_calibration_error(CONFIDENCES, CORRECT, bins=3) == pytest.approx(0.225)


def test_ece_skips_empty_bins_and_reliability_lists_them():
    # 5 bins: [0, .2) is empty (listed with count 0 and NaN, left out of the sum)
    #   [.2, .4): rows 6, 7: conf .25, acc .5 -> 2/8 * .25 = .0625
    #   [.4, .6): row 5 (.4, no): conf .4, acc 0 -> 1/8 * .4 = .05
    #   [.6, .8): rows 3, 2 (.6 yes, .7 no): conf .65, acc .5 -> 2/8 * .15 = .0375
    #   [.8, 1]: rows 0, 1, 4 (.9 yes, .8 yes, .9 no): conf 2.6/3, acc 2/3 -> 3/8 * .2 = .075
    # ECE .225; were the empty bin counted as |NaN| the sum would be NaN
    table = reliability(CONFIDENCES, CORRECT, bins=5)
    assert [count for _, _, count, _, _ in table] == [0, 2, 1, 2, 3]
    assert math.isnan(table[0][3]) and math.isnan(table[0][4])
    assert expected_calibration_error(CONFIDENCES, CORRECT, bins=5) == pytest.approx(0.225)


def test_bins_are_half_open_except_the_last():
    # .5 starts the second of 2 bins; 1.0 belongs to the last, closed bin; 0 to the first
    table = reliability([0.0, 0.5, 1.0], [True, True, False], bins=2)
    assert [count for _, _, count, _, _ in table] == [1, 2]
    # a confidence written as an edge is in the bin it starts: .57 * 100 is 56.99999999999999
    assert reliability([0.57], [True], bins=100)[57][2] == 1


def test_perfect_calibration_scores_zero():
    # conf .75 and right 3 times out of 4
    assert expected_calibration_error([0.75] * 4, [1, 1, 1, 0]) == 0.0


# ----------------------------------------------------------------------- paper P&L


def test_paper_pnl_of_the_hand_set_after_fees():
    # size 1000, fee .1 % per side: every trade pays 2 * .001 * 1000 = 2
    #   0 BUY +2 %: 20 - 2 = 18     1 SELL -1 %: 10 - 2 = 8     2 BUY -.5 %: -5 - 2 = -7
    #   3 HOLD: nothing             4 SELL +1 %: -10 - 2 = -12  5 BUY 0: -2
    #   6 HOLD: nothing             7 BUY +3 %: 30 - 2 = 28
    # 6 trades, total 33, 5.5 a trade, 3 wins (rows 0, 1, 7)
    pnl = paper_pnl(ACTIONS, REFS, CLOSES, fee_rate=0.001)
    assert pnl["total"] == pytest.approx(33.0)
    assert pnl["per_trade"] == pytest.approx(5.5)
    assert (pnl["trades"], pnl["wins"]) == (6, 3)


def test_paper_pnl_size_fee_and_up_down():
    # UP is a long, DOWN a short; size 500, fee .2 %: 2 * .002 * 500 = 2 a trade
    #   UP 100 -> 110: 500 * .1 - 2 = 48      DOWN 200 -> 190: 500 * .05 - 2 = 23
    pnl = paper_pnl(["UP", "DOWN"], [100.0, 200.0], [110.0, 190.0], 0.002, size_usd=500)
    assert pnl["total"] == pytest.approx(71.0)
    assert (pnl["trades"], pnl["wins"]) == (2, 2)


def test_a_fee_can_turn_a_right_call_into_a_losing_trade():
    # BUY +.1 %: 1000 * .001 = 1 gross, minus 2 * .001 * 1000 = 2 in fees -> -1, not a win
    pnl = paper_pnl(["BUY"], [100.0], [100.1], fee_rate=0.001)
    assert pnl["total"] == pytest.approx(-1.0)
    assert pnl["wins"] == 0


def test_paper_pnl_rejects_bad_prices_and_fees():
    with pytest.raises(ValueError, match="reference_prices"):
        paper_pnl(["BUY"], [0.0], [100.0], 0.001)
    with pytest.raises(ValueError, match="fee_rate"):
        paper_pnl(["BUY"], [100.0], [100.0], -0.001)
    with pytest.raises(ValueError, match="next_prices has 1 values for 2 rows"):
        paper_pnl(["BUY", "SELL"], [100.0, 100.0], [100.0], 0.001)


# ----------------------------------------------------------------------- all HOLD, empty


# ----------------------------------------------------------------------- baselines


# ----------------------------------------------------------------------- bootstrap, verdict


# ----------------------------------------------------------------------- compare


def synthetic(n: int, right_share: float | None, seed: int) -> pd.DataFrame:
    """n consecutive 1m candles moving +/-1 % at random; the model calls BUY/SELL and is right
    with probability right_share (None: a coin flip independent of the candle)."""
    rng = np.random.default_rng(seed)
    up = rng.random(n) < 0.5
    if right_share is None:
        says_up = rng.random(n) < 0.5
    else:
        says_up = np.where(rng.random(n) < right_share, up, ~up)
    return pd.DataFrame(
        {
            "model": "m",
            "symbol": "BTC/USDT",
            "timeframe": "1m",
            "created_ts": np.arange(n) * MINUTE,
            "target_ts": np.arange(n) * MINUTE,
            "reference_price": 100.0,
            "action": np.where(says_up, "BUY", "SELL"),
            "confidence": 0.7,
            "actual_close": np.where(up, 101.0, 99.0),
            "status": "resolved",
        }
    )


