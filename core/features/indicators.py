"""Classic indicators over one price or volume series: returns, RSI, MACD, Bollinger bands,
ATR and a volume ratio.

Every series is a 1-D float array, oldest first, one value per bar; outputs have the input's
length, NaN where history is still too short. They use pandas' ``rolling``/``ewm`` (or plain
numpy) rather than TA-Lib, which needs a C library build that is painful on CI and Windows,
or the ``ta`` package, which is unmaintained. pandas is already a runtime dependency.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.features.checks import FloatArray, check_period, series


def _ratio(close: npt.ArrayLike, period: int) -> FloatArray:
    c = series(close, "close")
    check_period(period)
    out = np.full(c.shape, np.nan)
    out[period:] = c[period:] / c[:-period]
    return out


def returns(close: npt.ArrayLike, period: int = 1) -> FloatArray:
    """Simple returns ``close[t] / close[t-period] - 1``. [N] -> [N], first ``period`` NaN."""
    return _ratio(close, period) - 1.0


def log_returns(close: npt.ArrayLike, period: int = 1) -> FloatArray:
    """Log returns ``ln(close[t] / close[t-period])``. [N] -> [N], first ``period`` NaN."""
    return np.log(_ratio(close, period))


def _wilder(x: FloatArray, period: int) -> FloatArray:
    """Wilder smoothing: seed = mean of the first ``period`` values, then
    ``y[t] = y[t-1] + (x[t] - y[t-1]) / period``. First ``period - 1`` values NaN.

    The recursion runs in ``itertools.accumulate``: the live path smooths ~60 values per
    closed candle, where pandas' ``ewm`` (same result) spends ~150 us setting up per call."""
    out = np.full(x.shape, np.nan)
    if len(x) < period:
        return out
    out[period - 1 :] = list(accumulate(x[period:].tolist(),
                                        lambda y, v: y + (v - y) / period,
                                        initial=float(x[:period].mean())))
    return out


def rsi(close: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Wilder's RSI in [0, 100]. [N] -> [N], first value at index ``period``.

    Only gains -> 100, only losses -> 0, flat -> 50 (RS = 0/0 is undefined; neutral).
    """
    c = series(close, "close")
    check_period(period)
    out = np.full(c.shape, np.nan)
    d = np.diff(c)
    avg_gain = _wilder(np.clip(d, 0.0, None), period)
    avg_loss = _wilder(np.clip(-d, 0.0, None), period)
    total = avg_gain + avg_loss
    # 100 - 100 / (1 + RS) == 100 * gain / (gain + loss), which needs no inf for RS.
    r = np.divide(100.0 * avg_gain, total, out=np.full(total.shape, 50.0), where=total > 0)
    r[np.isnan(total)] = np.nan  # warm-up: keep NaN, not the 50 fill
    out[1:] = r
    return out


def _ema(x: pd.Series, span: int) -> pd.Series:
    # min_periods marks the warm-up as NaN instead of emitting values that are
    # dominated by the first observation.
    return x.ewm(span=span, adjust=False, min_periods=span).mean()


def macd(
    close: npt.ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MACD in price units: ``(macd_line, signal_line, histogram)``, each shape [N].

    EMAs use ``span=n, adjust=False`` (alpha = 2 / (n + 1)), seeded with the first
    close. ``macd_line = EMA_fast - EMA_slow`` is NaN for the first ``slow - 1``
    bars; ``signal_line`` (EMA of the MACD line) for a further ``signal - 1``.
    """
    c = series(close, "close")
    for name, n in (("fast", fast), ("slow", slow), ("signal", signal)):
        check_period(n, name)
    if fast >= slow:
        raise ValueError(f"fast ({fast}) must be shorter than slow ({slow})")
    s = pd.Series(c)
    line = _ema(s, fast) - _ema(s, slow)
    sig = _ema(line, signal)
    return line.to_numpy(), sig.to_numpy(), (line - sig).to_numpy()


def bollinger(
    close: npt.ArrayLike, period: int = 20, k: float = 2.0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Bollinger bands in price units: ``(middle, upper, lower)``, each [N].

    middle = SMA(period); upper/lower = middle +/- k * population std (ddof=0, as
    Bollinger defines it). First ``period - 1`` values NaN.
    """
    c = series(close, "close")
    check_period(period)
    roll = pd.Series(c).rolling(period)
    mid = roll.mean().to_numpy()
    sd = roll.std(ddof=0).to_numpy()
    return mid, mid + k * sd, mid - k * sd


def atr(
    high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14
) -> FloatArray:
    """Wilder's Average True Range in price units. [N] x3 -> [N], first at ``period - 1``.

    TR[t] = max(h - l, |h - c[t-1]|, |l - c[t-1]|); TR[0] = h - l (no previous close).
    """
    h, lo, c = series(high, "high"), series(low, "low"), series(close, "close")
    if not len(h) == len(lo) == len(c):
        raise ValueError(f"high/low/close lengths differ: {len(h)}, {len(lo)}, {len(c)}")
    check_period(period)
    tr, prev = h - lo, c[:-1]
    tr[1:] = np.maximum.reduce([tr[1:], np.abs(h[1:] - prev), np.abs(lo[1:] - prev)])
    return _wilder(tr, period)


def volume_ratio(volume: npt.ArrayLike, period: int = 20) -> FloatArray:
    """``volume[t] / mean(volume[t-period:t])`` (unitless). [N] -> [N].

    NaN for the first ``period`` bars and wherever that mean is 0.
    """
    # The mean excludes bar t so a spike is compared with the volume *before* it.
    v = series(volume, "volume")
    check_period(period)
    prev_mean = np.full(v.shape, np.nan)
    if len(v) > period:
        prev_mean[period:] = np.lib.stride_tricks.sliding_window_view(v[:-1], period).mean(axis=1)
    ok = np.isfinite(prev_mean) & (prev_mean != 0)
    return np.divide(v, prev_mean, out=np.full(v.shape, np.nan), where=ok)
