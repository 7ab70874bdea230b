"""Tests for core.rewards: the seed's reward table, correctness, OHLCV forms and resolution.

Every expected number is worked out by hand in a comment. Changes come from real prices through
price_change, so binary rounding (100 -> 101 is 0.010000000000000009) is compared with approx.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from core.market.candles import Candle
from core.rewards import (
    ACTIONS,
    Resolution,
    absolute_ohlcv,
    action_correct,
    direction_reward,
    price_change,
    relative_ohlcv,
    resolve,
    resolve_prediction,
    reward,
    trade_reward,
)

# ----------------------------------------------------------------------- price_change


def test_price_change_is_exit_over_entry_minus_one():
    assert price_change(100.0, 101.0) == pytest.approx(0.01)
    assert price_change(200.0, 150.0) == pytest.approx(-0.25)  # 150 / 200 - 1
    assert price_change(100.0, 100.0) == 0.0


@pytest.mark.parametrize("entry", [0.0, -1.0, math.nan, math.inf])
def test_price_change_rejects_an_entry_that_is_not_a_positive_number(entry):
    with pytest.raises(ValueError, match="entry"):
        price_change(entry, 100.0)


# ----------------------------------------------------------------------- the reward table


@pytest.mark.parametrize(
    ("action", "entry", "exit", "confidence", "expected"),
    [
        # BUY, price up 1 %, conf 0.5: 10 * 0.01 * (0.5 + 0.5) = 0.1
        ("BUY", 100.0, 101.0, 0.5, 0.1),
        # SELL, price down 2 %, conf 0.9: 10 * 0.02 * 1.4 = 0.28
        ("SELL", 100.0, 98.0, 0.9, 0.28),
        # HOLD, +0.3 % is inside the 0.5 % band, conf 0.2: 0.01 * 0.7 = 0.007
        ("HOLD", 100.0, 100.3, 0.2, 0.007),
        # HOLD, -0.6 % is outside the band, conf 0.4: -0.01 * 0.9 = -0.009
        ("HOLD", 100.0, 99.4, 0.4, -0.009),
        # wrong BUY, price down 1 %, conf 0.5: -5 * 0.01 * 1.0 = -0.05
        ("BUY", 100.0, 99.0, 0.5, -0.05),
        # wrong SELL, price up 2 %, conf 1: -5 * 0.02 * 1.5 = -0.15
        ("SELL", 100.0, 102.0, 1.0, -0.15),
        # BUY, price up 3 %, conf 0: 10 * 0.03 * 0.5 = 0.15
        ("BUY", 100.0, 103.0, 0.0, 0.15),
        # HOLD on a flat candle, conf 1: 0.01 * 1.5 = 0.015
        ("HOLD", 100.0, 100.0, 1.0, 0.015),
    ],
)
def test_trade_reward_table(action, entry, exit, confidence, expected):
    assert trade_reward(action, price_change(entry, exit), confidence) == pytest.approx(expected)


@pytest.mark.parametrize("action", ["BUY", "SELL"])
def test_a_flat_candle_is_a_wrong_trade_worth_nothing(action):
    # -5 * |0| * (0.5 + 0.7) = 0, and the call is judged wrong.
    assert trade_reward(action, 0.0, 0.7) == 0.0
    assert action_correct(action, 0.0) is False


@pytest.mark.parametrize(
    ("exit", "confidence", "expected"),
    [
        # exactly +0.5 %: 100.5 / 100 - 1 = 0.0050000000000000044 in binary; still inside.
        (100.5, 0.5, 0.01),  # 0.01 * 1.0
        # exactly -0.5 %: inside, conf 0.0 -> 0.01 * 0.5 = 0.005
        (99.5, 0.0, 0.005),
        # +0.51 % and -0.51 %: outside, conf 0.5 -> -0.01
        (100.51, 0.5, -0.01),
        (99.49, 0.5, -0.01),
    ],
)
def test_hold_band_boundaries_at_half_a_percent(exit, confidence, expected):
    change = price_change(100.0, exit)
    assert trade_reward("HOLD", change, confidence) == pytest.approx(expected)
    assert action_correct("HOLD", change) is (expected > 0)


def test_exact_float_band_boundary():
    assert trade_reward("HOLD", 0.005, 0.5) == pytest.approx(0.01)
    assert trade_reward("HOLD", -0.005, 0.5) == pytest.approx(0.01)
    assert trade_reward("HOLD", 0.0050001, 0.5) == pytest.approx(-0.01)


@pytest.mark.parametrize(
    ("action", "change", "confidence", "expected"),
    [
        ("UP", 0.01, 0.5, 0.1),  # like BUY: 10 * 0.01 * 1.0
        ("DOWN", -0.01, 0.0, 0.05),  # like SELL: 10 * 0.01 * 0.5
        ("UP", -0.02, 0.5, -0.1),  # wrong: -5 * 0.02 * 1.0
        ("DOWN", 0.004, 1.0, -0.03),  # wrong: -5 * 0.004 * 1.5
        ("UP", 0.0, 0.9, 0.0),  # flat: wrong, worth nothing
    ],
)
def test_direction_reward_scores_up_like_buy_and_down_like_sell(
    action, change, confidence, expected
):
    assert direction_reward(action, change, confidence) == pytest.approx(expected)
    assert reward(action, change, confidence) == pytest.approx(expected)


def test_reward_dispatches_trade_actions_to_the_trade_table():
    assert reward("HOLD", 0.001, 0.5) == pytest.approx(0.01)
    assert reward("BUY", 0.01, 0.5) == pytest.approx(0.1)


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("change", [-0.03, -0.006, -0.005, -0.001, 0.0, 0.001, 0.005, 0.006, 0.03])
@pytest.mark.parametrize("confidence", [0.0, 0.5, 1.0])
def test_action_correct_iff_reward_is_positive(action, change, confidence):
    assert action_correct(action, change) is (reward(action, change, confidence) > 0)


@pytest.mark.parametrize(
    ("action", "change", "correct"),
    [
        ("BUY", 0.001, True),
        ("BUY", -0.001, False),
        ("SELL", -0.001, True),
        ("SELL", 0.001, False),
        ("HOLD", 0.004, True),
        ("HOLD", -0.006, False),
        ("UP", 1e-9, True),
        ("UP", 0.0, False),
        ("DOWN", -1e-9, True),
        ("DOWN", 0.0, False),
    ],
)
def test_action_correct_table(action, change, correct):
    assert action_correct(action, change) is correct


def test_action_correct_takes_a_wider_hold_band():
    assert action_correct("HOLD", 0.008) is False
    assert action_correct("HOLD", 0.008, hold_band=0.01) is True


# ----------------------------------------------------------------------- validation


@pytest.mark.parametrize("action", ["buy", "LONG", "", None])
def test_unknown_action_is_named_in_the_error(action):
    with pytest.raises(ValueError, match=repr(action)):
        trade_reward(action, 0.01, 0.5)
    with pytest.raises(ValueError, match=repr(action)):
        action_correct(action, 0.01)


def test_trade_and_direction_actions_do_not_mix():
    with pytest.raises(ValueError, match="'UP'"):
        trade_reward("UP", 0.01, 0.5)
    with pytest.raises(ValueError, match="'BUY'"):
        direction_reward("BUY", 0.01, 0.5)


@pytest.mark.parametrize("confidence", [-0.01, 1.01, math.nan, math.inf])
def test_confidence_outside_zero_to_one_is_rejected(confidence):
    with pytest.raises(ValueError, match=r"confidence must be within \[0, 1\]"):
        trade_reward("BUY", 0.01, confidence)
    with pytest.raises(ValueError, match="confidence"):
        direction_reward("UP", 0.01, confidence)


@pytest.mark.parametrize("change", [math.nan, math.inf, -math.inf])
def test_non_finite_change_is_rejected(change):
    with pytest.raises(ValueError, match="change must be a finite number"):
        trade_reward("HOLD", change, 0.5)
    with pytest.raises(ValueError, match="change"):
        action_correct("UP", change)


# ----------------------------------------------------------------------- OHLCV forms


def test_relative_ohlcv_by_hand():
    # Against a reference close of 200: 202 -> +1 %, 204 -> +2 %, 199 -> -0.5 %, 201 -> +0.5 %;
    # volume 3 -> log1p(3) = ln 4.
    rel = relative_ohlcv(200.0, (202.0, 204.0, 199.0, 201.0, 3.0))
    assert rel.shape == (5,)
    assert rel.dtype == np.float64
    np.testing.assert_allclose(rel, [0.01, 0.02, -0.005, 0.005, math.log(4.0)], rtol=1e-12)


def test_relative_ohlcv_takes_a_candle_and_round_trips():
    candle = Candle(0, 64_000.0, 64_250.5, 63_900.25, 64_100.0, 12.5)
    rel = relative_ohlcv(64_010.0, candle)
    back = absolute_ohlcv(64_010.0, rel)
    assert back == pytest.approx((64_000.0, 64_250.5, 63_900.25, 64_100.0, 12.5), rel=1e-12)
    assert absolute_ohlcv(100.0, np.zeros(5)) == (100.0, 100.0, 100.0, 100.0, 0.0)


def test_ohlcv_forms_reject_bad_input():
    with pytest.raises(ValueError, match="reference_close"):
        relative_ohlcv(0.0, (1.0, 1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="volume must be >= 0"):
        relative_ohlcv(1.0, (1.0, 1.0, 1.0, 1.0, -1.0))
    with pytest.raises(ValueError, match="5 values"):
        relative_ohlcv(1.0, (1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="close"):
        relative_ohlcv(1.0, (1.0, 1.0, 1.0, math.nan, 1.0))
    with pytest.raises(ValueError, match="5 values"):
        absolute_ohlcv(1.0, [0.0, 0.0])


# ----------------------------------------------------------------------- resolve


def test_resolve_a_buy_with_a_predicted_candle_by_hand():
    got = resolve(
        "BUY", 0.5, 100.0, (100.0, 102.0, 99.0, 101.0, 50.0), (100.0, 103.0, 99.5, 102.0, 40.0)
    )
    # change 102 / 100 - 1 = 0.02; price error |101 - 102| / 102; volume error |50 - 40| / 40;
    # BUY on +2 % is right: 10 * 0.02 * (0.5 + 0.5) = 0.2.
    assert isinstance(got, Resolution)
    assert got.actual_ohlcv == (100.0, 103.0, 99.5, 102.0, 40.0)
    assert (got.actual_open, got.actual_high, got.actual_low) == (100.0, 103.0, 99.5)
    assert (got.actual_close, got.actual_volume) == (102.0, 40.0)
    assert got.change == pytest.approx(0.02)
    assert got.price_error == pytest.approx(1.0 / 102.0)
    assert got.volume_error == pytest.approx(0.25)
    assert got.action_correct is True
    assert got.reward == pytest.approx(0.2)


def test_resolve_a_sell_without_a_predicted_candle_against_a_candle():
    got = resolve("SELL", 0.9, 50.0, None, Candle(1000, 50.0, 50.5, 48.0, 49.0, 7.0))
    # change 49 / 50 - 1 = -0.02: SELL right, 10 * 0.02 * 1.4 = 0.28; no errors without a candle.
    assert got.change == pytest.approx(-0.02)
    assert got.price_error is None
    assert got.volume_error is None
    assert got.action_correct is True
    assert got.reward == pytest.approx(0.28)


def test_resolve_a_wrong_down_and_a_hold():
    got = resolve("DOWN", 0.5, 10.0, None, (10.0, 10.2, 10.0, 10.1, 1.0))
    # +1 %: DOWN wrong, -5 * 0.01 * 1.0 = -0.05
    assert got.action_correct is False
    assert got.reward == pytest.approx(-0.05)
    got = resolve("HOLD", 0.0, 10.0, None, (10.0, 10.2, 10.0, 10.03, 1.0))
    # +0.3 %: HOLD right, 0.01 * 0.5 = 0.005
    assert got.action_correct is True
    assert got.reward == pytest.approx(0.005)


def test_resolve_prediction_reads_a_mapping_or_an_object():
    actual = (100.0, 103.0, 99.5, 102.0, 40.0)
    expected = resolve("BUY", 0.5, 100.0, (100.0, 102.0, 99.0, 101.0, 50.0), actual)
    mapping = {
        "action": "BUY",
        "confidence": 0.5,
        "reference_price": 100.0,
        "predicted_ohlcv": (100.0, 102.0, 99.0, 101.0, 50.0),
    }
    assert resolve_prediction(mapping, actual) == expected
    assert resolve_prediction(SimpleNamespace(**mapping), actual) == expected
    # Without predicted_ohlcv: no errors, same reward.
    bare = resolve_prediction({k: v for k, v in mapping.items() if k != "predicted_ohlcv"}, actual)
    assert (bare.price_error, bare.volume_error) == (None, None)
    assert bare.reward == expected.reward


def test_volume_error_on_a_candle_with_no_volume():
    candle = (1.0, 1.0, 1.0, 1.0, 0.0)
    zero = resolve("HOLD", 0.5, 1.0, (1, 1, 1, 1, 0.0), candle)
    assert zero.volume_error == 0.0
    assert zero.price_error == 0.0
    some = resolve("HOLD", 0.5, 1.0, (1, 1, 1, 1, 2.0), candle)
    assert some.volume_error is None  # undefined relative to 0, never inf


def test_resolve_rejects_a_bad_candle_or_prediction():
    good = (1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="close > 0"):
        resolve("BUY", 0.5, 100.0, None, (1.0, 1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="volume"):
        resolve("BUY", 0.5, 100.0, None, (1.0, 1.0, 1.0, 1.0, math.nan))
    with pytest.raises(ValueError, match="confidence"):
        resolve("BUY", 2.0, 100.0, None, good)
    with pytest.raises(ValueError, match="'SHORT'"):
        resolve("SHORT", 0.5, 100.0, None, good)
    with pytest.raises(ValueError, match="reference_price must be > 0"):
        resolve("BUY", 0.5, 0.0, None, good)
    with pytest.raises(ValueError, match="close"):
        resolve("BUY", 0.5, 100.0, (1.0, 1.0, 1.0, math.nan, 1.0), good)


def test_absolute_ohlcv_never_gives_a_negative_volume():
    from core.rewards import absolute_ohlcv

    # log1p(volume) = -0.04 would be expm1(-0.04) = -0.0392 units traded: floored at 0.
    assert absolute_ohlcv(100.0, [0.0, 0.01, -0.01, 0.0, -0.04])[4] == 0.0
    assert absolute_ohlcv(100.0, [0.0, 0.0, 0.0, 0.0, math.log(3.0)])[4] == pytest.approx(2.0)
