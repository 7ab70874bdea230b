"""What a list of calls got right and earned: correctness with a HOLD band, rolling accuracy
and one-candle paper P&L after fees. Pure functions (numpy), no I/O.

A row's *change* is ``actual_close / reference_price - 1``, exactly as :mod:`core.rewards`
defines it, and correctness is :func:`core.rewards.action_correct` of that change, so the
numbers here agree with the store's ``action_correct`` column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.rewards import HOLD_BAND, action_correct
from core.scoring import checks
from nn.contract import LONG_ACTIONS, SHORT_ACTIONS

PNL_SIZE_USD = 1000.0  # paper trade size (USD notional per trade)


def sides(actions: np.ndarray) -> np.ndarray:
    """+1 for a long call (BUY, UP), -1 for a short one (SELL, DOWN), 0 for HOLD. float [n]."""
    return np.where(np.isin(actions, LONG_ACTIONS), 1.0,
                    np.where(np.isin(actions, SHORT_ACTIONS), -1.0, 0.0))


def correctness(
    actions: Sequence[str] | np.ndarray, changes: Any, hold_band: float = HOLD_BAND
) -> np.ndarray:
    """Per row, whether the action was right (:func:`core.rewards.action_correct`). bool [n]."""
    actions = checks.actions(actions)
    changes = checks.floats("changes", changes, len(actions))
    return np.array([action_correct(a, c, hold_band) for a, c in zip(actions, changes)])


def rolling_accuracy(correct: Any, window: int) -> np.ndarray:
    """Trailing accuracy over the last ``window`` rows, for learning curves. float [n].

    Entry i is the mean of correct[i - window + 1 .. i]; the first window - 1 entries are NaN
    (not enough rows yet), and so is every entry when window > n.
    """
    correct = checks.correct(correct)
    window = checks.count("window", window)
    sums = np.concatenate(([0.0], np.cumsum(correct, dtype=np.float64)))  # [n + 1]
    out = np.full(len(correct), np.nan)
    out[window - 1 :] = (sums[window:] - sums[:-window]) / window
    return out


def paper_pnl(
    actions: Sequence[str] | np.ndarray,
    reference_prices: Any,
    next_prices: Any,
    fee_rate: float,
    size_usd: float = PNL_SIZE_USD,
) -> dict[str, float]:
    """One-candle paper trades of ``size_usd`` each, in quote currency after fees.

    BUY (or UP) goes long at the reference price and closes at the next close:
    size * (next / ref - 1). SELL (or DOWN) goes short: size * (1 - next / ref). HOLD trades
    nothing. Each trade pays fee_rate * size on entry and again on exit; unlike
    ``core.live.signals.PaperBook``, the exit fee is on the entry notional, not the exit one
    (a difference of fee_rate * size * |change|, 0.001 % of size for a 1 % move at 0.1 %).

    Returns total, per_trade (mean net P&L per trade; NaN when nothing traded), trades, and
    wins (trades with net P&L > 0).
    """
    actions = checks.actions(actions)
    ref = checks.positive("reference_prices", reference_prices, len(actions))
    nxt = checks.positive("next_prices", next_prices, len(actions))
    fee_rate = float(fee_rate)
    if not (math.isfinite(fee_rate) and fee_rate >= 0):
        raise ValueError(f"fee_rate must be a finite number >= 0, got {fee_rate!r}")
    size = float(size_usd)
    if not (math.isfinite(size) and size > 0):
        raise ValueError(f"size_usd must be a finite number > 0, got {size_usd!r}")
    side = sides(actions)  # [n]
    net = net_pnl(side, nxt / ref - 1.0, fee_rate, size)  # [n]
    traded = side != 0  # [n]
    trades = int(traded.sum())
    return {
        "total": float(net.sum()),
        "per_trade": float(net[traded].mean()) if trades else math.nan,
        "trades": trades,
        "wins": int((net[traded] > 0).sum()),
    }


def net_pnl(side: np.ndarray, change: np.ndarray, fee_rate: float,
            size: float = PNL_SIZE_USD) -> np.ndarray:
    """Per row, a one-candle trade's net P&L in USD: side * size * change, minus fee_rate *
    size on entry and on exit (nothing for side 0). float [n]."""
    return side * size * change - 2.0 * fee_rate * size * (side != 0)
