"""What the evaluation report, the page and the REST status call: every score of one group
(``score_group``), of every group (``score_table``), a score over a trailing window for a
sparkline (``rolling``), and ``json_safe`` for their JSON."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.scoring import checks, measures
from core.scoring.bootstrap import (
    MIN_ROWS,
    Score,
    best_baseline,
    block_length,
    draw_block_starts,
    group_rng,
    resample_sums,
    score,
)
from core.scoring.measures import SCORE_NAMES
from core.scoring.rows import prepare
from core.scoring.sums import ONE


def score_group(
    rows: pd.DataFrame, *, timeframe: str, fee_rate: float, seed: int, resamples: int = 1000
) -> dict[str, Score]:
    """Every score of one (model, symbol, timeframe)'s resolved predictions, by name.

    ``rows`` as ``PredictionStore.resolved_frame()`` gives them (one group; any order: they are
    sorted by target_ts, created_ts, id). ``fee_rate`` per side (0.001 is 0.1 %); ``seed`` and
    the group's key seed the bootstrap; ``resamples`` >= 1 (1000 by default). The MAE skills
    and ic_close appear only for a model with pred_* values. Raises ValueError naming what is
    wrong with the input. Every definition is in :mod:`core.scoring.measures`.
    """
    resamples = checks.count("resamples", resamples)
    g = prepare(rows, timeframe, fee_rate)
    found, matrix = measures.metrics(g)
    key = (str(rows["model"].iloc[0]), str(rows["symbol"].iloc[0]), timeframe)
    starts = draw_block_starts(group_rng(seed, *key), g.n, resamples)  # [R, k]
    sums = resample_sums(matrix, starts, block_length(g.n))  # [R, m]
    full = matrix.sum(axis=0)  # [m]
    return {m.name: score(m, full, g.n, sums) for m in found}


def score_table(
    rows: pd.DataFrame, *, fee_rate: float, seed: int, resamples: int = 1000
) -> list[dict]:
    """score_group of every (model, symbol, timeframe) in ``rows``, sorted by that key:
    [{"model", "symbol", "timeframe", "n", "scores": {name: Score}}]."""
    missing = [c for c in ("model", "symbol", "timeframe") if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack the column(s) {', '.join(missing)}")
    table = []
    for (model, symbol, tf), group in rows.groupby(["model", "symbol", "timeframe"], sort=True):
        scores = score_group(group, timeframe=str(tf), fee_rate=fee_rate, seed=seed,
                             resamples=resamples)  # fmt: skip
        table.append({"model": str(model), "symbol": str(symbol), "timeframe": str(tf),
                      "n": len(group), "scores": scores})  # fmt: skip
    return table


def rolling(
    rows: pd.DataFrame, *, timeframe: str, fee_rate: float, metric: str, window: int = 200
) -> pd.DataFrame:
    """A score over a trailing window of rows, for the page's sparkline (no interval).

    Row i's value is ``metric`` over rows max(0, i - window + 1) .. i (sorted as score_group
    sorts), from the same sums as score_group; NaN until min(window, MIN_ROWS) rows are in the
    window. baseline_value is the baseline score_group compares with (picked on the full
    sample), 0 for the relative skills, NaN for a score without one (ece, coverage). The IC
    uses full-sample ranks. The P&L is the window's total. Columns: created_ts, value,
    baseline_value; one row per prediction. A score the model does not have (a MAE skill
    without a forecast) gives NaN values.
    """
    if metric not in SCORE_NAMES:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(SCORE_NAMES)}")
    window = checks.count("window", window)
    g = prepare(rows, timeframe, fee_rate)
    found, matrix = measures.metrics(g)
    out = pd.DataFrame({"created_ts": g.created, "value": np.nan, "baseline_value": np.nan})
    m = next((m for m in found if m.name == metric), None)
    if m is None:
        return out
    cums = np.zeros((g.n + 1, matrix.shape[1]))
    np.cumsum(matrix, axis=0, out=cums[1:])
    ends = np.arange(1, g.n + 1)
    sums = cums[ends] - cums[np.maximum(ends - window, 0)]  # [n, m]
    full = matrix.sum(axis=0)
    sized = sums[:, ONE] >= min(window, MIN_ROWS)
    out["value"] = np.where(sized, m.model(sums, sums[:, ONE]), np.nan)
    if m.baselines:
        best, _ = best_baseline(m, full, g.n)
        out["baseline_value"] = np.where(sized, m.baselines[best](sums, sums[:, ONE]), np.nan)
    return out


def json_safe(value):
    """``value`` with NaN and infinities as None and numpy scalars as Python numbers, so
    that the REST status and report.json are valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return json_safe(value.item())
    return value
