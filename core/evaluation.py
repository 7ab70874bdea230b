"""The building blocks of honest scoring that core/scoring.py composes: correctness with a
HOLD band, rolling accuracy, reliability and ECE, one-candle paper P&L after fees, and the
naive action baselines. Pure functions (numpy), no I/O.

A row's *change* is ``actual_close / reference_price - 1``, exactly as :mod:`core.rewards`
defines it, and correctness is :func:`core.rewards.action_correct` of that change, so the
numbers here agree with the store's ``action_correct`` column.

Baselines take the model's place on the same rows, at confidence 0.5 (the reward table's
neutral x1.0, "no idea" for calibration): always_hold (HOLD), momentum (the sign of the
previous candle's change; HOLD if flat or unknown). A direction model (UP/DOWN, never HOLD)
faces them in its own terms (``as_direction``: HOLD becomes UP, the long side); always-HOLD
does not apply to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from core.rewards import ACTIONS, HOLD_BAND, action_correct

BASELINE_CONFIDENCE = 0.5  # neutral: x1.0 in the reward table, "no idea" for calibration
MIN_ROWS_FOR_VERDICT = 30  # below this a percentile bootstrap is too narrow to trust
# Slack when binning confidences: 0.57 * 100 is 56.99999999999999 in binary, and a confidence
# written as a bin edge belongs to the bin that starts there.
_BIN_SLACK = 1e-9
_LONG = ("BUY", "UP")  # UP/DOWN (the order-book model) trade like BUY/SELL
_SHORT = ("SELL", "DOWN")


class Baseline(NamedTuple):
    """A baseline's calls on the evaluated rows: actions [n] (str) and confidences [n]."""

    actions: np.ndarray
    confidences: np.ndarray


# --------------------------------------------------------------------------- validation


def _nonempty(name: str, n: int) -> None:
    if n == 0:
        raise ValueError(f"{name} is empty: there are no rows to evaluate")


def _actions(values: Sequence[str] | np.ndarray) -> np.ndarray:
    actions = np.asarray(values, dtype=object).reshape(-1)
    _nonempty("actions", len(actions))
    bad = sorted({str(a) for a in actions if a not in ACTIONS})
    if bad:
        raise ValueError(f"actions must be among {', '.join(ACTIONS)}, got {', '.join(bad)}")
    return actions


def _floats(name: str, values: Any, n: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(array) != n:
        raise ValueError(f"{name} has {len(array)} values for {n} rows")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite numbers")
    return array


def _confidences(values: Any, n: int) -> np.ndarray:
    array = _floats("confidences", values, n)
    if np.any((array < 0) | (array > 1)):
        raise ValueError("confidences must be within [0, 1]")
    return array


def _correct(values: Any) -> np.ndarray:
    array = np.asarray(values).reshape(-1)
    _nonempty("correct", len(array))
    if not np.all(np.isin(array, (0, 1))):  # bools, 0/1 ints and 0.0/1.0 floats pass
        raise ValueError("correct must be booleans (or 0/1)")
    return array.astype(bool)


def _positive(name: str, values: Any, n: int) -> np.ndarray:
    array = _floats(name, values, n)
    if np.any(array <= 0):
        raise ValueError(f"{name} must be > 0")
    return array


# --------------------------------------------------------------------------- accuracy, reward


def correctness(
    actions: Sequence[str] | np.ndarray, changes: Any, hold_band: float = HOLD_BAND
) -> np.ndarray:
    """Per row, whether the action was right (:func:`core.rewards.action_correct`). bool [n]."""
    actions = _actions(actions)
    changes = _floats("changes", changes, len(actions))
    return np.array([action_correct(a, c, hold_band) for a, c in zip(actions, changes)])


def rolling_accuracy(correct: Any, window: int) -> np.ndarray:
    """Trailing accuracy over the last ``window`` rows, for learning curves. float [n].

    Entry i is the mean of correct[i - window + 1 .. i]; the first window - 1 entries are NaN
    (not enough rows yet), and so is every entry when window > n.
    """
    correct = _correct(correct)
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    sums = np.concatenate(([0.0], np.cumsum(correct, dtype=np.float64)))  # [n + 1]
    out = np.full(len(correct), np.nan)
    out[window - 1 :] = (sums[window:] - sums[:-window]) / window
    return out


# --------------------------------------------------------------------------- calibration


def reliability(
    confidences: Any, correct: Any, bins: int = 10
) -> list[tuple[float, float, int, float, float]]:
    """Reliability table: (bin_low, bin_high, count, mean_confidence, accuracy) per bin.

    ``bins`` equal-width bins on [0, 1], each [low, high) except the last, [low, 1]. Every bin is
    listed, so a reliability diagram keeps its axis; an empty one has count 0 and NaN mean
    confidence and accuracy.
    """
    correct = _correct(correct)
    confidences = _confidences(confidences, len(correct))
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    index = np.minimum(np.floor(confidences * bins + _BIN_SLACK).astype(int), bins - 1)  # [n]
    table = []
    for k in range(bins):
        members = index == k
        count = int(members.sum())
        mean_conf = float(confidences[members].mean()) if count else math.nan
        accuracy = float(correct[members].mean()) if count else math.nan
        table.append((k / bins, (k + 1) / bins, count, mean_conf, accuracy))
    return table


def expected_calibration_error(confidences: Any, correct: Any, bins: int = 10) -> float:
    """ECE = sum over non-empty bins of (count / N) * |accuracy - mean_confidence|.

    0 is perfectly calibrated; a model that says 0.9 and is right half the time scores 0.4.
    """
    table = reliability(confidences, correct, bins)
    total = sum(count for _, _, count, _, _ in table)
    return float(sum(count / total * abs(acc - conf) for _, _, count, conf, acc in table if count))


# --------------------------------------------------------------------------- paper P&L


def paper_pnl(
    actions: Sequence[str] | np.ndarray,
    reference_prices: Any,
    next_prices: Any,
    fee_rate: float,
    size_usd: float = 1000.0,
) -> dict[str, float]:
    """One-candle paper trades of ``size_usd`` each, in quote currency after fees.

    BUY (or UP) goes long at the reference price and closes at the next close:
    size * (next / ref - 1). SELL (or DOWN) goes short: size * (1 - next / ref). HOLD trades
    nothing. Each trade pays fee_rate * size on entry and again on exit; unlike
    ``core.orchestrator.PaperBook``, the exit fee is on the entry notional, not the exit one
    (a difference of fee_rate * size * |change|, 0.001 % of size for a 1 % move at 0.1 %).

    Returns total, per_trade (mean net P&L per trade; NaN when nothing traded), trades, and
    wins (trades with net P&L > 0).
    """
    actions = _actions(actions)
    ref = _positive("reference_prices", reference_prices, len(actions))
    nxt = _positive("next_prices", next_prices, len(actions))
    fee_rate = float(fee_rate)
    if not (math.isfinite(fee_rate) and fee_rate >= 0):
        raise ValueError(f"fee_rate must be a finite number >= 0, got {fee_rate!r}")
    size = float(size_usd)
    if not (math.isfinite(size) and size > 0):
        raise ValueError(f"size_usd must be a finite number > 0, got {size_usd!r}")
    side = np.where(np.isin(actions, _LONG), 1.0, np.where(np.isin(actions, _SHORT), -1.0, 0.0))
    traded = side != 0  # [n]
    net = side * size * (nxt / ref - 1.0) - 2.0 * fee_rate * size * traded  # [n]
    trades = int(traded.sum())
    return {
        "total": float(net.sum()),
        "per_trade": float(net[traded].mean()) if trades else math.nan,
        "trades": trades,
        "wins": int((net[traded] > 0).sum()),
    }


# --------------------------------------------------------------------------- baselines


def _constant(action: str, n: int) -> Baseline:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    _nonempty("n", int(n))
    return Baseline(np.full(n, action, dtype=object), np.full(n, BASELINE_CONFIDENCE))


def always_hold(n: int) -> Baseline:
    """HOLD on every one of n rows, confidence 0.5."""
    return _constant("HOLD", n)


def momentum(previous_changes: Any) -> Baseline:
    """BUY if the previous candle rose, SELL if it fell, HOLD if it was flat or is unknown (NaN,
    e.g. on the first row); confidence 0.5. See :func:`previous_changes`."""
    prev = np.asarray(previous_changes, dtype=np.float64).reshape(-1)
    _nonempty("previous_changes", len(prev))
    if np.any(np.isinf(prev)):
        raise ValueError("previous_changes must be finite numbers or NaN (unknown)")
    actions = np.where(prev > 0, "BUY", np.where(prev < 0, "SELL", "HOLD")).astype(object)
    return Baseline(actions, np.full(len(prev), BASELINE_CONFIDENCE))


def as_direction(baseline: Baseline) -> Baseline:
    """A baseline in a direction model's terms: BUY -> UP, SELL -> DOWN, HOLD -> UP."""
    mapped = np.array([_DIRECTION_OF[str(a)] for a in baseline.actions], dtype=object)
    return Baseline(mapped, baseline.confidences)


_DIRECTION_OF = {"BUY": "UP", "SELL": "DOWN", "HOLD": "UP", "UP": "UP", "DOWN": "DOWN"}


# --------------------------------------------------------------------------- comparison


