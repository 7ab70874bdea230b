"""Honest evaluation of resolved predictions: accuracy, reward, calibration, paper P&L and the
baselines a model has to beat on the same candles. Pure functions (numpy/pandas), no I/O.

Every metric is measured on one set of rows: the resolved predictions of one (model, symbol,
timeframe), each with the price it was made at (``reference_price``) and the close of the candle
it predicted (``actual_close``). A row's *change* is ``actual_close / reference_price - 1``,
exactly as :mod:`core.rewards` defines it, and correctness and reward are
:func:`core.rewards.action_correct` and :func:`core.rewards.reward` of that change, so the
numbers here agree with the store's ``action_correct`` and ``reward`` columns.

Baselines take the model's place on the same rows:

==============  ===================================================  ==========
baseline        action                                               confidence
==============  ===================================================  ==========
always_hold     HOLD                                                 0.5
buy_and_hold    BUY                                                  0.5
momentum        sign of the previous candle's change (HOLD if 0 or   0.5
                unknown, e.g. the first row)
random_like     drawn with the model's own action frequencies        model mean
==============  ===================================================  ==========

A direction model (the order-book model: UP/DOWN only, never HOLD) faces the baselines in its
own terms: buy-and-hold says UP, momentum UP or DOWN (UP when the previous candle was flat or
unknown: no information, the long side, as buy-and-hold), random draws UP/DOWN with its
frequencies; always-HOLD is not applicable (a model that cannot say HOLD is not beaten by one
that always does on flat 1s candles), so its figures are NaN and it is never the best baseline.

Confidence only scales the reward (x ``0.5 + confidence``) and sets calibration. 0.5 is the
reward table's neutral x1.0 and says "no idea"; a baseline has no confidence of its own, so its
ECE is just ``|accuracy - 0.5|``. The random baseline borrows the model's mean confidence so
that its reward differs from the model's only by which actions were taken.

The verdict compares the model's accuracy with the best baseline's (by accuracy) through a
**paired bootstrap over rows**: see :func:`paired_bootstrap_ci` for what it does and does not
account for.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from core.rewards import ACTIONS, HOLD_BAND, action_correct, price_change, reward
from core.timeframes import parse_timeframe

BASELINES = ("always_hold", "buy_and_hold", "momentum", "random_like")
BASELINE_CONFIDENCE = 0.5  # neutral: x1.0 in the reward table, "no idea" for calibration
BOOTSTRAP_RESAMPLES = 1000
MIN_ROWS_FOR_VERDICT = 30  # below this a percentile bootstrap is too narrow to trust
# Slack when binning confidences: 0.57 * 100 is 56.99999999999999 in binary, and a confidence
# written as a bin edge belongs to the bin that starts there.
_BIN_SLACK = 1e-9
_LONG = ("BUY", "UP")  # UP/DOWN (the order-book model) trade like BUY/SELL
_SHORT = ("SELL", "DOWN")
_REQUIRED_COLUMNS = (
    "model", "symbol", "timeframe", "created_ts", "target_ts", "reference_price", "action",
    "confidence", "actual_close",
)  # fmt: skip


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


def directional_accuracy(
    actions: Sequence[str] | np.ndarray, changes: Any, hold_band: float = HOLD_BAND
) -> float:
    """Share of rows whose action was right: BUY/UP iff change > 0, SELL/DOWN iff change < 0,
    HOLD iff |change| <= hold_band (so a flat candle is a wrong BUY and a right HOLD)."""
    return float(correctness(actions, changes, hold_band).mean())


def mean_reward(
    actions: Sequence[str] | np.ndarray,
    confidences: Any,
    changes: Any,
    hold_band: float = HOLD_BAND,
) -> float:
    """Mean of the seed's reward (trade_reward for BUY/SELL/HOLD, direction_reward for UP/DOWN)."""
    actions = _actions(actions)
    confidences = _confidences(confidences, len(actions))
    changes = _floats("changes", changes, len(actions))
    rewards = [reward(a, c, p, hold_band) for a, c, p in zip(actions, changes, confidences)]
    return float(np.mean(rewards))


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


def buy_and_hold(n: int) -> Baseline:
    """BUY on every one of n rows, confidence 0.5 (a long held through every candle)."""
    return _constant("BUY", n)


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


def random_like(
    model_actions: Sequence[str] | np.ndarray,
    rng: np.random.Generator | int,
    confidence: float = BASELINE_CONFIDENCE,
) -> Baseline:
    """As many actions as the model made, drawn independently with the model's own action
    frequencies (a model that says BUY 70 % of the time faces a 70 % BUY coin). ``rng`` is a
    Generator or a seed; ``compare`` passes the model's mean confidence as ``confidence``."""
    actions = _actions(model_actions)
    confidence = float(confidence)
    if not 0.0 <= confidence <= 1.0:  # also rejects NaN
        raise ValueError(f"confidence must be within [0, 1], got {confidence!r}")
    values, counts = np.unique(actions.astype(str), return_counts=True)
    drawn = np.random.default_rng(rng).choice(values, size=len(actions), p=counts / counts.sum())
    return Baseline(drawn.astype(object), np.full(len(actions), confidence))


def previous_changes(
    target_ts: Any, created_ts: Any, changes: Any, timeframe_ms: int
) -> np.ndarray:
    """For each row, the change of the candle just before the one it predicted, NaN if unknown.

    The previous candle opens at target_ts - timeframe_ms and closes at target_ts. It counts only
    if it was among the rows and had closed when the prediction was made (created_ts >=
    target_ts), so momentum never sees the future. If several rows predicted that candle, the
    last one given wins. float [n].
    """
    changes = np.asarray(changes, dtype=np.float64).reshape(-1)
    target = np.asarray(target_ts, dtype=np.int64).reshape(-1)
    created = np.asarray(created_ts, dtype=np.int64).reshape(-1)
    if not len(changes) == len(target) == len(created):
        raise ValueError("target_ts, created_ts and changes must have one value per row")
    by_candle = dict(zip(target.tolist(), changes.tolist()))
    return np.array(
        [
            by_candle.get(t - timeframe_ms, math.nan) if c >= t else math.nan
            for t, c in zip(target.tolist(), created.tolist())
        ],
        dtype=np.float64,
    )


# --------------------------------------------------------------------------- comparison


def score(
    actions: Sequence[str] | np.ndarray,
    confidences: Any,
    reference_prices: Any,
    next_prices: Any,
    fee_rate: float,
    size_usd: float = 1000.0,
    bins: int = 10,
    hold_band: float = HOLD_BAND,
) -> dict[str, float]:
    """accuracy, mean_reward, ece, pnl, pnl_per_trade, trades and wins of one set of calls."""
    actions = _actions(actions)
    ref = _positive("reference_prices", reference_prices, len(actions))
    nxt = _positive("next_prices", next_prices, len(actions))
    changes = nxt / ref - 1.0
    correct = correctness(actions, changes, hold_band)
    pnl = paper_pnl(actions, ref, nxt, fee_rate, size_usd)
    return {
        "accuracy": float(correct.mean()),
        "mean_reward": mean_reward(actions, confidences, changes, hold_band),
        "ece": expected_calibration_error(confidences, correct, bins),
        "pnl": pnl["total"],
        "pnl_per_trade": pnl["per_trade"],
        "trades": pnl["trades"],
        "wins": pnl["wins"],
    }


def paired_bootstrap_ci(
    model_correct: Any,
    baseline_correct: Any,
    rng: np.random.Generator | int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(difference, low, high): model accuracy - baseline accuracy and its percentile CI.

    Paired bootstrap over rows: resample the n rows with replacement, keeping each row's two
    indicators together, and take the mean of d = model_correct - baseline_correct. d is -1, 0
    or +1, so a resample's mean depends only on how many of each it drew, and those counts are
    one multinomial(n, observed shares) draw: exactly the row bootstrap's distribution, in
    [resamples, 3] memory instead of [resamples, n].

    Rows are treated as independent. Consecutive candles are not quite (a model that is right in
    a trend stays right), so with autocorrelated errors this interval is too narrow; a block
    bootstrap would widen it.
    """
    m = _correct(model_correct)
    b = _correct(baseline_correct)
    if len(m) != len(b):
        raise ValueError(f"model_correct has {len(m)} rows, baseline_correct {len(b)}")
    d = m.astype(int) - b.astype(int)  # [n], in {-1, 0, 1}
    n = len(d)
    shares = np.array([(d == -1).mean(), (d == 0).mean(), (d == 1).mean()])
    counts = np.random.default_rng(rng).multinomial(n, shares, size=resamples)  # [R, 3]
    means = (counts[:, 2] - counts[:, 0]) / n  # [R]
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(d.mean()), float(low), float(high)


def verdict(low: float, high: float, baseline: str) -> str:
    """'better than X' iff the CI is above 0, 'worse than X' iff below, else indistinguishable."""
    if low > 0:
        return f"better than {baseline}"
    if high < 0:
        return f"worse than {baseline}"
    return f"not distinguishable from {baseline}"


def _group_rng(seed: int, key: tuple[str, str, str]) -> np.random.Generator:
    # Seeded per group, so one group's numbers do not change when other groups come and go.
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(key).encode())])


def _resolved_rows(model_rows: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _REQUIRED_COLUMNS if c not in model_rows.columns]
    if missing:
        raise ValueError(f"model_rows lacks the column(s) {', '.join(missing)}")
    rows = model_rows
    if "status" in rows.columns:
        rows = rows[rows["status"] == "resolved"]
    rows = rows[rows["actual_close"].notna()]
    if rows.empty:
        raise ValueError("model_rows has no resolved predictions to evaluate")
    order = ["target_ts", "created_ts"] + (["id"] if "id" in rows.columns else [])
    return rows.sort_values(order, kind="stable")


def _evaluate_group(
    key: tuple[str, str, str],
    rows: pd.DataFrame,
    fee_rate: float,
    seed: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    rng = _group_rng(seed, key)
    actions = _actions(rows["action"].to_numpy())
    confidences = _confidences(rows["confidence"].to_numpy(), len(actions))
    ref = _positive("reference_price", rows["reference_price"].to_numpy(), len(actions))
    nxt = _positive("actual_close", rows["actual_close"].to_numpy(), len(actions))
    changes = np.array([price_change(r, c) for r, c in zip(ref, nxt)])
    prev = previous_changes(
        rows["target_ts"].to_numpy(), rows["created_ts"].to_numpy(), changes,
        parse_timeframe(key[2]),
    )  # fmt: skip
    baselines = {
        "always_hold": always_hold(len(actions)),
        "buy_and_hold": buy_and_hold(len(actions)),
        "momentum": momentum(prev),
        "random_like": random_like(actions, rng, float(confidences.mean())),
    }
    if set(actions.tolist()) <= {"UP", "DOWN"}:  # a direction model: see the module doc
        del baselines["always_hold"]
        baselines = {name: as_direction(b) for name, b in baselines.items()}
    scoring = {k: options[k] for k in ("size_usd", "bins", "hold_band")}
    out: dict[str, Any] = dict(zip(("model", "symbol", "timeframe"), key))
    out["n"] = len(actions)
    mine = score(actions, confidences, ref, nxt, fee_rate, **scoring)
    out.update(mine)
    for name in BASELINES:
        if name not in baselines:  # not applicable to this model: NaN, never the best
            out.update({f"{name}_{metric}": math.nan for metric in mine})
            continue
        b_actions, b_conf = baselines[name]
        for metric, value in score(b_actions, b_conf, ref, nxt, fee_rate, **scoring).items():
            out[f"{name}_{metric}"] = value
    best = max(baselines, key=lambda name: out[f"{name}_accuracy"])  # ties: first listed
    diff, low, high = paired_bootstrap_ci(
        correctness(actions, changes, options["hold_band"]),
        correctness(baselines[best].actions, changes, options["hold_band"]),
        rng,
        options["resamples"],
    )
    out.update(best_baseline=best, accuracy_diff=diff, ci_low=low, ci_high=high)
    if len(actions) < options["min_rows"]:
        out["verdict"] = f"too few rows ({len(actions)} < {options['min_rows']})"
    else:
        out["verdict"] = verdict(low, high, best)
    return out


def compare(
    model_rows: pd.DataFrame,
    fee_rate: float,
    seed: int,
    *,
    size_usd: float = 1000.0,
    bins: int = 10,
    hold_band: float = HOLD_BAND,
    resamples: int = BOOTSTRAP_RESAMPLES,
    min_rows: int = MIN_ROWS_FOR_VERDICT,
) -> pd.DataFrame:
    """One row per (model, symbol, timeframe): the model against every baseline on its candles.

    ``model_rows`` holds predictions as ``PredictionStore.recent`` lists them; only resolved ones
    (status 'resolved' and an actual close) count, ordered by target_ts. Columns:

    - model, symbol, timeframe, n;
    - the model's accuracy, mean_reward, ece, pnl, pnl_per_trade, trades, wins (see ``score``;
      correctness is recomputed from prices with ``hold_band``, like the baselines');
    - the same prefixed by each baseline's name, e.g. momentum_accuracy, random_like_pnl;
    - best_baseline (highest accuracy; ties go to the first in BASELINES);
    - accuracy_diff (model - best baseline) and its 95 % paired-bootstrap CI ci_low, ci_high;
    - verdict: 'better than X' / 'worse than X' / 'not distinguishable from X' from the CI, or
      'too few rows (n < min_rows)' where a bootstrap of so few rows is not worth trusting.

    The best baseline is picked on the same rows it is then tested on, which favours it: a
    "better than" verdict is conservative, a "worse than" one slightly optimistic. ``seed`` fixes
    the random baseline's draws and the bootstrap, per group.
    """
    rows = _resolved_rows(model_rows)
    options = {
        "size_usd": size_usd, "bins": bins, "hold_band": hold_band, "resamples": resamples,
        "min_rows": min_rows,
    }  # fmt: skip
    records = [
        _evaluate_group(tuple(str(k) for k in key), group, fee_rate, seed, options)
        for key, group in rows.groupby(["model", "symbol", "timeframe"], sort=True)
    ]
    return pd.DataFrame.from_records(records)
