"""Every score of one group as a ``Metric``: the model's statistic and each baseline's, as
functions of column sums (see :mod:`core.scoring.sums`).

For the rows i of a group (:mod:`core.scoring.rows`): ``change_i = actual_close_i /
reference_price_i - 1``, ``r_i = ln(actual_close_i / reference_price_i)``, ``fee_rt = 2 *
fee_rate`` (the round-trip fee, a fraction of the notional) and ``band``, the timeframe's HOLD
band. Scores ("higher is better" for every one that has a baseline):

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
no forecast) are left out of that comparison for the model and the baseline alike. The
baselines themselves are :mod:`core.scoring.baselines`'s.
"""

from __future__ import annotations

import numpy as np

from core import rewards
from core.scoring.baselines import (
    causal_base_rate,
    causal_ewma,
    constant_actions,
    momentum_actions,
)
from core.scoring.calibration import bin_index
from core.scoring.calls import correctness, net_pnl, sides
from core.scoring.rows import Group
from core.scoring.sums import (
    ONE,
    Columns,
    Metric,
    balanced_of,
    centered_ranks,
    mean_of,
    pearson_of,
    ratio,
    skill_of,
    total_of,
    zero,
)
from nn.contract import LONG_ACTIONS, SHORT_ACTIONS

ECE_BINS = 10
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


def _mae_metrics(g: Group, cols: Columns) -> list[Metric]:
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
                Metric(f"{what}_skill_{base}", mask, skill_of(m_col, b_col), {base: zero})
            )
    return metrics


def _ic_metrics(g: Group, cols: Columns) -> list[Metric]:
    """IC of the signed confidence and (with a forecast) of the predicted move, each against
    momentum (the previous candle's r) and a constant view (IC 0), on the rows where the
    previous candle is known. Ranks of pred_close / ref - 1 equal those of its log."""
    r = np.log(g.close / g.ref)  # [n]
    r_prev = np.where(g.prev >= 0, r[np.maximum(g.prev, 0)], np.nan)  # [n]
    views = {"ic": sides(g.actions) * g.conf}
    if np.isfinite(g.pred_close).any():
        views["ic_close"] = g.pred_close / g.ref - 1.0
    metrics = []
    for name, view in views.items():
        use = np.isfinite(view) & np.isfinite(r_prev)
        ry = centered_ranks(r[use])
        model = pearson_of(cols, use, centered_ranks(view[use]), ry)
        base = pearson_of(cols, use, centered_ranks(r_prev[use]), ry)
        count = cols.add(use)
        metrics.append(Metric(name, count, model, {"momentum": base, "constant": zero}))
    return metrics


def _direction_metrics(g: Group, cols: Columns) -> list[Metric]:
    """balanced_accuracy, precision and coverage: moves beyond the round-trip fee."""
    fee_rt = 2.0 * g.fee_rate + rewards.BAND_SLACK  # a move of exactly the fee is not beyond
    up, down = g.change > fee_rt, g.change < -fee_rt  # [n] bool
    scored = up | down
    long, short = np.isin(g.actions, LONG_ACTIONS), np.isin(g.actions, SHORT_ACTIONS)
    mom = momentum_actions(g)
    mom_long, mom_short = np.isin(mom, LONG_ACTIONS), np.isin(mom, SHORT_ACTIONS)
    c_up, c_down, c_scored = cols.add(up), cols.add(down), cols.add(scored)
    c_hit_up, c_hit_down = cols.add(long & up), cols.add(short & down)
    c_long_scored, c_short_scored = cols.add(long & scored), cols.add(short & scored)
    c_long, c_short, c_calls = cols.add(long), cols.add(short), cols.add(long | short)

    def random_like(s: np.ndarray, _n: np.ndarray | float) -> np.ndarray:
        # Expected balanced accuracy of calls drawn at the model's frequencies on these rows.
        return ratio(s[..., c_long_scored] + s[..., c_short_scored], s[..., c_scored]) / 2.0

    def precision(s: np.ndarray, _n: np.ndarray | float) -> np.ndarray:
        return ratio(s[..., c_hit_up] + s[..., c_hit_down], s[..., c_calls])

    def base_rate(s: np.ndarray, _n: np.ndarray | float) -> np.ndarray:
        blind = s[..., c_long] * s[..., c_up] + s[..., c_short] * s[..., c_down]
        return ratio(blind, s[..., c_calls] * s[..., ONE])

    momentum = balanced_of(cols.add(mom_long & up), c_up, cols.add(mom_short & down), c_down)
    return [
        Metric(
            "balanced_accuracy",
            c_scored,
            balanced_of(c_hit_up, c_up, c_hit_down, c_down),
            {"momentum": momentum, "random_like": random_like},
        ),
        Metric("precision", c_calls, precision, {"base_rate": base_rate}),
        Metric("coverage", ONE, mean_of(c_calls), {}),
    ]


def _confidence_metrics(g: Group, hits: np.ndarray, cols: Columns) -> list[Metric]:
    """brier_skill against the causal base rate, and ece (calibration's 10 bins)."""
    base = causal_base_rate(hits, g.closed)  # [n]
    c_model, c_base = cols.add((g.conf - hits) ** 2), cols.add((base - hits) ** 2)
    bins = bin_index(g.conf, ECE_BINS)  # [n], calibration.reliability's bins
    gaps = [cols.add(np.where(bins == k, hits - g.conf, 0.0)) for k in range(ECE_BINS)]

    def ece(s: np.ndarray, _n: np.ndarray | float) -> np.ndarray:
        return ratio(np.abs(s[..., gaps]).sum(axis=-1), s[..., ONE])

    return [
        Metric("brier_skill", ONE, skill_of(c_model, c_base), {"base_rate": zero}),
        Metric("ece", ONE, ece, {}),
    ]


def _net_pnl(g: Group, actions: np.ndarray) -> np.ndarray:
    """calls.paper_pnl's net P&L in USD of each row's one-candle trade. float [n]."""
    return net_pnl(sides(actions), g.change, g.fee_rate)


def _trade_metrics(g: Group, hits: np.ndarray, cols: Columns) -> list[Metric]:
    """pnl and accuracy, each against always_hold, buy_and_hold and momentum."""
    baselines = {**constant_actions(g), "momentum": momentum_actions(g)}
    pnl = {name: total_of(cols.add(_net_pnl(g, a))) for name, a in baselines.items()}
    accuracy = {
        name: mean_of(cols.add(correctness(a, g.change, g.band)))
        for name, a in baselines.items()
    }
    return [
        Metric("pnl", ONE, total_of(cols.add(_net_pnl(g, g.actions))), pnl),
        Metric("accuracy", ONE, mean_of(cols.add(hits)), accuracy),
    ]


def metrics(g: Group) -> tuple[list[Metric], np.ndarray]:
    """Every score of the group and the per-row column matrix [n, m] they read."""
    cols = Columns(g.n)
    hits = correctness(g.actions, g.change, g.band).astype(np.float64)  # [n]
    found = [
        *_mae_metrics(g, cols),
        *_ic_metrics(g, cols),
        *_direction_metrics(g, cols),
        *_confidence_metrics(g, hits, cols),
        *_trade_metrics(g, hits, cols),
    ]
    order = {name: i for i, name in enumerate(SCORE_NAMES)}
    return sorted(found, key=lambda m: order[m.name]), cols.matrix()
