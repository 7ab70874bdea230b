"""The naive forecasts and calls every score is compared with: each costs nothing and knows
only what was known when the model predicted. Pure functions (numpy, pandas), no I/O.

Action baselines take the model's place on the same rows, at confidence 0.5 (the reward
table's neutral x1.0, "no idea" for calibration): always_hold (HOLD), buy_and_hold (BUY),
momentum (the sign of the previous candle's change; HOLD if flat or unknown). A direction
model (UP/DOWN, never HOLD) faces them in its own terms (``as_direction``: HOLD becomes UP,
the long side; momentum UP when unknown); always-HOLD does not apply to it: it cannot stand
aside.

Forecast baselines: persistence (the last close, the last range) and a causal EWMA-20 of the
closes (ranges) of the candles closed when the row was predicted. The calibration baseline is
the causal base rate of hits.

Two baselines are additions to SCORING.md's lists, so that **a constant can never win**: the
IC is also compared with ``constant`` (any constant view has IC 0, SCORING.md's "no skill"),
because momentum's IC is often below 0 (about -0.03 at 5m), which an always-HOLD model (IC 0)
would otherwise "beat"; and the P&L also with ``always_hold`` (not trading earns 0), because
one-candle trades of buy-and-hold and momentum pay the round-trip fee on every row, so an
always-HOLD model would otherwise "beat" them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from core.scoring import checks
from core.scoring.rows import Group
from nn.contract import DIRECTION_OF

BASELINE_CONFIDENCE = 0.5  # neutral: x1.0 in the reward table, "no idea" for calibration
EWMA_SPAN = 20  # alpha = 2 / (span + 1) = 2/21


class Baseline(NamedTuple):
    """A baseline's calls on the evaluated rows: actions [n] (str) and confidences [n]."""

    actions: np.ndarray
    confidences: np.ndarray


# --------------------------------------------------------------------------- action baselines


def _constant(action: str, n: int) -> Baseline:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    checks.nonempty("n", int(n))
    return Baseline(np.full(n, action, dtype=object), np.full(n, BASELINE_CONFIDENCE))


def always_hold(n: int) -> Baseline:
    """HOLD on every one of n rows, confidence 0.5."""
    return _constant("HOLD", n)


def momentum(previous_changes: Any) -> Baseline:
    """BUY if the previous candle rose, SELL if it fell, HOLD if it was flat or is unknown (NaN,
    e.g. on the first row); confidence 0.5."""
    prev = np.asarray(previous_changes, dtype=np.float64).reshape(-1)
    checks.nonempty("previous_changes", len(prev))
    if np.any(np.isinf(prev)):
        raise ValueError("previous_changes must be finite numbers or NaN (unknown)")
    actions = np.where(prev > 0, "BUY", np.where(prev < 0, "SELL", "HOLD")).astype(object)
    return Baseline(actions, np.full(len(prev), BASELINE_CONFIDENCE))


def as_direction(baseline: Baseline) -> Baseline:
    """A baseline in a direction model's terms: BUY -> UP, SELL -> DOWN, HOLD -> UP."""
    mapped = np.array([DIRECTION_OF[str(a)] for a in baseline.actions], dtype=object)
    return Baseline(mapped, baseline.confidences)


def momentum_actions(g: Group) -> np.ndarray:
    """The momentum baseline's calls on a group (UP/DOWN for a direction model). object [n]."""
    prev_change = np.where(g.prev >= 0, g.change[np.maximum(g.prev, 0)], np.nan)  # [n]
    actions = momentum(prev_change).actions
    if g.direction_model:
        actions = as_direction(Baseline(actions, np.zeros(g.n))).actions
    return actions


def constant_actions(g: Group) -> dict[str, np.ndarray]:
    """always_hold (not for a direction model) and buy_and_hold, in the model's terms."""
    out = {}
    if not g.direction_model:
        out["always_hold"] = always_hold(g.n).actions
    out["buy_and_hold"] = np.full(g.n, "UP" if g.direction_model else "BUY", dtype=object)
    return out


# --------------------------------------------------------------------------- causal averages


def causal_ewma(values: np.ndarray, closed: np.ndarray, span: int = EWMA_SPAN) -> np.ndarray:
    """Per row i, the EWMA of values[0 : closed[i]] (the rows closed when i was predicted).

    alpha = 2 / (span + 1), weights normalised over the values available (pandas
    ``ewm(adjust=True)``): the newest has weight 1, the one before (1 - alpha), ... NaN where
    closed[i] == 0. Same units as ``values``. float [n].
    """
    running = pd.Series(values, dtype=np.float64).ewm(span=span, adjust=True).mean().to_numpy()
    out = np.full(len(closed), np.nan)
    has = closed > 0
    out[has] = running[closed[has] - 1]
    return out


def causal_base_rate(hits: np.ndarray, closed: np.ndarray) -> np.ndarray:
    """Per row i, the share of hits among rows [0, closed[i]) (known when i was predicted);
    0.5 ("no idea") when there are none. float [n]."""
    sums = np.concatenate(([0.0], np.cumsum(hits, dtype=np.float64)))  # [n + 1]
    out = np.full(len(closed), 0.5)
    has = closed > 0
    out[has] = sums[closed[has]] / closed[has]
    return out
