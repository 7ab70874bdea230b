"""Tests for core.features. Expected values are worked out by hand in comments."""

import math

import numpy as np
import pytest
import torch

from core.features import (
    Pivot,
    Regime,
    atr,
    bollinger,
    log_returns,
    macd,
    market_regime,
    multi_timeframe_windows,
    normalised_window,
    returns,
    rsi,
    swing_points,
    volume_ratio,
    williams_pivots,
    window_mask,
    window_tensor,
)

NAN = np.nan


def assert_series(actual, expected):
    np.testing.assert_allclose(actual, np.array(expected, dtype=float), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------- returns


def test_returns_period_1_and_2():
    close = [100.0, 110.0, 99.0, 99.0]
    # 110/100-1 = 0.1; 99/110-1 = -0.1; 99/99-1 = 0
    assert_series(returns(close), [NAN, 0.1, -0.1, 0.0])
    # 99/100-1 = -0.01; 99/110-1 = -0.1
    assert_series(returns(close, period=2), [NAN, NAN, -0.01, -0.1])


def test_log_returns():
    close = [100.0, 110.0, 99.0, 99.0]
    # ln(1.1), ln(99/110) = ln(0.9), ln(1) = 0
    assert_series(log_returns(close), [NAN, math.log(1.1), math.log(0.9), 0.0])
    assert_series(log_returns(close, period=3), [NAN, NAN, NAN, math.log(0.99)])


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_returns_rejects_bad_period(bad):
    with pytest.raises(ValueError, match="period"):
        returns([1.0, 2.0], period=bad)


def test_rejects_2d_series():
    with pytest.raises(ValueError, match="1-D"):
        returns(np.ones((3, 2)))


# --------------------------------------------------------------------------- RSI


def test_rsi_wilder_period_3():
    close = [10.0, 11.0, 10.5, 11.5, 12.0, 11.0]
    # diffs:  +1, -0.5, +1, +0.5, -1
    # gains:   1,  0,    1,  0.5,  0     losses: 0, 0.5, 0, 0, 1
    # idx 3 seed: avg_gain = (1+0+1)/3 = 2/3, avg_loss = 0.5/3 = 1/6
    #   RSI = 100 * (2/3) / (2/3 + 1/6) = 100 * (4/6)/(5/6) = 80
    # idx 4: avg_gain = (2/3*2 + 0.5)/3 = 11/18, avg_loss = (1/6*2 + 0)/3 = 2/18
    #   RSI = 100 * 11/13
    # idx 5: avg_gain = (11/18*2 + 0)/3 = 11/27, avg_loss = (2/18*2 + 1)/3 = 11/27 -> 50
    assert_series(rsi(close, period=3), [NAN, NAN, NAN, 80.0, 1100 / 13, 50.0])


def test_rsi_extremes():
    # only gains -> avg_loss = 0 -> 100; only losses -> 0; flat -> neutral 50
    assert_series(rsi([1, 2, 3, 4, 5], period=2), [NAN, NAN, 100, 100, 100])
    assert_series(rsi([5, 4, 3, 2, 1], period=2), [NAN, NAN, 0, 0, 0])
    assert_series(rsi([3, 3, 3, 3], period=2), [NAN, NAN, 50, 50])


def test_rsi_too_short_is_all_nan():
    assert np.isnan(rsi([1.0, 2.0, 3.0], period=3)).all()
    assert rsi([1.0], period=3).shape == (1,)


# -------------------------------------------------------------------------- MACD


def test_macd_small_spans():
    close = [3.0, 6.0, 8.0, 4.0, 8.0]
    # fast span 2 -> alpha 2/3: 3, 3+2/3*3=5, 5+2/3*3=7, 7+2/3*(-3)=5, 5+2/3*3=7
    #   (idx 0 masked: min_periods=2)
    # slow span 3 -> alpha 1/2: 3, 4.5, (4.5+8)/2=6.25, (6.25+4)/2=5.125, (5.125+8)/2=6.5625
    #   (idx 0,1 masked: min_periods=3)
    # line: idx2 7-6.25=0.75, idx3 5-5.125=-0.125, idx4 7-6.5625=0.4375
    # signal span 2 (alpha 2/3) over the line, seeded at idx2 = 0.75 (masked, min_periods=2):
    #   idx3 = 0.75 + 2/3*(-0.125-0.75) = 1/6
    #   idx4 = 1/6 + 2/3*(7/16 - 1/6) = 1/6 + 13/72 = 25/72
    # hist: idx3 = -1/8 - 1/6 = -7/24; idx4 = 7/16 - 25/72 = 13/144
    line, sig, hist = macd(close, fast=2, slow=3, signal=2)
    assert_series(line, [NAN, NAN, 0.75, -0.125, 0.4375])
    assert_series(sig, [NAN, NAN, NAN, 1 / 6, 25 / 72])
    assert_series(hist, [NAN, NAN, NAN, -7 / 24, 13 / 144])


def test_macd_rejects_fast_not_below_slow():
    with pytest.raises(ValueError, match="fast"):
        macd([1.0] * 10, fast=3, slow=3, signal=2)


# --------------------------------------------------------------------- Bollinger


def test_bollinger_period_3_population_std():
    close = [1.0, 1.0, 4.0, 4.0, 4.0]
    # idx2 window [1,1,4]: mean 2, var = (1+1+4)/3 = 2 -> std sqrt2 (ddof=1 would give sqrt3)
    # idx3 window [1,4,4]: mean 3, var = (4+1+1)/3 = 2 -> std sqrt2
    # idx4 window [4,4,4]: mean 4, std 0
    s2 = math.sqrt(2)
    mid, up, lo = bollinger(close, period=3, k=2.0)
    assert_series(mid, [NAN, NAN, 2, 3, 4])
    assert_series(up, [NAN, NAN, 2 + 2 * s2, 3 + 2 * s2, 4])
    assert_series(lo, [NAN, NAN, 2 - 2 * s2, 3 - 2 * s2, 4])


# --------------------------------------------------------------------------- ATR


def test_atr_wilder_period_2():
    high = [10.0, 11.0, 14.0, 11.0]
    low = [8.0, 9.0, 12.0, 8.0]
    close = [9.0, 10.0, 13.0, 9.0]
    # TR0 = 10-8 = 2 (no previous close)
    # TR1 = max(11-9=2, |11-9|=2, |9-9|=0) = 2
    # TR2 = max(14-12=2, |14-10|=4, |12-10|=2) = 4   (gap up)
    # TR3 = max(11-8=3, |11-13|=2, |8-13|=5) = 5     (gap down)
    # ATR1 = (2+2)/2 = 2; ATR2 = (2*1 + 4)/2 = 3; ATR3 = (3*1 + 5)/2 = 4
    assert_series(atr(high, low, close, period=2), [NAN, 2, 3, 4])


def test_atr_length_mismatch():
    with pytest.raises(ValueError, match="lengths differ"):
        atr([1.0, 2.0], [1.0], [1.0, 2.0], period=1)


# ------------------------------------------------------------------ volume ratio


def test_volume_ratio_period_2_excludes_current_bar():
    volume = [10.0, 30.0, 40.0, 0.0, 0.0, 5.0]
    # idx2: 40 / mean(10,30)=20 -> 2   (including bar t would give 40/35)
    # idx3: 0 / mean(30,40) -> 0; idx4: 0 / mean(40,0)=20 -> 0
    # idx5: 5 / mean(0,0)=0 -> undefined -> NaN
    assert_series(volume_ratio(volume, period=2), [NAN, NAN, 2, 0, 0, NAN])


# ---------------------------------------------------------------- model windows


def _candles(closes, volumes):
    # open = close - 1, high = close + 1, low = close - 2
    c = np.asarray(closes, dtype=float)
    ts = np.arange(len(c)) * 60_000.0
    return np.column_stack([ts, c - 1, c + 1, c - 2, c, np.asarray(volumes, dtype=float)])


def test_normalised_window_pads_left_and_scales():
    vols = np.expm1([1.0, 2.0, 3.0])  # log1p(vol) = 1, 2, 3
    w = normalised_window(_candles([10.0, 20.0, 40.0], vols), length=4)
    assert w.shape == (5, 4) and w.dtype == np.float32
    assert (w[:, 0] == 0).all()  # one padding column
    # last close = 40: close channel ln(10/40), ln(20/40), ln(40/40) = 0
    np.testing.assert_allclose(w[3, 1:], [math.log(0.25), math.log(0.5), 0.0], atol=1e-6)
    # open channel of the last bar: ln(39/40); high ln(41/40); low ln(38/40)
    np.testing.assert_allclose(
        w[:3, 3], [math.log(39 / 40), math.log(41 / 40), math.log(0.95)], atol=1e-6
    )
    # volume: [1,2,3] mean 2, population std sqrt(2/3) -> z = [-1, 0, 1] / sqrt(2/3)
    z = 1 / math.sqrt(2 / 3)
    np.testing.assert_allclose(w[4, 1:], [-z, 0.0, z], atol=1e-6)


def test_normalised_window_uses_last_rows_and_flat_volume():
    w = normalised_window(_candles([5.0, 10.0, 20.0, 40.0], [7, 7, 7, 7]), length=2)
    # only closes 20, 40 kept: ln(20/40), 0; constant volume -> std 0 -> channel is 0
    np.testing.assert_allclose(w[3], [math.log(0.5), 0.0], atol=1e-6)
    assert (w[4] == 0).all()


def test_window_mask():
    assert window_mask(3, 4).tolist() == [False, True, True, True]
    assert window_mask(10, 3).tolist() == [True, True, True]
    assert window_mask(0, 2).tolist() == [False, False]


@pytest.mark.parametrize(
    "candles, match",
    [
        (np.ones((3, 5)), "shape"),
        (np.ones(6), "shape"),
        (np.empty((0, 6)), "empty"),
        (_candles([1.0, NAN], [1, 1]), "finite"),
        (_candles([1.0, 2.0], [1, 1]), "> 0"),  # low of first bar = 1 - 2 = -1
        (_candles([10.0, 20.0], [1, -1]), "volume"),
    ],
)
def test_normalised_window_errors(candles, match):
    with pytest.raises(ValueError, match=match):
        normalised_window(candles, length=4)


def test_window_tensor_and_multi_timeframe():
    c = _candles([10.0, 20.0, 40.0], [1, 2, 3])
    t = window_tensor(c, 3)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (5, 3)
    assert t[3, -1].item() == 0.0 and t[3, 0].item() == pytest.approx(math.log(0.25))
    out = multi_timeframe_windows({"1m": c, "1h": c[:2]}, 3)
    assert set(out) == {"1m", "1h"} and all(v.shape == (5, 3) for v in out.values())
    # 1h has 2 rows -> one padding column; its last close is 20 -> ln(10/20)
    assert out["1h"][3].tolist() == pytest.approx([0.0, math.log(0.5), 0.0])


# ------------------------------------------------------------------------ pivots

# Zig-zag, 17 bars; low = high - 1 so lows turn where highs do.
#   idx:  0  1  2  3  4  5   6  7  8  9 10 11 12 13 14 15 16
HIGH = [5, 6, 8, 7, 6, 7, 10, 7, 4, 8, 9, 8, 7, 8, 9, 6, 5]
LOW = [h - 1 for h in HIGH]
# strength 2 swing highs (strictly above 2 bars each side):
#   2: 8 > 5,6 | 7,6    6: 10 > 6,7 | 7,4    10: 9 > 4,8 | 8,7    14: 9 > 7,8 | 6,5
#   13 is not: 8 ties with 8 at idx 11.  5 is not: 7 ties with 7 at idx 3.
# strength 2 swing lows (low = high-1):
#   4: 5 < 7,6 | 6,9    8: 3 < 9,6 | 7,8    12: 6 < 8,7 | 7,8
LEVEL1 = [
    Pivot(2, 8, "high"),
    Pivot(4, 5, "low"),
    Pivot(6, 10, "high"),
    Pivot(8, 3, "low"),
    Pivot(10, 9, "high"),
    Pivot(12, 6, "low"),
    Pivot(14, 9, "high"),
]
# level 2, strength 1 among level-1 highs [8, 10, 9, 9]: only 10 (idx 6) beats both neighbours
#   among level-1 lows [5, 3, 6]: only 3 (idx 8) is below both neighbours
LEVEL2 = [Pivot(6, 10, "high", 2), Pivot(8, 3, "low", 2)]


def test_swing_points_zigzag():
    assert swing_points(HIGH, LOW, strength=2) == LEVEL1


def test_swing_points_ties_are_not_pivots():
    # 5 at idx 2 ties with idx 3 -> neither is a strict swing high
    assert [p for p in swing_points([1, 2, 5, 5, 2, 1], [0] * 6, 1) if p.kind == "high"] == []


def test_williams_pivots_levels_and_early_stop():
    levels = williams_pivots(HIGH, LOW, levels=3, strength=2)
    # level 3 would need >= 3 highs or lows from level 2 (it has 1 each) -> stops at 2
    assert levels == [LEVEL1, LEVEL2]
    assert williams_pivots(HIGH, LOW, levels=1) == [LEVEL1]
    assert williams_pivots([1, 2, 3], [0, 1, 2]) == []  # too short for any pivot


def test_pivot_is_frozen():
    with pytest.raises(AttributeError):
        LEVEL1[0].price = 1.0  # type: ignore[misc]


def test_swing_points_length_mismatch():
    with pytest.raises(ValueError, match="lengths differ"):
        swing_points([1, 2, 3], [1, 2])


# ------------------------------------------------------------------------ regime


def test_regime_trending():
    close = 100 * 1.01 ** np.arange(5)
    # constant log return ln(1.01) -> std 0; monotone -> net move == path -> ER 1
    r = market_regime(close, window=4)
    assert r.label == "trending"
    assert r.volatility == pytest.approx(0.0, abs=1e-12)
    assert r.efficiency == pytest.approx(1.0)


def test_regime_trending_with_pullbacks():
    close = [100.0, 102.0, 101.0, 103.0, 102.0]
    # net |102-100| = 2; path 2+1+2+1 = 6 -> ER 1/3 >= 0.3
    # log returns ~ +0.0198, -0.0099, +0.0196, -0.0098: std ~0.017 < 0.02
    r = market_regime(close, window=4)
    assert r.label == "trending" and r.efficiency == pytest.approx(1 / 3)
    assert 0.015 < r.volatility < 0.02


def test_regime_ranging():
    close = [100.0, 101.0, 100.0, 101.0, 100.0]
    # returns +a,-a,+a,-a with a = ln(1.01): mean 0, sample var 4a^2/3 -> std a*sqrt(4/3) ~ 0.0115
    # net 0 -> ER 0 < 0.3 -> ranging
    r = market_regime(close, window=4)
    assert r == Regime("ranging", pytest.approx(math.log(1.01) * math.sqrt(4 / 3)), 0.0)


def test_regime_volatile_overrides_trend():
    close = [100.0, 110.0, 100.0, 110.0, 100.0]
    # a = ln(1.1): std a*sqrt(4/3) ~ 0.110 > 0.02 -> volatile
    r = market_regime(close, window=4)
    assert r.label == "volatile"
    assert r.volatility == pytest.approx(math.log(1.1) * math.sqrt(4 / 3))
    # a trend is still "volatile" when bar-to-bar noise is large:
    # ER = |140-100| / (30+10+30+10) = 0.5 >= 0.3, but returns swing between
    # ln(1.3) ~ +0.26 and ln(120/130) ~ -0.08 -> std far above 0.02
    r = market_regime([100.0, 130.0, 120.0, 150.0, 140.0], window=4)
    assert r.label == "volatile" and r.efficiency == pytest.approx(0.5)


def test_regime_uses_only_last_window():
    # an old crash before the window is ignored: last 5 closes are the geometric trend
    close = np.concatenate([[1000.0, 1.0], 100 * 1.01 ** np.arange(5)])
    assert market_regime(close, window=4).label == "trending"


@pytest.mark.parametrize(
    "close, window, match",
    [
        ([1.0, 2.0, 3.0, 4.0], 4, "window \\+ 1 = 5"),
        ([1.0, 2.0, 0.0, 4.0, 5.0], 4, "> 0"),
        ([1.0, 2.0, 3.0], 1, "window"),
    ],
)
def test_regime_errors(close, window, match):
    with pytest.raises(ValueError, match=match):
        market_regime(close, window=window)
