"""Honest scores of resolved predictions, each against a baseline that costs nothing, with a
paired block-bootstrap interval and a verdict: the one scoring module behind the evaluation
report, the page and the REST status. Pure functions (numpy, pandas), no I/O, no torch.

Definitions are ``/work/shared/SCORING.md``'s. For the rows i of one (model, symbol, timeframe),
sorted by target_ts (then created_ts, id):

- ``change_i = actual_close_i / reference_price_i - 1`` (a fraction: 0.01 is +1 %) and
  ``r_i = ln(actual_close_i / reference_price_i)``;
- ``fee_rt = 2 * fee_rate``, the round-trip fee (a fraction of the notional);
- ``band = rewards.hold_band(tf_ms, fee_rate)``, the timeframe's HOLD band, which decides
  whether a call was right (``rewards.action_correct``).

Scores (``Score`` per name; "higher is better" for every one that has a baseline):

=========================  ======================================  ===========================
name                       value                                   compared with
=========================  ======================================  ===========================
close_skill_persistence    1 - MAE(model) / MAE(last close)        persistence (skill: 0)
close_skill_ewma           1 - MAE(model) / MAE(EWMA-20 of closes)  ewma (skill: 0)
range_skill_persistence    same for the high-low range / ref       persistence (skill: 0)
range_skill_ewma           same, EWMA-20 of previous ranges        ewma (skill: 0)
ic                         Spearman(signed confidence, r)          better of momentum, constant
ic_close                   Spearman(pred_close / ref - 1, r)       better of momentum, constant
balanced_accuracy          mean hit rate on up- and down-moves     better of momentum,
                           beyond the fee                          random_like
precision                  share of calls right beyond the fee     base_rate (same call mix)
coverage                   share of rows with a call               (none)
brier_skill                1 - BS(model) / BS(causal base rate)    base_rate (skill: 0)
ece                        expected calibration error, 10 bins     (none)
pnl                        paper P&L after fees, USD, 1000/trade   best of always_hold,
                                                                   buy_and_hold, momentum
accuracy                   share right by ``action_correct``       best of always_hold,
                                                                   buy_and_hold, momentum
=========================  ======================================  ===========================

The MAE skills and ``ic_close`` exist only for models with a candle forecast (pred_* values).
Rows where a baseline is unknown (no previous candle, no earlier closed candle for the EWMA,
no forecast) are left out of that comparison for the model and the baseline alike.

Two baselines are additions to the brief's lists, so that **a constant can never win**: the
IC is also compared with ``constant`` (any constant view has IC 0, SCORING.md's "no skill"),
because momentum's IC is often below 0 (about -0.03 at 5m), which an always-HOLD model (IC 0)
would otherwise "beat"; and the P&L also with ``always_hold`` (not trading earns 0), because
one-candle trades of buy-and-hold and momentum pay the round-trip fee on every row, so an
always-HOLD model would otherwise "beat" them. As in :mod:`core.evaluation`, always_hold is
not applicable to a direction model (UP/DOWN only): it cannot stand aside, and it faces
buy-and-hold and momentum on its own terms (UP/DOWN, momentum UP when unknown). Where a score
picks "the better"/"the best" baseline, it is picked by the full-sample value (ties: first
listed) and then tested on the same rows, which favours the baseline (a "skill" verdict is
conservative).

**Intervals.** 95 % percentile intervals from a seeded, paired, moving-block bootstrap:

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
- *Fast*: every score is a function of SUMS of per-row columns (ratios of means; Pearson from
  sums of x, y, xy, x^2, y^2; ECE from per-bin sums; the P&L total as n times the mean). Each
  column's block sums come from one cumulative sum, and a resample's sums are sums of k block
  sums, added one block at a time into [R, m] (memory R * m + n * m floats, never
  R * k * m). A resample holds k * L >= n rows, so a total
  (the P&L) is rescaled to n rows (n / (k * L)); ratios need no rescaling.
- *Spearman from full-sample ranks*: the IC of a resample is the Pearson correlation of the
  ranks taken once on the full sample, not re-ranked per resample. That keeps it a function of
  sums (re-ranking would cost a sort per resample and turn the resample's duplicates into
  ties); it is the standard smooth-function-of-means bootstrap of a rank correlation and
  agrees with re-ranking to first order.

Their verdicts in words (a model's headline, whether any model calls the direction) are
core/verdicts.py's.

**Verdict** (scores with a baseline): on the interval of diff = model - baseline (for the skill
scores and brier_skill the value is already relative to its baseline, whose own skill is 0, so
diff = value): "skill" when the whole interval is above 0, "worse" when below, "no skill yet"
otherwise, and "too few rows" below 30 rows (or for an undefined value).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import pandas as pd

from core import evaluation, rewards
from core.timeframes import parse_timeframe

MIN_ROWS = evaluation.MIN_ROWS_FOR_VERDICT  # 30: below this no verdict
LEVEL = 0.95  # interval level
HORIZON = 1  # candles a prediction looks ahead: the block length's floor
EWMA_SPAN = 20  # alpha = 2 / (span + 1) = 2/21
ECE_BINS = 10
PNL_SIZE_USD = 1000.0  # paper trade size, as evaluation.paper_pnl's default
_LONG = ("BUY", "UP")
_SHORT = ("SELL", "DOWN")
_REQUIRED = (
    "model", "symbol", "timeframe", "created_ts", "target_ts", "reference_price", "action",
    "confidence", "actual_high", "actual_low", "actual_close",
)  # fmt: skip
_FORECAST = ("pred_high", "pred_low", "pred_close")  # optional: NaN/None without a forecast

SCORE_NAMES = (
    "close_skill_persistence", "close_skill_ewma", "range_skill_persistence", "range_skill_ewma",
    "ic", "ic_close", "balanced_accuracy", "precision", "coverage", "brier_skill", "ece", "pnl",
    "accuracy",
)  # fmt: skip
# Scores whose value is already a skill relative to the baseline (the baseline scores 0).
RELATIVE = frozenset(
    {"close_skill_persistence", "close_skill_ewma", "range_skill_persistence",
     "range_skill_ewma", "brier_skill"}
)  # fmt: skip
# A score's verdict -> the headline's word for the model.


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


# Sums [..., m] of the per-row columns, and the row count a total is scaled to ([...] or a
# scalar), -> the statistic [...].
Stat = Callable[[np.ndarray, "np.ndarray | float"], np.ndarray]


# --------------------------------------------------------------------------- input


@dataclass(frozen=True)
class _Group:
    """One group's rows as arrays, sorted by target_ts, created_ts (, id). All [n]."""

    target: np.ndarray  # int64 ms, open time of the predicted candle
    created: np.ndarray  # int64 ms
    ref: np.ndarray  # reference price (> 0)
    close: np.ndarray  # actual close (> 0)
    high: np.ndarray
    low: np.ndarray
    actions: np.ndarray  # object (str)
    conf: np.ndarray  # [0, 1]
    pred_close: np.ndarray  # NaN without a forecast
    pred_high: np.ndarray
    pred_low: np.ndarray
    tf_ms: int
    fee_rate: float
    band: float  # the timeframe's HOLD band (fraction)
    change: np.ndarray = field(init=False)  # close / ref - 1
    prev: np.ndarray = field(init=False)  # int index of the previous candle's row, -1: none
    closed: np.ndarray = field(init=False)  # int: rows [0, closed_i) had closed at created_i

    def __post_init__(self) -> None:
        object.__setattr__(self, "change", self.close / self.ref - 1.0)
        object.__setattr__(self, "prev", previous_index(self.target, self.created, self.tf_ms))
        # Sorted by target, "target_j + tf <= created_i" holds for a prefix of the rows.
        closed = np.searchsorted(self.target, self.created - self.tf_ms, side="right")
        object.__setattr__(self, "closed", closed)

    @property
    def n(self) -> int:
        return len(self.target)

    @property
    def direction_model(self) -> bool:
        """UP/DOWN only (the order-book model): no HOLD, so always_hold does not apply."""
        return set(self.actions.tolist()) <= set(rewards.DIRECTION_ACTIONS)


def previous_index(target_ts: np.ndarray, created_ts: np.ndarray, tf_ms: int) -> np.ndarray:
    """Per row, the index of the row of the previous candle (target_ts - tf_ms), -1 if unknown.

    ``target_ts`` must be sorted. The previous candle counts only if it had closed when the
    row was predicted (created_ts >= target_ts); of several rows of it, the last one wins, as
    as the momentum baseline needs it. int [n].
    """
    want = target_ts - tf_ms  # [n]
    pos = np.searchsorted(target_ts, want, side="right") - 1  # last row with target <= want
    found = (pos >= 0) & (target_ts[np.maximum(pos, 0)] == want) & (created_ts >= target_ts)
    return np.where(found, pos, -1)


def _column(rows: pd.DataFrame, name: str, *, optional: bool = False) -> np.ndarray:
    if name not in rows.columns:
        if optional:
            return np.full(len(rows), np.nan)
        raise ValueError(f"rows lack the column {name!r}")
    try:
        values = np.asarray(rows[name].to_numpy(), dtype=np.float64)  # None -> NaN
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column {name!r} must hold numbers: {exc}") from None
    if np.isinf(values).any():
        raise ValueError(f"column {name!r} holds infinite values")
    if not optional and np.isnan(values).any():
        raise ValueError(f"column {name!r} holds NaN/None in {int(np.isnan(values).sum())} rows")
    return values


def _check_values(rows: pd.DataFrame, timeframe: str) -> None:
    missing = [c for c in _REQUIRED if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack the column(s) {', '.join(missing)}")
    if rows.empty:
        raise ValueError("rows is empty: there are no resolved predictions to score")
    for key in ("model", "symbol", "timeframe"):
        values = rows[key].unique()
        if len(values) != 1:
            raise ValueError(f"rows must be one group, got {len(values)} values of {key!r}")
    if str(rows["timeframe"].iloc[0]) != timeframe:
        raise ValueError(f"rows are {rows['timeframe'].iloc[0]!r} predictions, not {timeframe!r}")
    bad = sorted({str(a) for a in rows["action"].unique() if a not in rewards.ACTIONS})
    if bad:
        raise ValueError(f"unknown action(s) {', '.join(bad)}; use {', '.join(rewards.ACTIONS)}")


def _prepare(rows: pd.DataFrame, timeframe: str, fee_rate: float) -> _Group:
    """Validate and sort one group's rows (ValueError naming what is wrong)."""
    if not isinstance(rows, pd.DataFrame):
        raise ValueError(f"rows must be a pandas DataFrame, got {type(rows).__name__}")
    tf_ms = parse_timeframe(timeframe)
    band = rewards.hold_band(tf_ms, fee_rate)  # validates fee_rate
    _check_values(rows, timeframe)
    order = ["target_ts", "created_ts"] + (["id"] if "id" in rows.columns else [])
    rows = rows.sort_values(order, kind="stable")
    stamps = {name: _column(rows, name) for name in ("target_ts", "created_ts")}
    prices = {name: _column(rows, name) for name in ("reference_price", "actual_close")}
    for name, values in prices.items():
        if (values <= 0).any():
            raise ValueError(f"column {name!r} must be > 0")
    conf = _column(rows, "confidence")
    if ((conf < 0) | (conf > 1)).any():
        raise ValueError("column 'confidence' must be within [0, 1]")
    pred = {name: _column(rows, name, optional=True) for name in _FORECAST}
    return _Group(
        target=stamps["target_ts"].astype(np.int64),
        created=stamps["created_ts"].astype(np.int64),
        ref=prices["reference_price"],
        close=prices["actual_close"],
        high=_column(rows, "actual_high"),
        low=_column(rows, "actual_low"),
        actions=rows["action"].to_numpy(dtype=object),
        conf=conf,
        pred_close=pred["pred_close"],
        pred_high=pred["pred_high"],
        pred_low=pred["pred_low"],
        tf_ms=tf_ms,
        fee_rate=float(fee_rate),
        band=band,
    )


# --------------------------------------------------------------------------- baselines


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


def _momentum_actions(g: _Group) -> np.ndarray:
    """evaluation's momentum baseline (UP/DOWN for a direction model). object [n]."""
    prev_change = np.where(g.prev >= 0, g.change[np.maximum(g.prev, 0)], np.nan)  # [n]
    actions = evaluation.momentum(prev_change).actions
    if g.direction_model:
        actions = evaluation.as_direction(evaluation.Baseline(actions, np.zeros(g.n))).actions
    return actions


def _constant_actions(g: _Group) -> dict[str, np.ndarray]:
    """always_hold (not for a direction model) and buy_and_hold, in the model's terms."""
    out = {}
    if not g.direction_model:
        out["always_hold"] = evaluation.always_hold(g.n).actions
    out["buy_and_hold"] = np.full(g.n, "UP" if g.direction_model else "BUY", dtype=object)
    return out


# --------------------------------------------------------------------------- columns, stats


class _Columns:
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
class _Metric:
    """A score as functions of sums: the model's and each candidate baseline's, in order."""

    name: str
    count: int  # column index counting the rows the score is measured on
    model: Stat
    baselines: dict[str, Stat]  # empty: no baseline, no verdict


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    out = np.full(a.shape, np.nan)
    np.divide(a, b, out=out, where=b != 0)
    return out


def _zero(s: np.ndarray, _n: np.ndarray | float) -> np.ndarray:
    return np.zeros(s.shape[:-1])


def _mean_of(col: int) -> Stat:
    return lambda s, _n: _ratio(s[..., col], s[..., ONE])


def _total_of(col: int) -> Stat:
    # A resample holds k * L >= n rows: its mean times the rows it stands for.
    return lambda s, n: _ratio(s[..., col], s[..., ONE]) * n


def _skill_of(model_col: int, base_col: int) -> Stat:
    return lambda s, _n: 1.0 - _ratio(s[..., model_col], s[..., base_col])


def _mae_metrics(g: _Group, cols: _Columns) -> list[_Metric]:
    """The four MAE skills (only with a forecast). Errors are fractions of the reference."""
    prev = np.maximum(g.prev, 0)
    known = g.prev >= 0
    rng_price = g.high - g.low  # price units
    candidates = {
        "close": (
            np.abs(g.pred_close - g.close) / g.ref,
            {
                "persistence": np.abs(g.change),  # |ref - close| / ref
                "ewma": np.abs(causal_ewma(g.close, g.closed) - g.close) / g.ref,
            },
        ),
        "range": (
            np.abs((g.pred_high - g.pred_low) - rng_price) / g.ref,
            {
                "persistence": np.where(known, np.abs(rng_price[prev] - rng_price), np.nan) / g.ref,
                "ewma": np.abs(causal_ewma(rng_price, g.closed) - rng_price) / g.ref,
            },
        ),
    }
    metrics = []
    for what, (model_err, baselines) in candidates.items():
        if not np.isfinite(model_err).any():
            continue  # no forecast of this quantity
        for base, base_err in baselines.items():
            use = np.isfinite(model_err) & np.isfinite(base_err)  # same rows for both
            mask = cols.add(use)
            m_col = cols.add(np.where(use, model_err, 0.0))
            b_col = cols.add(np.where(use, base_err, 0.0))
            metrics.append(
                _Metric(f"{what}_skill_{base}", mask, _skill_of(m_col, b_col), {base: _zero})
            )
    return metrics


def _centered_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks minus their mean; exactly 0 for a constant column."""
    ranks = pd.Series(values).rank(method="average").to_numpy()
    if len(ranks) == 0 or np.ptp(ranks) == 0:
        return np.zeros(len(values))
    return ranks - ranks.mean()


def _pearson_of(cols: _Columns, mask: np.ndarray, x: np.ndarray, y: np.ndarray) -> Stat:
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
        mx, my = _ratio(s[..., c_x], count), _ratio(s[..., c_y], count)
        vx = _ratio(s[..., c_xx], count) - mx**2
        vy = _ratio(s[..., c_yy], count) - my**2
        cov = _ratio(s[..., c_xy], count) - mx * my
        flat = (vx <= tol_x) | (vy <= tol_y)
        out = _ratio(cov, np.sqrt(np.where(flat, 1.0, vx * vy)))
        return np.where(flat & (count > 0), 0.0, out)

    return stat


def _ic_metrics(g: _Group, cols: _Columns) -> list[_Metric]:
    """IC of the signed confidence and (with a forecast) of the predicted move, each against
    momentum (the previous candle's r) and a constant view (IC 0), on the rows where the
    previous candle is known. Ranks of pred_close / ref - 1 equal those of its log."""
    r = np.log(g.close / g.ref)  # [n]
    r_prev = np.where(g.prev >= 0, r[np.maximum(g.prev, 0)], np.nan)  # [n]
    side = np.where(np.isin(g.actions, _LONG), 1.0, np.where(np.isin(g.actions, _SHORT), -1.0, 0))
    views = {"ic": side * g.conf}
    if np.isfinite(g.pred_close).any():
        views["ic_close"] = g.pred_close / g.ref - 1.0
    metrics = []
    for name, view in views.items():
        use = np.isfinite(view) & np.isfinite(r_prev)
        ry = _centered_ranks(r[use])
        model = _pearson_of(cols, use, _centered_ranks(view[use]), ry)
        base = _pearson_of(cols, use, _centered_ranks(r_prev[use]), ry)
        count = cols.add(use)
        metrics.append(_Metric(name, count, model, {"momentum": base, "constant": _zero}))
    return metrics


def _balanced_of(hit_up: int, up: int, hit_down: int, down: int) -> Stat:
    return lambda s, _n: (
        (_ratio(s[..., hit_up], s[..., up]) + _ratio(s[..., hit_down], s[..., down])) / 2.0
    )


def _direction_metrics(g: _Group, cols: _Columns) -> list[_Metric]:
    """balanced_accuracy, precision and coverage: moves beyond the round-trip fee."""
    fee_rt = 2.0 * g.fee_rate + rewards._BAND_SLACK  # a move of exactly the fee is not beyond
    up, down = g.change > fee_rt, g.change < -fee_rt  # [n] bool
    scored = up | down
    long, short = np.isin(g.actions, _LONG), np.isin(g.actions, _SHORT)
    mom = _momentum_actions(g)
    mom_long, mom_short = np.isin(mom, _LONG), np.isin(mom, _SHORT)
    c_up, c_down, c_scored = cols.add(up), cols.add(down), cols.add(scored)
    c_hit_up, c_hit_down = cols.add(long & up), cols.add(short & down)
    c_long_scored, c_short_scored = cols.add(long & scored), cols.add(short & scored)
    c_long, c_short, c_calls = cols.add(long), cols.add(short), cols.add(long | short)

    def random_like(s: np.ndarray, _n: np.ndarray | float) -> np.ndarray:
        # Expected balanced accuracy of calls drawn at the model's frequencies on these rows.
        return _ratio(s[..., c_long_scored] + s[..., c_short_scored], s[..., c_scored]) / 2.0

    def precision(s: np.ndarray, _n: np.ndarray | float) -> np.ndarray:
        return _ratio(s[..., c_hit_up] + s[..., c_hit_down], s[..., c_calls])

    def base_rate(s: np.ndarray, _n: np.ndarray | float) -> np.ndarray:
        blind = s[..., c_long] * s[..., c_up] + s[..., c_short] * s[..., c_down]
        return _ratio(blind, s[..., c_calls] * s[..., ONE])

    momentum = _balanced_of(cols.add(mom_long & up), c_up, cols.add(mom_short & down), c_down)
    return [
        _Metric(
            "balanced_accuracy",
            c_scored,
            _balanced_of(c_hit_up, c_up, c_hit_down, c_down),
            {"momentum": momentum, "random_like": random_like},
        ),
        _Metric("precision", c_calls, precision, {"base_rate": base_rate}),
        _Metric("coverage", ONE, _mean_of(c_calls), {}),
    ]


def _confidence_metrics(g: _Group, hits: np.ndarray, cols: _Columns) -> list[_Metric]:
    """brier_skill against the causal base rate, and ece (evaluation's 10 bins)."""
    base = causal_base_rate(hits, g.closed)  # [n]
    c_model, c_base = cols.add((g.conf - hits) ** 2), cols.add((base - hits) ** 2)
    # evaluation.reliability's binning: [k/10, (k+1)/10), the last bin closed, with its slack.
    bins = np.minimum(np.floor(g.conf * ECE_BINS + evaluation._BIN_SLACK), ECE_BINS - 1)
    gaps = [cols.add(np.where(bins == k, hits - g.conf, 0.0)) for k in range(ECE_BINS)]

    def ece(s: np.ndarray, _n: np.ndarray | float) -> np.ndarray:
        return _ratio(np.abs(s[..., gaps]).sum(axis=-1), s[..., ONE])

    return [
        _Metric("brier_skill", ONE, _skill_of(c_model, c_base), {"base_rate": _zero}),
        _Metric("ece", ONE, ece, {}),
    ]


def _net_pnl(g: _Group, actions: np.ndarray) -> np.ndarray:
    """evaluation.paper_pnl's per-trade net P&L in USD per row: side * size * change, minus
    fee_rate * size on entry and on exit. float [n]."""
    side = np.where(np.isin(actions, _LONG), 1.0, np.where(np.isin(actions, _SHORT), -1.0, 0.0))
    return side * PNL_SIZE_USD * g.change - 2.0 * g.fee_rate * PNL_SIZE_USD * (side != 0)


def _trade_metrics(g: _Group, hits: np.ndarray, cols: _Columns) -> list[_Metric]:
    """pnl and accuracy, each against always_hold, buy_and_hold and momentum."""
    baselines = {**_constant_actions(g), "momentum": _momentum_actions(g)}
    pnl = {name: _total_of(cols.add(_net_pnl(g, a))) for name, a in baselines.items()}
    accuracy = {
        name: _mean_of(cols.add(evaluation.correctness(a, g.change, g.band)))
        for name, a in baselines.items()
    }
    return [
        _Metric("pnl", ONE, _total_of(cols.add(_net_pnl(g, g.actions))), pnl),
        _Metric("accuracy", ONE, _mean_of(cols.add(hits)), accuracy),
    ]


def _metrics(g: _Group) -> tuple[list[_Metric], np.ndarray]:
    """Every score of the group and the per-row column matrix [n, m] they read."""
    cols = _Columns(g.n)
    hits = evaluation.correctness(g.actions, g.change, g.band).astype(np.float64)  # [n]
    metrics = [
        *_mae_metrics(g, cols),
        *_ic_metrics(g, cols),
        *_direction_metrics(g, cols),
        *_confidence_metrics(g, hits, cols),
        *_trade_metrics(g, hits, cols),
    ]
    order = {name: i for i, name in enumerate(SCORE_NAMES)}
    return sorted(metrics, key=lambda m: order[m.name]), cols.matrix()


# --------------------------------------------------------------------------- bootstrap


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


def _best_baseline(metric: _Metric, full: np.ndarray, n: int) -> tuple[str, dict[str, float]]:
    """The baseline with the highest full-sample value (NaN never wins; ties: first listed),
    and every baseline's value."""
    values = {name: float(stat(full, n)) for name, stat in metric.baselines.items()}
    finite = [name for name, v in values.items() if math.isfinite(v)]
    return (max(finite, key=lambda name: values[name]) if finite else next(iter(values))), values


def _score(metric: _Metric, full: np.ndarray, n: int, sums: np.ndarray) -> Score:
    """The metric's point value, interval, best baseline, paired diff interval and verdict.

    full [m] the full-sample sums; sums [R, m] the resamples'."""
    value = float(metric.model(full, n))
    stats = metric.model(sums, n)  # [R]
    count = int(round(full[metric.count]))
    out = Score(value=value, ci=_interval(stats), baseline=None, baseline_value=None, diff=None,
                diff_ci=None, verdict=None, n=count)  # fmt: skip
    if not metric.baselines:
        return out
    best, values = _best_baseline(metric, full, n)
    diff_ci = _interval(stats - metric.baselines[best](sums, n))
    out.update(baseline=best, baseline_value=values[best], diff=value - values[best],
               diff_ci=diff_ci, verdict=verdict(diff_ci, count, value))  # fmt: skip
    return out


# --------------------------------------------------------------------------- public


def score_group(
    rows: pd.DataFrame, *, timeframe: str, fee_rate: float, seed: int, resamples: int = 1000
) -> dict[str, Score]:
    """Every score of one (model, symbol, timeframe)'s resolved predictions, by name.

    ``rows`` as ``PredictionStore.resolved_frame()`` gives them (one group; any order: they are
    sorted by target_ts, created_ts, id). ``fee_rate`` per side (0.001 is 0.1 %); ``seed`` and
    the group's key seed the bootstrap; ``resamples`` >= 1 (1000 by default). The MAE skills
    and ic_close appear only for a model with pred_* values. Raises ValueError naming what is
    wrong with the input. See the module doc for every definition.
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int | np.integer):
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}")
    g = _prepare(rows, timeframe, fee_rate)
    metrics, matrix = _metrics(g)
    key = (str(rows["model"].iloc[0]), str(rows["symbol"].iloc[0]), timeframe)
    starts = draw_block_starts(group_rng(seed, *key), g.n, resamples)  # [R, k]
    sums = resample_sums(matrix, starts, block_length(g.n))  # [R, m]
    full = matrix.sum(axis=0)  # [m]
    return {m.name: _score(m, full, g.n, sums) for m in metrics}


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
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    g = _prepare(rows, timeframe, fee_rate)
    metrics, matrix = _metrics(g)
    out = pd.DataFrame({"created_ts": g.created, "value": np.nan, "baseline_value": np.nan})
    found = [m for m in metrics if m.name == metric]
    if not found:
        return out
    m = found[0]
    cums = np.zeros((g.n + 1, matrix.shape[1]))
    np.cumsum(matrix, axis=0, out=cums[1:])
    ends = np.arange(1, g.n + 1)
    sums = cums[ends] - cums[np.maximum(ends - window, 0)]  # [n, m]
    full = matrix.sum(axis=0)
    sized = sums[:, ONE] >= min(window, MIN_ROWS)
    out["value"] = np.where(sized, m.model(sums, sums[:, ONE]), np.nan)
    if m.baselines:
        best, _ = _best_baseline(m, full, g.n)
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
