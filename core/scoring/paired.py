"""Is a challenger better than its champion? A paired comparison on the same candles.

For the candles both models predicted (same symbol, timeframe and target candle), each
model's per-prediction score ``a_i`` (the champion's) and ``b_i`` (the challenger's), and
their difference ``d_i = b_i - a_i``. The challenger is better when the 95 % interval of
mean(d) is wholly above 0, over at least ``min_rows`` pairs (never fewer than
:data:`~core.scoring.bootstrap.MIN_ROWS`).

The interval is the project's (:mod:`core.scoring.bootstrap`): a seeded moving-block
bootstrap, blocks of L = max(1, round(n ** (1/3))) consecutive pairs (rows in target order,
so neighbouring candles stay together), one draw of block starts for both models and the
difference (paired), percentile interval. A resample's mean is its sum over the k * L rows it
holds.

The per-prediction score (``measure_for``): for a model judged as a forecaster (the CNN),
minus its close forecast's error (``price_error``: the mean of ``d`` is how much the
challenger's close MAE is below the champion's, the quantity behind the close skill scores);
for the others, whether the call was right (``action_correct``, the HOLD band's rule: the
mean of ``d`` is the accuracy the challenger gains). Pure functions: numpy and DataFrames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.scoring.bootstrap import LEVEL, MIN_ROWS, block_length, draw_block_starts, resample_sums

RESAMPLES = 2000


@dataclass(frozen=True)
class Paired:
    """A paired comparison of two models' per-prediction scores on the same rows."""

    n: int  # pairs
    champion: float  # mean of a
    champion_ci: list[float]
    challenger: float  # mean of b
    challenger_ci: list[float]
    diff: float  # mean of d = b - a
    diff_ci: list[float]  # 95 %, paired block bootstrap
    promotable: bool
    reason: str  # why (not) promotable, in words

    def to_json(self) -> dict:
        return {"n": self.n, "champion": _safe(self.champion),
                "champion_ci": [_safe(v) for v in self.champion_ci],
                "challenger": _safe(self.challenger),
                "challenger_ci": [_safe(v) for v in self.challenger_ci],
                "diff": _safe(self.diff), "diff_ci": [_safe(v) for v in self.diff_ci],
                "promotable": self.promotable, "reason": self.reason}


def _safe(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _interval(stats: np.ndarray) -> list[float]:
    tail = (1.0 - LEVEL) / 2.0 * 100.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return [float(low), float(high)]


def paired_means(champion: np.ndarray, challenger: np.ndarray, rng: np.random.Generator,
                 resamples: int = RESAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """Full-sample means [3] and resampled means [R, 3] of (a, b, b - a), the same block
    starts for all three columns."""
    a = np.asarray(champion, dtype=float)
    b = np.asarray(challenger, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two 1-d arrays of one length, got {a.shape} "
                         f"and {b.shape}")
    matrix = np.column_stack([a, b, b - a])  # [n, 3]
    n = len(a)
    length = block_length(n)
    starts = draw_block_starts(rng, n, resamples)  # [R, k]
    sums = resample_sums(matrix, starts, length)  # [R, 3]
    return matrix.mean(axis=0), sums / (starts.shape[1] * length)


def compare(champion: np.ndarray, challenger: np.ndarray, min_rows: int, seed: int = 0,
            resamples: int = RESAMPLES) -> Paired:
    """The paired comparison and the promotion rule: promotable when there are at least
    ``max(min_rows, MIN_ROWS)`` pairs and the interval of mean(b - a) is wholly above 0."""
    n = len(champion)
    need = max(int(min_rows), MIN_ROWS)
    if n == 0:
        nan = [math.nan, math.nan]
        return Paired(0, math.nan, nan, math.nan, nan, math.nan, nan, False,
                      f"no paired resolved predictions yet (needs {need})")
    full, means = paired_means(champion, challenger, np.random.default_rng(seed), resamples)
    cis = [_interval(means[:, j]) for j in range(3)]
    diff_ci = cis[2]
    if n < need:
        ok, why = False, f"{n} of {need} paired resolved predictions"
    elif diff_ci[0] > 0:
        ok, why = True, (f"better on {n} paired predictions: {full[2]:+.4f} "
                         f"[{diff_ci[0]:+.4f}, {diff_ci[1]:+.4f}] 95 %")
    else:
        where = "below 0: worse" if diff_ci[1] < 0 else "includes 0"
        ok, why = False, (f"not better: {full[2]:+.4f} [{diff_ci[0]:+.4f}, {diff_ci[1]:+.4f}] "
                          f"95 % {where}, over {n} paired predictions")
    return Paired(n, float(full[0]), cis[0], float(full[1]), cis[1], float(full[2]), diff_ci,
                  ok, why)


MEASURES = {
    "accuracy": "whether the call was right (1) or not (0), by the HOLD band's rule",
    "close_error": "minus the close forecast's error, |predicted - actual close| / actual close",
}


def measure_for(scores: tuple[str, ...]) -> str:
    """The per-prediction score two versions of a model are compared by: the close
    forecast's error for a model judged as a forecaster (``close_skill_*`` among its
    ``Learner.scores``), else whether its call was right."""
    return "close_error" if "close_skill_persistence" in scores else "accuracy"


def row_scores(rows, measure: str) -> np.ndarray:
    """Per resolved row (a DataFrame of the store's columns), the measure: higher is better;
    NaN where the row has none (no forecast)."""
    if measure == "accuracy":
        return rows["action_correct"].astype(float).to_numpy()
    if measure == "close_error":
        return -rows["price_error"].astype(float).to_numpy()
    raise ValueError(f"no paired measure {measure!r}; use one of: {', '.join(MEASURES)}")


def pair_rows(champion_rows, challenger_rows, measure: str = "accuracy"):
    """The two models' resolved rows (DataFrames with symbol, timeframe, target_ts and the
    measure's column) joined on the same candles, in target order: (a, b) float arrays of
    the measure (rows where either has none left out). A candle predicted more than once by
    a model (it never is: one prediction per model and candle) counts its last row."""
    keys = ["symbol", "timeframe", "target_ts"]
    left = champion_rows[keys].assign(score=row_scores(champion_rows, measure))
    right = challenger_rows[keys].assign(score=row_scores(challenger_rows, measure))
    joined = (left.drop_duplicates(keys, keep="last")
              .merge(right.drop_duplicates(keys, keep="last"), on=keys, suffixes=("_a", "_b"))
              .dropna(subset=["score_a", "score_b"])
              .sort_values(["target_ts", "symbol", "timeframe"], kind="stable"))
    return joined["score_a"].to_numpy(float), joined["score_b"].to_numpy(float)
