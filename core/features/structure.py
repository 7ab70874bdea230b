"""Market structure: Williams swing pivots and a coarse market-regime label.

Inputs are 1-D float arrays, oldest first, one value per bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from core.features.checks import FloatArray, check_period, series


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
    h, lo = series(high, "high"), series(low, "low")
    if len(h) != len(lo):
        raise ValueError(f"high/low lengths differ: {len(h)} vs {len(lo)}")
    check_period(strength, "strength")
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
    check_period(levels, "levels")
    check_period(higher_strength, "higher_strength")
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
    c = series(close, "close")
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
