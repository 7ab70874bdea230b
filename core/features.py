"""Feature engineering for Tickwise: indicators, model input windows, order-book
features, Williams market-structure pivots and a coarse market-regime label.

Conventions
-----------
* Every series is a 1-D float array, oldest value first, one value per bar.
* Series outputs have the same length as the input; leading values that cannot
  be computed yet (not enough history) are NaN.
* All functions are pure: no I/O, no Dash, no module state.

Indicators use pandas' ``rolling``/``ewm`` (or plain numpy) rather than TA-Lib,
which needs a C library build that is painful on CI and Windows, or the ``ta``
package, which is unmaintained. pandas is already a runtime dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from numba import njit

from nn.contract import N_CHANNELS

if TYPE_CHECKING:  # torch costs ~1 s to import; only the tensor helpers need it.
    import torch

FloatArray = npt.NDArray[np.float64]


def _series(x: npt.ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    return arr


def _check_period(period: int, name: str = "period") -> None:
    if int(period) != period or period < 1:
        raise ValueError(f"{name} must be a positive integer, got {period!r}")


def _ratio(close: npt.ArrayLike, period: int) -> FloatArray:
    c = _series(close, "close")
    _check_period(period)
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
    c = _series(close, "close")
    _check_period(period)
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
    c = _series(close, "close")
    for name, n in (("fast", fast), ("slow", slow), ("signal", signal)):
        _check_period(n, name)
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
    c = _series(close, "close")
    _check_period(period)
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
    h, lo, c = _series(high, "high"), _series(low, "low"), _series(close, "close")
    if not len(h) == len(lo) == len(c):
        raise ValueError(f"high/low/close lengths differ: {len(h)}, {len(lo)}, {len(c)}")
    _check_period(period)
    tr, prev = h - lo, c[:-1]
    tr[1:] = np.maximum.reduce([tr[1:], np.abs(h[1:] - prev), np.abs(lo[1:] - prev)])
    return _wilder(tr, period)


def volume_ratio(volume: npt.ArrayLike, period: int = 20) -> FloatArray:
    """``volume[t] / mean(volume[t-period:t])`` (unitless). [N] -> [N].

    NaN for the first ``period`` bars and wherever that mean is 0.
    """
    # The mean excludes bar t so a spike is compared with the volume *before* it.
    v = _series(volume, "volume")
    _check_period(period)
    prev_mean = np.full(v.shape, np.nan)
    if len(v) > period:
        prev_mean[period:] = np.lib.stride_tricks.sliding_window_view(v[:-1], period).mean(axis=1)
    ok = np.isfinite(prev_mean) & (prev_mean != 0)
    return np.divide(v, prev_mean, out=np.full(v.shape, np.nan), where=ok)




def normalised_window(candles: npt.ArrayLike, length: int) -> npt.NDArray[np.float32]:
    """Scale-free model input from OHLCV candles.

    ``candles``: [N, 6] rows of (ts_ms, open, high, low, close, volume), oldest
    first. Returns float32 [5, length]: channels 0-3 are ``ln(price / last close)``
    for open/high/low/close (so the last close is exactly 0), channel 4 is
    ``log1p(volume)`` z-scored over the window (population std; all 0 if flat).
    Uses the last ``length`` rows; if N < length the rows are right-aligned and
    the left is zero-padded -- use :func:`window_mask` to tell padding apart,
    because 0 is also a legitimate value ("equal to the last close").
    """
    _check_period(length, "length")
    a = np.asarray(candles, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 6:
        raise ValueError(f"candles must have shape [N, 6] (ts, o, h, l, c, v), got {a.shape}")
    if len(a) == 0:
        raise ValueError("candles is empty; need at least one row")
    a = a[-length:]
    # Logs in numpy (vectorised, ~4x math.log in a loop), the rest in one compiled pass.
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(a[:, 1:5])  # [n, 4]; a price <= 0, NaN or inf makes it non-finite
    out, bad = _normalised_window(logs, a[:, 5], length)
    if bad == 1:
        raise ValueError("candle prices must be finite and > 0")
    if bad == 2:
        raise ValueError("candle volumes must be finite and >= 0")
    return out


@njit(cache=True, nogil=True)
def _normalised_window(logs: np.ndarray, volume: np.ndarray, length: int):  # pragma: no cover
    """(window, 0) from the log prices [n, 4] and volumes [n] of the last n <= length
    candles, or (zeros, 1) if a log price is not finite, (zeros, 2) for a volume < 0, NaN or
    inf. Compiled: it runs for every closed candle (~7 us for 300 candles where the same in
    numpy calls costs ~20 us)."""
    n = logs.shape[0]
    out = np.zeros((N_CHANNELS, length), dtype=np.float32)
    for i in range(n):
        for c in range(4):
            if not math.isfinite(logs[i, c]):
                return out, 1
        if not (volume[i] >= 0 and volume[i] < np.inf):  # NaN fails both
            return out, 2
    pad = length - n
    ref = logs[n - 1, 3]  # the last close
    lv = np.empty(n)  # log1p(volume)
    mean = 0.0
    for i in range(n):
        for c in range(4):
            out[c, pad + i] = logs[i, c] - ref
        lv[i] = math.log1p(volume[i])
        mean += lv[i]
    mean /= n
    var = 0.0
    for i in range(n):
        var += (lv[i] - mean) ** 2
    sd = math.sqrt(var / n)  # population std
    if sd > 0:
        for i in range(n):
            out[4, pad + i] = (lv[i] - mean) / sd
    return out, 0


def window_mask(n: int, length: int) -> npt.NDArray[np.bool_]:
    """Bool [length]: True on the last ``min(n, length)`` slots (real data for ``n`` candles)."""
    _check_period(length, "length")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    mask = np.zeros(length, dtype=bool)
    mask[length - min(n, length) :] = True
    return mask


def window_tensor(candles: npt.ArrayLike, length: int) -> torch.Tensor:
    """:func:`normalised_window` as a float32 ``torch.Tensor`` [5, length] (CPU)."""
    import torch

    return torch.from_numpy(normalised_window(candles, length))


def multi_timeframe_windows(
    windows: dict[str, npt.ArrayLike], length: int
) -> dict[str, torch.Tensor]:
    """Map timeframe -> candles [N, 6] to timeframe -> tensor [5, length]."""
    return {tf: window_tensor(c, length) for tf, c in windows.items()}


def _book_side(levels: npt.ArrayLike, name: str, descending: bool) -> FloatArray:
    a = np.asarray(levels, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must have shape [K, 2] (price, size), got {a.shape}")
    if len(a) == 0:
        raise ValueError(f"{name} side of the book is empty")
    # Two reductions check everything (a NaN makes the minimum NaN, so the test fails): this
    # runs for every observation of every closed candle.
    lowest = a.min(axis=0)
    if not (lowest[0] > 0 and lowest[1] > 0 and a.max() < np.inf):
        raise ValueError(f"{name} prices and sizes must be finite and > 0")
    if len(a) > 1:
        steps = a[1:, 0] - a[:-1, 0]
        if steps.max() > 0 if descending else steps.min() < 0:
            raise ValueError(f"{name} must be sorted by price, "
                             f"{'de' if descending else 'a'}scending")
    return a


def book_features(
    bids: npt.ArrayLike,
    asks: npt.ArrayLike,
    bands: tuple[float, ...] = (0.001, 0.005, 0.01),
    top_n: int = 5,
    validate: bool = True,
) -> dict[str, float]:
    """Snapshot features of an L2 order book.

    ``bids``/``asks``: [K, 2] (price, size); bids best (highest) first, asks best
    (lowest) first; sizes in base currency and > 0. Returns (prices in quote
    currency, sizes in base currency):

    * ``mid``, ``spread`` (absolute), ``spread_bps`` (spread / mid * 1e4)
    * ``imbalance`` in [-1, 1]: (bid size - ask size) / total over the top ``top_n`` levels
    * ``micro_price``: best prices weighted by the *opposite* side's top size,
      so it leans toward the side likely to be hit next
    * ``bid_depth_{b}bps`` / ``ask_depth_{b}bps`` per band (0.001 -> ``10bps``):
      size with price within ``mid * (1 -/+ band)``

    ``validate=False`` skips the checks of the sides (shape, finite, > 0, sorted) for books
    that were checked where they came in (the consolidated book of every observation).
    """
    if validate:
        b = _book_side(bids, "bids", descending=True)
        a = _book_side(asks, "asks", descending=False)
        _check_period(top_n, "top_n")
    else:
        b, a = bids, asks
    (bid_px, bid_sz), (ask_px, ask_sz) = b[0].tolist(), a[0].tolist()
    if bid_px >= ask_px:
        raise ValueError(f"crossed or locked book: best bid {bid_px} >= best ask {ask_px}")
    mid, spread = (bid_px + ask_px) / 2.0, ask_px - bid_px
    top_b, top_a = float(b[:top_n, 1].sum()), float(a[:top_n, 1].sum())
    out = {
        "mid": mid,
        "spread": spread,
        "spread_bps": spread / mid * 1e4,
        "imbalance": (top_b - top_a) / (top_b + top_a),
        "micro_price": (bid_px * ask_sz + ask_px * bid_sz) / (bid_sz + ask_sz),
    }
    # Sides are sorted, so the levels within a band are a prefix of each: one binary search
    # for all bands, then the cumulative size at each prefix end.
    band = np.asarray(bands, dtype=np.float64)
    n_bid = np.searchsorted(-b[:, 0], -mid * (1 - band), side="right")  # bids >= mid(1-band)
    n_ask = np.searchsorted(a[:, 0], mid * (1 + band), side="right")  # asks <= mid(1+band)
    bid_cum, ask_cum = np.cumsum(b[:, 1]).tolist(), np.cumsum(a[:, 1]).tolist()
    bid_depth = [bid_cum[i - 1] if i else 0.0 for i in n_bid.tolist()]
    ask_depth = [ask_cum[i - 1] if i else 0.0 for i in n_ask.tolist()]
    for i, width in enumerate(bands):
        bps = round(width * 1e4)  # round: 0.001 * 1e4 is not exactly 10 in floats
        out[f"bid_depth_{bps}bps"] = bid_depth[i]
        out[f"ask_depth_{bps}bps"] = ask_depth[i]
    return {k: float(v) for k, v in out.items()}


@dataclass(frozen=True)
class Pivot:
    """Swing point: original bar ``index``, its high/low ``price``, ``level`` 1 = short-term."""

    index: int
    price: float
    kind: Literal["high", "low"]
    level: int = 1


def strict_peaks(values: FloatArray, strength: int) -> npt.NDArray[np.intp]:
    """Positions whose value is strictly greater than the ``strength`` values on
    each side; ties and NaNs never qualify, and edges lack neighbours so never do."""
    n = len(values)
    if n < 2 * strength + 1:
        return np.empty(0, dtype=np.intp)
    centre = values[strength : n - strength]
    ok = np.ones(len(centre), dtype=bool)
    for k in range(1, strength + 1):  # NaN compares False, so it never qualifies
        ok &= centre > values[strength - k : n - strength - k]
        ok &= centre > values[strength + k : n - strength + k]
    return np.flatnonzero(ok) + strength


def swing_points(high: npt.ArrayLike, low: npt.ArrayLike, strength: int = 2) -> list[Pivot]:
    """Level-1 Williams swing points, sorted by bar index.

    Swing high at i: ``high[i]`` strictly above the ``strength`` highs on each side;
    swing low: ``low[i]`` strictly below the neighbouring lows. Ties are not pivots.
    An outside bar can be both (the high is listed first).
    """
    h, lo = _series(high, "high"), _series(low, "low")
    if len(h) != len(lo):
        raise ValueError(f"high/low lengths differ: {len(h)} vs {len(lo)}")
    _check_period(strength, "strength")
    pivots = [Pivot(int(i), float(h[i]), "high") for i in strict_peaks(h, strength)]
    pivots += [Pivot(int(i), float(lo[i]), "low") for i in strict_peaks(-lo, strength)]
    return sorted(pivots, key=lambda p: (p.index, p.kind != "high"))


def williams_pivots(
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    levels: int = 3,
    strength: int = 2,
    higher_strength: int = 1,
) -> list[list[Pivot]]:
    """Nested Williams pivots: element k holds the level-(k+1) pivots.

    Level 1 is :func:`swing_points`. Level k+1 applies the same strict rule to
    level k's swing highs (as a series of their prices, highs only) and,
    separately, to its swing lows, with ``higher_strength`` neighbours (1 by
    default: higher levels have few points, so a wider rule would find none).
    Stops early, returning fewer than ``levels`` lists, once a level is empty.
    """
    _check_period(levels, "levels")
    _check_period(higher_strength, "higher_strength")
    current = swing_points(high, low, strength)
    result: list[list[Pivot]] = []
    for level in range(1, levels + 1):
        if not current:
            break
        result.append(current)
        nxt: list[Pivot] = []
        for kind in ("high", "low"):
            side = [p for p in current if p.kind == kind]
            prices = np.array([p.price for p in side], dtype=np.float64)
            sign = 1.0 if kind == "high" else -1.0
            nxt += [side[i] for i in strict_peaks(sign * prices, higher_strength)]
        current = sorted(
            (Pivot(p.index, p.price, p.kind, level + 1) for p in nxt),
            key=lambda p: (p.index, p.kind != "high"),
        )
    return result


RegimeLabel = Literal["trending", "ranging", "volatile"]


@dataclass(frozen=True)
class Regime:
    """``label`` plus the numbers behind it: per-bar log-return std (``volatility``)
    and Kaufman efficiency ratio in [0, 1] (``efficiency``)."""

    label: RegimeLabel
    volatility: float
    efficiency: float


def market_regime(
    close: npt.ArrayLike,
    window: int = 50,
    vol_threshold: float = 0.02,
    trend_threshold: float = 0.3,
) -> Regime:
    """Classify the last ``window`` bars (uses the last ``window + 1`` closes).

    volatility = sample std (ddof=1) of the ``window`` log returns, per bar.
    efficiency = |close[-1] - close[-window-1]| / sum |close diffs| (0 if flat).
    ``volatile`` if volatility > vol_threshold, else ``trending`` if efficiency >=
    trend_threshold, else ``ranging``. The default 0.02 (2 % per bar) is meant
    for daily bars; volatility grows ~sqrt(bar length), so for shorter bars pass
    e.g. ``0.02 * sqrt(bar_minutes / 1440)`` or nothing will ever be volatile.
    """
    c = _series(close, "close")
    if int(window) != window or window < 2:
        raise ValueError(f"window must be an integer >= 2, got {window!r}")
    if len(c) < window + 1:
        raise ValueError(f"need at least window + 1 = {window + 1} closes, got {len(c)}")
    c = c[-(window + 1) :]
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("closes must be finite and > 0")
    vol = float(np.std(np.diff(np.log(c)), ddof=1))
    path = float(np.abs(np.diff(c)).sum())
    eff = abs(c[-1] - c[0]) / path if path > 0 else 0.0
    # Volatility is checked first: a noisy market is risky whatever its drift.
    label: RegimeLabel = (
        "volatile" if vol > vol_threshold else "trending" if eff >= trend_threshold else "ranging"
    )
    return Regime(label, vol, float(eff))
