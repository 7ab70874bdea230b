"""Intervals and verdicts: a seeded, paired, moving-block bootstrap of every score.

95 % percentile intervals from a seeded, paired, moving-block bootstrap:

- *Moving blocks*: consecutive candles are not independent (volatility clusters; a model that
  is right in a trend stays right), and an i.i.d. row bootstrap gives too narrow an interval.
  Each resample is k = ceil(n / L) blocks of L consecutive rows, L = max(horizon = 1,
  round(n ** (1/3))) (the usual n^(1/3) rate for a block bootstrap of a mean), with starts drawn
  uniformly in [0, n - L] (Künsch 1989; Politis & Romano 1994 for the stationary variant).
- *Paired*: one draw of block starts per resample serves the model and every baseline of every
  score, so each difference is measured on the same rows. A model identical to its baseline
  gets a difference interval of exactly [0, 0].
- *Seeded*: ``np.random.default_rng([seed, crc32("model|symbol|timeframe")])``, so a group's
  interval does not move when other groups come and go.
- *Fast*: every score is a function of sums of per-row columns (:mod:`core.scoring.sums`).
  Each column's block sums come from one cumulative sum, and a resample's sums are sums of k
  block sums, added one block at a time into [R, m] (memory R * m + n * m floats, never
  R * k * m). A resample holds k * L >= n rows, so a total (the P&L) is rescaled to n rows
  (n / (k * L)); ratios need no rescaling.

**Verdict** (scores with a baseline): on the interval of diff = model - baseline (for the skill
scores and brier_skill the value is already relative to its baseline, whose own skill is 0, so
diff = value): "skill" when the whole interval is above 0, "worse" when below, "no skill yet"
otherwise, and "too few rows" below 30 rows (or for an undefined value). Where a score picks
"the better"/"the best" baseline, it is picked by the full-sample value (ties: first listed)
and then tested on the same rows, which favours the baseline (a "skill" verdict is
conservative). Their verdicts in words (a model's headline, whether any model calls the
direction) are core/verdicts.py's.
"""

from __future__ import annotations

import math
import zlib
from typing import TypedDict

import numpy as np

from core.scoring.sums import Metric

MIN_ROWS = 30  # below this a percentile bootstrap is too narrow to trust: no verdict
LEVEL = 0.95  # interval level
HORIZON = 1  # candles a prediction looks ahead: the block length's floor


class Score(TypedDict):
    """One score of one group. NaN (a float) where undefined; None where not applicable."""

    value: float
    ci: list[float]  # [lo, hi] of value, 95 %
    baseline: str | None  # the compared baseline's name; None: no baseline, no verdict
    baseline_value: float | None
    diff: float | None  # value - baseline_value
    diff_ci: list[float] | None  # [lo, hi] of diff, paired
    verdict: str | None  # "skill" | "worse" | "no skill yet" | "too few rows" | None
    n: int  # rows the score is measured on


def block_length(n: int) -> int:
    """Moving-block length: max(horizon, round(n ** (1/3))) rows."""
    return max(HORIZON, round(n ** (1.0 / 3.0)))


def group_rng(seed: int, model: str, symbol: str, timeframe: str) -> np.random.Generator:
    """The group's generator: seeded by (seed, crc32 of "model|symbol|timeframe")."""
    key = f"{model}|{symbol}|{timeframe}".encode()
    return np.random.default_rng([int(seed), zlib.crc32(key)])


def draw_block_starts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """Block starts of each resample: k = ceil(n / L) uniform in [0, n - L]. int [R, k]."""
    length = block_length(n)
    k = math.ceil(n / length)
    return rng.integers(0, n - length + 1, size=(resamples, k))


def resample_sums(matrix: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Column sums of each resample: the sum of its blocks' sums. [R, m].

    matrix [n, m] per-row columns; starts [R, k]; each block is rows start .. start+length-1.
    Block sums come from one cumulative sum; the j-th blocks of all resamples are gathered
    and added at once, k times, into [R, m]: no [R, k, m] intermediate, and every column is
    summed in the same order, so identical columns give identical sums (an exact 0 diff).
    """
    n, m = matrix.shape
    cums = np.zeros((n + 1, m))
    np.cumsum(matrix, axis=0, out=cums[1:])
    blocks = cums[length:] - cums[:-length]  # [n - length + 1, m]
    out = np.zeros((len(starts), m))  # [R, m]
    gathered = np.empty_like(out)  # [R, m]
    for column in np.ascontiguousarray(starts.T):  # [R]: the j-th block of every resample
        np.take(blocks, column, axis=0, out=gathered)
        out += gathered
    return out


def _interval(stats: np.ndarray) -> list[float]:
    finite = stats[np.isfinite(stats)]
    if len(finite) == 0:
        return [math.nan, math.nan]
    tail = (1.0 - LEVEL) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return [float(low), float(high)]


def verdict(diff_ci: list[float], n: int, value: float) -> str:
    """The verdict on a diff interval: "skill" when it is wholly above 0, "worse" when wholly
    below, "no skill yet" otherwise; "too few rows" below MIN_ROWS rows or for an undefined
    value or interval."""
    if n < MIN_ROWS or not math.isfinite(value) or not all(map(math.isfinite, diff_ci)):
        return "too few rows"
    if diff_ci[0] > 0:
        return "skill"
    if diff_ci[1] < 0:
        return "worse"
    return "no skill yet"


def best_baseline(metric: Metric, full: np.ndarray, n: int) -> tuple[str, dict[str, float]]:
    """The baseline with the highest full-sample value (NaN never wins; ties: first listed),
    and every baseline's value."""
    values = {name: float(stat(full, n)) for name, stat in metric.baselines.items()}
    finite = [name for name, v in values.items() if math.isfinite(v)]
    return (max(finite, key=lambda name: values[name]) if finite else next(iter(values))), values


def score(metric: Metric, full: np.ndarray, n: int, sums: np.ndarray) -> Score:
    """The metric's point value, interval, best baseline, paired diff interval and verdict.

    full [m] the full-sample sums; sums [R, m] the resamples'."""
    value = float(metric.model(full, n))
    stats = metric.model(sums, n)  # [R]
    count = int(round(full[metric.count]))
    out = Score(value=value, ci=_interval(stats), baseline=None, baseline_value=None, diff=None,
                diff_ci=None, verdict=None, n=count)  # fmt: skip
    if not metric.baselines:
        return out
    best, values = best_baseline(metric, full, n)
    diff_ci = _interval(stats - metric.baselines[best](sums, n))
    out.update(baseline=best, baseline_value=values[best], diff=value - values[best],
               diff_ci=diff_ci, verdict=verdict(diff_ci, count, value))  # fmt: skip
    return out
