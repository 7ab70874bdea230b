"""One (model, symbol, timeframe)'s resolved predictions as the scores read them: validated,
sorted by target_ts (then created_ts, id) and held as arrays (``Group``), with the two causal
indices every baseline needs: which row is the previous candle's, and how many rows had
closed when a row was predicted.

For the rows i of a group, ``change_i = actual_close_i / reference_price_i - 1`` (a fraction:
0.01 is +1 %), and ``band = rewards.hold_band(tf_ms, fee_rate)``, the timeframe's HOLD band,
which decides whether a call was right (``rewards.action_correct``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core import rewards
from core.timeframes import parse_timeframe
from nn.contract import ACTIONS, DIRECTION_ACTIONS

REQUIRED = (
    "model", "symbol", "timeframe", "created_ts", "target_ts", "reference_price", "action",
    "confidence", "actual_high", "actual_low", "actual_close",
)  # fmt: skip
FORECAST = ("pred_high", "pred_low", "pred_close")  # optional: NaN/None without a forecast


@dataclass(frozen=True)
class Group:
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
        return set(self.actions.tolist()) <= set(DIRECTION_ACTIONS)


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
    missing = [c for c in REQUIRED if c not in rows.columns]
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
    bad = sorted({str(a) for a in rows["action"].unique() if a not in ACTIONS})
    if bad:
        raise ValueError(f"unknown action(s) {', '.join(bad)}; use {', '.join(ACTIONS)}")


def prepare(rows: pd.DataFrame, timeframe: str, fee_rate: float) -> Group:
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
    pred = {name: _column(rows, name, optional=True) for name in FORECAST}
    return Group(
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
