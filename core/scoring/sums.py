"""A score as a function of column sums: why the bootstrap is fast.

Every score is a function of SUMS of per-row columns (ratios of means; Pearson from sums of
x, y, xy, x^2, y^2; ECE from per-bin sums; the P&L total as n times the mean). A score's
per-row columns are stacked into one matrix [n, m] (``Columns``); a ``Stat`` maps sums
[..., m] (of the full sample, a bootstrap resample or a trailing window) and the row count a
total is scaled to, to the statistic [...]. A ``Metric`` is the model's Stat and each
candidate baseline's, on the same columns.

*Spearman from full-sample ranks*: the IC of a resample is the Pearson correlation of the
ranks taken once on the full sample, not re-ranked per resample. That keeps it a function of
sums (re-ranking would cost a sort per resample and turn the resample's duplicates into
ties); it is the standard smooth-function-of-means bootstrap of a rank correlation and
agrees with re-ranking to first order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Sums [..., m] of the per-row columns, and the row count a total is scaled to ([...] or a
# scalar), -> the statistic [...].
Stat = Callable[[np.ndarray, "np.ndarray | float"], np.ndarray]

class Columns:
    """Per-row columns, each [n], stacked into one matrix [n, m] for the sums."""

    def __init__(self, n: int) -> None:
        self._columns: list[np.ndarray] = [np.ones(n)]  # column 0: the row count

    def add(self, values: np.ndarray) -> int:
        self._columns.append(np.asarray(values, dtype=np.float64))
        return len(self._columns) - 1

    def matrix(self) -> np.ndarray:
        return np.stack(self._columns, axis=1)  # [n, m]


ONE = 0  # index of the row-count column


@dataclass(frozen=True)
class Metric:
    """A score as functions of sums: the model's and each candidate baseline's, in order."""

    name: str
    count: int  # column index counting the rows the score is measured on
    model: Stat
    baselines: dict[str, Stat]  # empty: no baseline, no verdict


def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    out = np.full(a.shape, np.nan)
    np.divide(a, b, out=out, where=b != 0)
    return out


def zero(s: np.ndarray, _n: np.ndarray | float) -> np.ndarray:
    return np.zeros(s.shape[:-1])


def mean_of(col: int) -> Stat:
    return lambda s, _n: ratio(s[..., col], s[..., ONE])


def total_of(col: int) -> Stat:
    # A resample holds k * L >= n rows: its mean times the rows it stands for.
    return lambda s, n: ratio(s[..., col], s[..., ONE]) * n


def skill_of(model_col: int, base_col: int) -> Stat:
    return lambda s, _n: 1.0 - ratio(s[..., model_col], s[..., base_col])


def centered_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks minus their mean; exactly 0 for a constant column."""
    ranks = pd.Series(values).rank(method="average").to_numpy()
    if len(ranks) == 0 or np.ptp(ranks) == 0:
        return np.zeros(len(values))
    return ranks - ranks.mean()


def pearson_of(cols: Columns, mask: np.ndarray, x: np.ndarray, y: np.ndarray) -> Stat:
    """Pearson of x and y on the masked rows, from sums; 0 when either is constant."""
    full_x = np.zeros(len(mask))
    full_y = np.zeros(len(mask))
    full_x[mask], full_y[mask] = x, y
    c_n, c_x, c_y = cols.add(mask), cols.add(full_x), cols.add(full_y)
    c_xx, c_yy, c_xy = cols.add(full_x**2), cols.add(full_y**2), cols.add(full_x * full_y)
    # A resample of a constant stretch has a variance of rounding size: call it 0.
    tol_x = 1e-9 * float(np.mean(x**2)) if len(x) else 0.0
    tol_y = 1e-9 * float(np.mean(y**2)) if len(y) else 0.0

    def stat(s: np.ndarray, _n: np.ndarray | float) -> np.ndarray:
        count = s[..., c_n]
        mx, my = ratio(s[..., c_x], count), ratio(s[..., c_y], count)
        vx = ratio(s[..., c_xx], count) - mx**2
        vy = ratio(s[..., c_yy], count) - my**2
        cov = ratio(s[..., c_xy], count) - mx * my
        flat = (vx <= tol_x) | (vy <= tol_y)
        out = ratio(cov, np.sqrt(np.where(flat, 1.0, vx * vy)))
        return np.where(flat & (count > 0), 0.0, out)

    return stat


def balanced_of(hit_up: int, up: int, hit_down: int, down: int) -> Stat:
    return lambda s, _n: (
        (ratio(s[..., hit_up], s[..., up]) + ratio(s[..., hit_down], s[..., down])) / 2.0
    )
