"""Rows of the prediction store: a prediction as a model makes it (``NewPrediction``,
validated on construction), one still waiting for its candle (``PendingPrediction``, with the
state it was made from), a resolution as the flush writes it, and a row as a read lists it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from core.predictions.schema import LISTED_COLUMNS
from core.predictions.states import decode_state
from core.predictions.status import PENDING
from core.rewards import Resolution
from core.timeframes import parse_timeframe
from nn.contract import ACTIONS

NO_OUTCOME = (None,) * 9  # actual_open .. reward of a row not resolved


def text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def integer(name: str, value: Any, minimum: int | None = None) -> int:
    if type(value) is not int:  # a plain int is the usual case (bool is a subclass: refused)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def timeframe_name(value: Any) -> str:
    return _parsed_timeframe(text("timeframe", value))


@lru_cache(maxsize=64)  # a handful of names, checked on every row
def _parsed_timeframe(name: str) -> str:
    parse_timeframe(name)  # raises ValueError saying what is allowed (not cached)
    return name


@dataclass(frozen=True)
class NewPrediction:
    """A prediction as a model makes it; validated on construction (bad value -> ValueError)."""

    model: str
    model_step: int  # the model's train_steps when it predicted
    symbol: str
    timeframe: str
    created_ts: int  # market time, UTC ms
    target_ts: int  # open time of the predicted candle, UTC ms
    reference_price: float  # last close when predicted
    action: str  # BUY/SELL/HOLD, or UP/DOWN for the order-book model
    confidence: float  # 0..1
    # Predicted candle in price units (core.rewards.absolute_ohlcv of the model's output).
    predicted_ohlcv: tuple[float, float, float, float, float] | None = None
    state: np.ndarray | None = None  # what the model predicted from, to train on later
    executed: bool = False  # a paper trade was executed from it
    stale: bool = False  # the model was STALE when it predicted (core/live/control.py)

    def __post_init__(self) -> None:
        if self._canonical():
            return  # already as the store keeps it (the cycle's rows): nothing to convert
        text("model", self.model)
        text("symbol", self.symbol)
        timeframe_name(self.timeframe)
        for name, minimum in (("model_step", 0), ("created_ts", None), ("target_ts", None)):
            object.__setattr__(self, name, integer(name, getattr(self, name), minimum))
        price = float(self.reference_price)
        if not (math.isfinite(price) and price > 0):
            raise ValueError(
                f"reference_price must be a finite number > 0, got {self.reference_price!r}"
            )
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        confidence = float(self.confidence)
        if not 0.0 <= confidence <= 1.0:  # also rejects NaN
            raise ValueError(f"confidence must be within [0, 1], got {self.confidence!r}")
        object.__setattr__(self, "reference_price", price)
        object.__setattr__(self, "confidence", confidence)
        if self.predicted_ohlcv is not None:
            values = tuple(np.asarray(self.predicted_ohlcv, dtype=np.float64).reshape(-1).tolist())
            if len(values) != 5 or not all(math.isfinite(x) for x in values):
                raise ValueError(
                    f"predicted_ohlcv must be 5 finite numbers (o, h, l, c, v) or None, got {self.predicted_ohlcv!r}"
                )
            object.__setattr__(self, "predicted_ohlcv", values)
        if self.state is not None and not isinstance(self.state, np.ndarray):
            raise ValueError(
                f"state must be a numpy array or None, got {type(self.state).__name__}"
            )
        if not isinstance(self.executed, bool | np.bool_):
            raise ValueError(f"executed must be True or False, got {self.executed!r}")
        if not isinstance(self.stale, bool | np.bool_):
            raise ValueError(f"stale must be True or False, got {self.stale!r}")

    def _canonical(self) -> bool:
        """Whether every field already has the type and range the checks below would give it
        (one expression; any doubt goes through the checks, which say what is wrong)."""
        ohlcv = self.predicted_ohlcv
        return (type(self.model) is str and self.model != "" and type(self.symbol) is str
                and self.symbol != "" and type(self.timeframe) is str
                and _parsed_timeframe(self.timeframe) is not None
                and type(self.model_step) is int and self.model_step >= 0
                and type(self.created_ts) is int and type(self.target_ts) is int
                and type(self.reference_price) is float and 0.0 < self.reference_price < math.inf
                and self.action in ACTIONS
                and type(self.confidence) is float and 0.0 <= self.confidence <= 1.0
                and (ohlcv is None or (type(ohlcv) is tuple and len(ohlcv) == 5
                                       and all(type(x) is float and math.isfinite(x)
                                               for x in ohlcv)))
                and (self.state is None or type(self.state) is np.ndarray)
                and type(self.executed) is bool and type(self.stale) is bool)

    def row(self) -> tuple:
        pred = self.predicted_ohlcv or (None,) * 5
        return (
            self.model, self.model_step, self.symbol, self.timeframe, self.created_ts,
            self.target_ts, self.reference_price, self.action, self.confidence, *pred,
            None, int(bool(self.executed)),  # the state stays in memory (see core.predictions)
            int(bool(self.stale)),
        )  # fmt: skip


@dataclass(frozen=True)
class PendingPrediction:
    """A stored prediction still waiting for its candle, with the state it was made from (to
    train on once resolved; None if the model stored none). ``state`` is left out of ==."""

    id: int
    model: str
    model_step: int
    symbol: str
    timeframe: str
    created_ts: int
    target_ts: int
    reference_price: float
    action: str
    confidence: float
    predicted_ohlcv: tuple[float, float, float, float, float] | None
    executed: bool
    state: np.ndarray | None = field(default=None, compare=False, repr=False)
    stale: bool = False

    @classmethod
    def from_row(cls, row: Sequence) -> PendingPrediction:
        pred = tuple(row[10:15])
        return cls(
            *row[:10],
            predicted_ohlcv=None if pred[3] is None else pred,  # type: ignore[arg-type]
            executed=bool(row[15]),
            state=decode_state(row[16]),
            stale=bool(row[17]),
        )

    def listed(self, status: str = PENDING, outcome: Sequence = NO_OUTCOME,
               resolved_ts: int | None = None) -> dict:
        """This prediction as a read lists it once the flush has written what happened to
        it: ``status``, and ``outcome`` (actual_open .. reward, as ``resolution_row`` gives
        them) and ``resolved_ts`` once resolved or expired."""
        pred = self.predicted_ohlcv or (None,) * 5
        return listed((
            self.id, self.model, self.model_step, self.symbol, self.timeframe, self.created_ts,
            self.target_ts, self.reference_price, self.action, self.confidence, *pred,
            self.executed, *outcome, status, resolved_ts, self.stale,
        ))  # fmt: skip


def resolution_row(resolution: Resolution, resolved_ts: int, pred_id: int) -> tuple:
    """A resolution as the flush's UPDATE takes it: actual_open .. reward (the outcome, with
    ``action_correct`` as 0 or 1), resolved_ts, id."""
    r = resolution
    if r.action_correct not in (0, 1):  # True and False are 0 and 1
        raise ValueError(f"action_correct must be True or False, got {r.action_correct!r} "
                         f"(id {pred_id})")
    return (
        r.actual_open, r.actual_high, r.actual_low, r.actual_close, r.actual_volume,
        r.price_error, r.volume_error, int(r.action_correct), r.reward, resolved_ts, pred_id,
    )  # fmt: skip


def listed(row: Sequence) -> dict:
    """A row of LISTED_COLUMNS as a read returns it: a dict, ``executed`` and
    ``action_correct`` as bools (the latter None until resolved)."""
    item = dict(zip(LISTED_COLUMNS, row))
    item["executed"] = bool(item["executed"])
    item["stale"] = bool(item["stale"])
    if item["action_correct"] is not None:
        item["action_correct"] = bool(item["action_correct"])
    return item
