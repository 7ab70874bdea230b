"""Tests for core.evaluation: accuracy, reward, calibration, paper P&L, baselines and verdicts.

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

from core.evaluation import (
    BASELINES,
    always_hold,
    buy_and_hold,
    compare,
    correctness,
    directional_accuracy,
    expected_calibration_error,
    mean_reward,
    momentum,
    paired_bootstrap_ci,
    paper_pnl,
    previous_changes,
    random_like,
    reliability,
    rolling_accuracy,
    score,
    verdict,
)

ACTIONS = ["BUY", "SELL", "BUY", "HOLD", "SELL", "BUY", "HOLD", "BUY"]
CONFIDENCES = [0.9, 0.8, 0.7, 0.6, 0.9, 0.4, 0.2, 0.3]
CLOSES = [102.0, 99.0, 99.5, 100.3, 101.0, 100.0, 101.0, 103.0]
REFS = [100.0] * 8
CHANGES = [c / 100.0 - 1.0 for c in CLOSES]  # +.02 -.01 -.005 +.003 +.01 0 +.01 +.03
CORRECT = [True, True, False, True, False, False, False, True]
MINUTE = 60_000


def store_rows(
    actions=ACTIONS, confidences=CONFIDENCES, closes=CLOSES, model="cnn", symbol="BTC/USDT"
) -> pd.DataFrame:
    """The hand set as PredictionStore.recent lists it (newest first, as recent returns it)."""
    rows = [
        {
            "id": i + 1,
            "model": model,
            "symbol": symbol,
            "timeframe": "1m",
            "created_ts": i * MINUTE,
            "target_ts": i * MINUTE,
            "reference_price": 100.0,
            "action": a,
            "confidence": p,
            "actual_close": c,
            "status": "resolved",
        }
        for i, (a, p, c) in enumerate(zip(actions, confidences, closes))
    ]
    return pd.DataFrame(rows[::-1])


# ----------------------------------------------------------------------- accuracy, reward


def test_correctness_and_accuracy_follow_action_correct():
    assert correctness(ACTIONS, CHANGES).tolist() == CORRECT
    # rows 0, 1, 3, 7 right: 4 / 8
    assert directional_accuracy(ACTIONS, CHANGES) == 0.5


def test_accuracy_hold_band_is_a_parameter():
    # a 0.2 % band makes row 3's HOLD (+0.3 %) wrong too: 3 / 8
    assert directional_accuracy(ACTIONS, CHANGES, hold_band=0.002) == 0.375


def test_mean_reward_of_the_hand_set():
    # base reward x (0.5 + confidence):
    #   0: 10 * .02 = .2 x 1.4 = .28      1: 10 * .01 = .1 x 1.3 = .13
    #   2: -5 * .005 = -.025 x 1.2 = -.03 3: .01 x 1.1 = .011
    #   4: -5 * .01 = -.05 x 1.4 = -.07   5: -5 * 0 = 0
    #   6: -.01 x .7 = -.007              7: 10 * .03 = .3 x .8 = .24
    # sum .554, mean .06925
    assert mean_reward(ACTIONS, CONFIDENCES, CHANGES) == pytest.approx(0.06925)


def test_mean_reward_scores_up_down_like_buy_sell():
    # UP +2 % at conf .5: 10 * .02 * 1 = .2; DOWN +1 % at conf .5: -5 * .01 * 1 = -.05
    # mean .075
    assert mean_reward(["UP", "DOWN"], [0.5, 0.5], [0.02, 0.01]) == pytest.approx(0.075)
    assert directional_accuracy(["UP", "DOWN"], [0.02, 0.01]) == 0.5


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


def test_all_hold():
    # right where |change| <= .5 %: rows 2 (-.5 %, on the edge), 3 (+.3 %), 5 (0): 3 / 8
    holds = ["HOLD"] * 8
    assert directional_accuracy(holds, CHANGES) == 0.375
    pnl = paper_pnl(holds, REFS, CLOSES, 0.001)
    assert (pnl["total"], pnl["trades"], pnl["wins"]) == (0.0, 0, 0)
    assert math.isnan(pnl["per_trade"])  # no trade, no mean: not a made-up 0
    # the random baseline of an all-HOLD model can only HOLD
    assert set(random_like(holds, 0).actions) == {"HOLD"}


@pytest.mark.parametrize(
    "call",
    [
        lambda: directional_accuracy([], []),
        lambda: mean_reward([], [], []),
        lambda: reliability([], []),
        lambda: expected_calibration_error([], []),
        lambda: paper_pnl([], [], [], 0.001),
        lambda: rolling_accuracy([], 3),
        lambda: always_hold(0),
        lambda: momentum([]),
        lambda: random_like([], 0),
    ],
)
def test_empty_input_is_a_clear_value_error(call):
    with pytest.raises(ValueError, match="no rows to evaluate"):
        call()


def test_bad_values_are_value_errors():
    with pytest.raises(ValueError, match="actions must be among"):
        directional_accuracy(["LONG"], [0.01])
    with pytest.raises(ValueError, match="confidences"):
        mean_reward(["BUY"], [1.5], [0.01])
    with pytest.raises(ValueError, match="changes must be finite"):
        directional_accuracy(["BUY"], [math.nan])
    with pytest.raises(ValueError, match="correct must be booleans"):
        expected_calibration_error([0.5], [2])


# ----------------------------------------------------------------------- baselines


def test_always_hold_baseline():
    # accuracy 3 / 8 = .375 (see test_all_hold); HOLD pays .01 right and -.01 wrong at
    # confidence .5 (x1): (3 * .01 - 5 * .01) / 8 = -.0025; ECE |.375 - .5| = .125
    actions, conf = always_hold(8)
    assert actions.tolist() == ["HOLD"] * 8 and conf.tolist() == [0.5] * 8
    assert mean_reward(actions, conf, CHANGES) == pytest.approx(-0.0025)
    assert expected_calibration_error(conf, correctness(actions, CHANGES)) == pytest.approx(0.125)


def test_buy_and_hold_baseline():
    # BUY is right on every rise: rows 0, 3, 4, 6, 7 -> 5 / 8 = .625
    # P&L: gross 1000 * (.02 - .01 - .005 + .003 + .01 + 0 + .01 + .03) = 58, fees 8 * 2 = 16
    # -> 42; net per row 18 -12 -7 1 8 -2 8 28: 5 wins
    actions, conf = buy_and_hold(8)
    assert directional_accuracy(actions, CHANGES) == 0.625
    pnl = paper_pnl(actions, REFS, CLOSES, 0.001)
    assert pnl["total"] == pytest.approx(42.0)
    assert (pnl["trades"], pnl["wins"]) == (8, 5)


def test_momentum_baseline():
    # previous changes: none, +.02, -.01, -.005, +.003, +.01, 0, +.01
    # -> HOLD BUY SELL SELL BUY BUY HOLD BUY
    # right: 0 HOLD +2 % no, 1 BUY -1 % no, 2 SELL -.5 % yes, 3 SELL +.3 % no, 4 BUY +1 % yes,
    #        5 BUY 0 no, 6 HOLD +1 % no, 7 BUY +3 % yes -> 3 / 8
    # P&L: 1 -10-2 = -12, 2 5-2 = 3, 3 -3-2 = -5, 4 10-2 = 8, 5 -2, 7 30-2 = 28 -> 20, 3 wins
    prev = previous_changes(
        [i * MINUTE for i in range(8)], [i * MINUTE for i in range(8)], CHANGES, MINUTE
    )
    assert math.isnan(prev[0])
    assert prev[1:].tolist() == pytest.approx(CHANGES[:-1])
    actions, conf = momentum(prev)
    assert actions.tolist() == ["HOLD", "BUY", "SELL", "SELL", "BUY", "BUY", "HOLD", "BUY"]
    assert conf.tolist() == [0.5] * 8
    assert directional_accuracy(actions, CHANGES) == 0.375
    pnl = paper_pnl(actions, REFS, CLOSES, 0.001)
    assert pnl["total"] == pytest.approx(20.0)
    assert (pnl["trades"], pnl["wins"]) == (6, 3)


def test_previous_changes_never_look_ahead_or_across_a_gap():
    # row 1 was made at 30 s, before candle 0 closed at 60 s: unknown.
    # row 2 predicts 180 000, whose previous candle (120 000) has no row: unknown.
    prev = previous_changes(
        [0, MINUTE, 3 * MINUTE], [0, MINUTE // 2, 3 * MINUTE], [0.01, 0.02, 0.03], MINUTE
    )
    assert np.isnan(prev).all()


def test_random_like_keeps_the_model_action_frequencies_and_its_seed():
    model = ["BUY"] * 700 + ["SELL"] * 300
    first = random_like(model, np.random.default_rng(7), confidence=0.8)
    again = random_like(model, 7, confidence=0.8)
    assert first.actions.tolist() == again.actions.tolist()  # same seed, same draws
    assert set(first.actions) == {"BUY", "SELL"}
    # 700 expected BUYs, sd sqrt(1000 * .7 * .3) = 14.5: 60 is over 4 sd
    assert abs((first.actions == "BUY").sum() - 700) < 60
    assert first.confidences.tolist() == [0.8] * 1000


# ----------------------------------------------------------------------- bootstrap, verdict


def test_bootstrap_ci_matches_the_normal_approximation_on_many_rows():
    # d = +1 on 120 rows, -1 on 40, 0 on 240 (n 400): mean .2, E[d^2] = .4, var .36, sd .6,
    # se .6 / 20 = .03, 95 % CI ~ .2 -/+ 1.96 * .03 = [.141, .259]
    model = [1] * 120 + [0] * 40 + [1] * 120 + [0] * 120
    base = [0] * 120 + [1] * 40 + [1] * 120 + [0] * 120
    diff, low, high = paired_bootstrap_ci(model, base, rng=0, resamples=4000)
    assert diff == pytest.approx(0.2)
    assert low == pytest.approx(0.141, abs=0.01)
    assert high == pytest.approx(0.259, abs=0.01)


def test_bootstrap_ci_of_identical_calls_is_zero_width():
    assert paired_bootstrap_ci(CORRECT, CORRECT, rng=0) == (0.0, 0.0, 0.0)


def test_verdict_reads_the_ci():
    assert verdict(0.01, 0.2, "momentum") == "better than momentum"
    assert verdict(-0.2, -0.01, "momentum") == "worse than momentum"
    assert verdict(-0.1, 0.1, "momentum") == "not distinguishable from momentum"
    assert verdict(0.0, 0.1, "momentum") == "not distinguishable from momentum"


# ----------------------------------------------------------------------- compare


def test_compare_on_the_hand_set():
    rows = pd.concat(
        [
            store_rows(),
            # a pending prediction does not count
            pd.DataFrame(
                [
                    {
                        "id": 99,
                        "model": "cnn",
                        "symbol": "BTC/USDT",
                        "timeframe": "1m",
                        "created_ts": 8 * MINUTE,
                        "target_ts": 8 * MINUTE,
                        "reference_price": 103.0,
                        "action": "BUY",
                        "confidence": 0.5,
                        "actual_close": None,
                        "status": "pending",
                    }
                ]
            ),
        ]
    )
    out = compare(rows, fee_rate=0.001, seed=1, bins=2)
    assert len(out) == 1
    r = out.iloc[0]
    assert (r["model"], r["symbol"], r["timeframe"], r["n"]) == ("cnn", "BTC/USDT", "1m", 8)
    # the model: see the tests above
    assert (r["accuracy"], r["mean_reward"], r["ece"]) == pytest.approx((0.5, 0.06925, 0.125))
    assert (r["pnl"], r["pnl_per_trade"], r["trades"], r["wins"]) == pytest.approx(
        (33.0, 5.5, 6, 3)
    )
    # always_hold: .375, -.0025, ECE .125, no trades
    assert r["always_hold_accuracy"] == 0.375
    assert r["always_hold_mean_reward"] == pytest.approx(-0.0025)
    assert r["always_hold_pnl"] == 0.0 and math.isnan(r["always_hold_pnl_per_trade"])
    # buy_and_hold: .625; rewards at x1: .2 -.05 -.025 .03 .1 0 .1 .3 = .655 -> .081875;
    # ECE |.625 - .5| = .125; P&L 42
    assert (r["buy_and_hold_accuracy"], r["buy_and_hold_mean_reward"]) == pytest.approx(
        (0.625, 0.081875)
    )
    assert (r["buy_and_hold_ece"], r["buy_and_hold_pnl"]) == pytest.approx((0.125, 42.0))
    # momentum (HOLD BUY SELL SELL BUY BUY HOLD BUY): .375; rewards at x1:
    # -.01 -.05 +.05 -.015 +.1 0 -.01 +.3 = .365 -> .045625; P&L 20
    assert (r["momentum_accuracy"], r["momentum_mean_reward"]) == pytest.approx((0.375, 0.045625))
    assert r["momentum_pnl"] == pytest.approx(20.0)
    for name in BASELINES:
        assert f"{name}_ece" in out.columns and f"{name}_trades" in out.columns
    # with seed 1 the random baseline also scores .625 (its draws are fixed by the seed); the
    # tie goes to the first in BASELINES, buy_and_hold. Model - best = .5 - .625 = -.125;
    # per-row d = model - buy_and_hold: 0 1 0 0 -1 0 -1 0, which the CI must straddle
    assert r["random_like_accuracy"] == 0.625
    assert r["best_baseline"] == "buy_and_hold"
    assert r["accuracy_diff"] == pytest.approx(-0.125)
    assert r["ci_low"] < 0 < r["ci_high"]
    assert r["verdict"] == "too few rows (8 < 30)"
    # asked to call it anyway, the CI straddles 0
    anyway = compare(rows, fee_rate=0.001, seed=1, bins=2, min_rows=1).iloc[0]
    assert anyway["verdict"] == "not distinguishable from buy_and_hold"


def test_compare_random_baseline_is_seeded_and_uses_the_model_mean_confidence():
    # the random baseline draws from BUY 4/8, SELL 2/8, HOLD 2/8 at the model's mean
    # confidence (.9 + .8 + .7 + .6 + .9 + .4 + .2 + .3) / 8 = 4.8 / 8 = .6, so with one
    # confidence in every row its ECE is |accuracy - .6|
    a = compare(store_rows(), fee_rate=0.001, seed=3)
    pd.testing.assert_frame_equal(a, compare(store_rows(), fee_rate=0.001, seed=3))
    r = a.iloc[0]
    assert r["random_like_ece"] == pytest.approx(abs(r["random_like_accuracy"] - 0.6))


def test_compare_groups_by_model_symbol_and_timeframe():
    rows = pd.concat([store_rows(), store_rows(model="dqn"), store_rows(symbol="ETH/USDT")])
    out = compare(rows, fee_rate=0.001, seed=0)
    assert out[["model", "symbol"]].values.tolist() == [
        ["cnn", "BTC/USDT"], ["cnn", "ETH/USDT"], ["dqn", "BTC/USDT"],
    ]  # fmt: skip
    assert out["accuracy"].tolist() == [0.5, 0.5, 0.5]
    # a group's numbers do not depend on the other groups around it
    alone = compare(store_rows(model="dqn"), fee_rate=0.001, seed=0)
    assert alone.iloc[0]["random_like_accuracy"] == out.iloc[2]["random_like_accuracy"]


def test_compare_rejects_empty_and_unresolved_input():
    with pytest.raises(ValueError, match="lacks the column"):
        compare(pd.DataFrame(), fee_rate=0.001, seed=0)
    with pytest.raises(ValueError, match="no resolved predictions"):
        compare(store_rows().iloc[0:0], fee_rate=0.001, seed=0)
    pending = store_rows().assign(status="pending")
    with pytest.raises(ValueError, match="no resolved predictions"):
        compare(pending, fee_rate=0.001, seed=0)


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


def test_a_clearly_better_model_is_called_better():
    # right 85 % of the time on random +/-1 % candles; HOLD is never right (every move is
    # outside the band) and BUY, momentum and random are ~50 %: the difference is ~.35 with a
    # standard error of ~.035, so the CI is far above 0
    r = compare(synthetic(400, 0.85, seed=11), fee_rate=0.001, seed=0).iloc[0]
    assert r["always_hold_accuracy"] == 0.0
    assert r["ci_low"] > 0.2
    assert r["verdict"] == f"better than {r['best_baseline']}"


def test_a_coin_flip_model_is_not_distinguishable():
    r = compare(synthetic(400, None, seed=12), fee_rate=0.001, seed=0).iloc[0]
    assert abs(r["accuracy"] - 0.5) < 0.1
    assert r["ci_low"] < 0 < r["ci_high"]
    assert r["verdict"] == f"not distinguishable from {r['best_baseline']}"


def test_an_always_wrong_model_is_called_worse():
    r = compare(synthetic(100, 0.0, seed=13), fee_rate=0.001, seed=0).iloc[0]
    assert r["accuracy"] == 0.0
    assert r["ci_high"] < 0
    assert r["verdict"] == f"worse than {r['best_baseline']}"


def test_score_bundles_the_metrics():
    s = score(ACTIONS, CONFIDENCES, REFS, CLOSES, fee_rate=0.001, bins=3)
    assert s == pytest.approx(
        {"accuracy": 0.5, "mean_reward": 0.06925, "ece": 0.225, "pnl": 33.0,
         "pnl_per_trade": 5.5, "trades": 6, "wins": 3}
    )  # fmt: skip


def test_a_direction_model_faces_the_baselines_in_up_down_terms():
    # The order-book model on the hand set: changes +.02 -.01 -.005 +.003 +.01 0 +.01 +.03
    cob = ["UP", "DOWN", "UP", "UP", "DOWN", "UP", "DOWN", "UP"]
    r = compare(store_rows(actions=cob, model="cob"), fee_rate=0.001, seed=1).iloc[0]
    # right: rows 0, 1, 3, 7 (UP iff change > 0, DOWN iff < 0; row 5 is flat: wrong) -> .5
    assert r["accuracy"] == 0.5
    # always HOLD is not something a direction model can say: not applicable, never the best
    assert math.isnan(r["always_hold_accuracy"]) and math.isnan(r["always_hold_pnl"])
    # buy-and-hold says UP: right on rows 0, 3, 4, 6, 7 -> .625
    assert r["buy_and_hold_accuracy"] == 0.625
    # momentum UP (unknown) UP DOWN DOWN UP UP UP (flat -> UP) UP: right 0, 2, 4, 6, 7 -> .625
    assert r["momentum_accuracy"] == 0.625
    # a tie goes to the first listed applicable baseline
    assert r["best_baseline"] == "buy_and_hold"
    assert r["accuracy_diff"] == pytest.approx(0.5 - 0.625)
    # the random baseline draws from the model's own actions: UP and DOWN only
    assert 0.0 <= r["random_like_accuracy"] <= 1.0
