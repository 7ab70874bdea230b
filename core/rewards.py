"""Rewards, correctness and prediction resolution: pure functions, no I/O.

The reward table is the seed's, applied to the relative change of the close from the price a
prediction was made at (its reference price) to the close of the candle it predicted:

=========================  =====================  ==========================
action                     outcome                base reward
=========================  =====================  ==========================
BUY  (UP)                  change > 0             +10 * change
SELL (DOWN)                change < 0             +10 * |change|
BUY/SELL/UP/DOWN           otherwise (wrong)      -5 * |change|
HOLD                       |change| <= 0.5 %      +0.01
HOLD                       |change| >  0.5 %      -0.01
=========================  =====================  ==========================

and the base reward is multiplied by ``0.5 + confidence``, so a confident call counts up to
three times as much as an unsure one (confidence 1 -> x1.5, confidence 0 -> x0.5).

A flat candle (change == 0) is a *wrong* BUY or SELL: the trade earned nothing, so the
reward is -5 * 0 = 0 and ``action_correct`` is False. HOLD is the only right call on a flat
candle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nn.contract import ACTIONS, DIRECTION_ACTIONS, LONG_ACTIONS, SHORT_ACTIONS, TRADE_ACTIONS

HOLD_BAND = 0.005  # 0.5 %: the seed's HOLD band, kept in the reward table (``reward``)
# The band that decides whether a call was *right* (``action_correct``, every score) scales
# with the timeframe: 1 % for a day, sqrt-time below it, never below the round-trip fee (a
# move a trade cannot pay its fees from is no reason to trade). See ``hold_band``.
HOLD_BAND_1D = 0.01
DAY_MS = 86_400_000
WIN_SCALE = 10.0
LOSS_SCALE = 5.0
HOLD_REWARD = 0.01
# Slack on the HOLD band for binary rounding: 100 -> 100.5 gives 0.0050000000000000044, which
# is "exactly 0.5 %" to a trader. 1e-12 of a price is far below any exchange's tick size.
BAND_SLACK = 1e-12


def _finite(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _positive(name: str, value: float) -> float:
    number = _finite(name, value)
    if number <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def _confidence(value: float) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise ValueError(f"confidence must be within [0, 1], got {value!r}")
    return number


def price_change(entry: float, exit: float) -> float:
    """Relative change from entry to exit: exit / entry - 1 (0.01 is +1 %)."""
    return _finite("exit", exit) / _positive("entry", entry) - 1.0


def hold_band(timeframe_ms: int, fee_rate: float) -> float:
    """The HOLD band of a timeframe: max(2 * fee_rate, HOLD_BAND_1D * sqrt(tf / 1 day)).

    Typical moves grow with the square root of time, so one fixed 0.5 % made HOLD right on
    every 1s candle and wrong on most days. With the 0.1 % fee: 1d 1 %, 4h 0.41 %, 1h 0.2 %
    (the round-trip fee, as for 1m and 1s)."""
    tf = int(timeframe_ms)
    if tf <= 0:
        raise ValueError(f"timeframe_ms must be > 0, got {timeframe_ms!r}")
    fee = float(fee_rate)
    if not (math.isfinite(fee) and 0 <= fee < 0.5):
        raise ValueError(f"fee_rate must be a number in [0, 0.5), got {fee_rate!r}")
    return max(2.0 * fee, HOLD_BAND_1D * math.sqrt(tf / DAY_MS))


def action_correct(action: str, change: float, hold_band: float = HOLD_BAND) -> bool:
    """Whether ``action`` was right about a close that moved by ``change``.

    BUY/UP iff change > 0, SELL/DOWN iff change < 0, HOLD iff |change| <= hold_band; this is
    exactly when the action's reward is positive (a flat BUY/SELL scores 0 and is wrong).
    """
    change = _finite("change", change)
    if action in LONG_ACTIONS:
        return change > 0
    if action in SHORT_ACTIONS:
        return change < 0
    if action == "HOLD":
        return abs(change) <= hold_band + BAND_SLACK
    raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")


def _base_reward(action: str, change: float, correct: bool) -> float:
    """The table's reward of ``action`` on a close that moved by ``change``, given whether
    the action was right (``action_correct``)."""
    if action == "HOLD":
        return HOLD_REWARD if correct else -HOLD_REWARD
    return WIN_SCALE * abs(change) if correct else -LOSS_SCALE * abs(change)


def trade_reward(
    action: str, change: float, confidence: float, hold_band: float = HOLD_BAND
) -> float:
    """The seed's reward for BUY/SELL/HOLD (see the module's table), times 0.5 + confidence."""
    if action not in TRADE_ACTIONS:
        raise ValueError(f"trade action must be one of {', '.join(TRADE_ACTIONS)}, got {action!r}")
    change = _finite("change", change)
    correct = action_correct(action, change, hold_band)
    return _base_reward(action, change, correct) * (0.5 + _confidence(confidence))


def direction_reward(action: str, change: float, confidence: float) -> float:
    """The order-book model's reward: UP scores like BUY, DOWN like SELL."""
    if action not in DIRECTION_ACTIONS:
        raise ValueError(
            f"direction action must be one of {', '.join(DIRECTION_ACTIONS)}, got {action!r}"
        )
    change = _finite("change", change)
    correct = action_correct(action, change)
    return _base_reward(action, change, correct) * (0.5 + _confidence(confidence))


def reward(action: str, change: float, confidence: float, hold_band: float = HOLD_BAND) -> float:
    """``trade_reward`` or ``direction_reward``, whichever kind ``action`` is."""
    if action in DIRECTION_ACTIONS:
        return direction_reward(action, change, confidence)
    return trade_reward(action, change, confidence, hold_band)


# --------------------------------------------------------------------------- OHLCV forms


def _ohlcv(candle: Any) -> tuple[float, float, float, float, float]:
    """(open, high, low, close, volume) of a Candle-like object or a 5-sequence."""
    if hasattr(candle, "close"):
        values = (candle.open, candle.high, candle.low, candle.close, candle.volume)
    else:
        values = tuple(candle)
        if len(values) != 5:
            raise ValueError(
                f"an OHLCV needs 5 values (open, high, low, close, volume), got {len(values)}"
            )
    numbers = tuple(map(float, values))
    if not all(map(math.isfinite, numbers)):  # say which one
        for name, v in zip(("open", "high", "low", "close", "volume"), values):
            _finite(name, v)
    return numbers  # type: ignore[return-value]


def relative_ohlcv(reference_close: float, candle_ohlcv: Any) -> np.ndarray:
    """A candle as the regression target: [o, h, l, c] / reference_close - 1, log1p(volume).

    ``candle_ohlcv`` is a Candle or (open, high, low, close, volume). Returns float64 [5].
    """
    ref = _positive("reference_close", reference_close)
    o, h, lo, c, v = _ohlcv(candle_ohlcv)
    if v < 0:
        raise ValueError(f"volume must be >= 0, got {v!r}")
    return np.array([o / ref - 1.0, h / ref - 1.0, lo / ref - 1.0, c / ref - 1.0, math.log1p(v)])


def absolute_ohlcv(reference_close: float, rel: Sequence[float] | np.ndarray) -> tuple[float, ...]:
    """Inverse of :func:`relative_ohlcv`: (open, high, low, close, volume) in price units.

    A model's output is not bound to log1p(volume) >= 0, so the volume is floored at 0: no
    candle trades a negative amount."""
    ref = _positive("reference_close", reference_close)
    values = np.asarray(rel, dtype=np.float64).reshape(-1).tolist()  # Python floats
    if len(values) != 5:
        raise ValueError(f"a relative OHLCV needs 5 values, got {len(values)}")
    if not all(map(math.isfinite, values)):  # say which one
        for name, x in zip(("open", "high", "low", "close", "volume"), values):
            _finite(f"relative {name}", x)
    prices = tuple(ref * (1.0 + x) for x in values[:4])
    return (*prices, max(0.0, math.expm1(values[4])))


# --------------------------------------------------------------------------- resolution


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the closed candle says about one prediction (the store's resolved columns)."""

    actual_open: float
    actual_high: float
    actual_low: float
    actual_close: float
    actual_volume: float
    change: float  # actual close / reference price - 1
    price_error: float | None  # |predicted close - actual close| / actual close
    volume_error: float | None  # |predicted volume - actual volume| / actual volume
    action_correct: bool
    reward: float

    @property
    def actual_ohlcv(self) -> tuple[float, float, float, float, float]:
        return (
            self.actual_open,
            self.actual_high,
            self.actual_low,
            self.actual_close,
            self.actual_volume,
        )


def _forecast_errors(predicted_ohlcv: Any, close: float,
                     volume: float) -> tuple[float | None, float | None]:
    """(price_error, volume_error) of a predicted candle against the actual close and volume
    (see ``resolve``); (None, None) without a prediction."""
    if predicted_ohlcv is None:
        return None, None
    _, _, _, pc, pv = _ohlcv(predicted_ohlcv)
    if volume > 0:
        volume_error = abs(pv - volume) / volume
    else:
        volume_error = 0.0 if pv == 0 else None
    return abs(pc - close) / close, volume_error


def resolve(
    action: str,
    confidence: float,
    reference_price: float,
    predicted_ohlcv: Any,
    actual: Any,
    hold_band: float = HOLD_BAND,
) -> Resolution:
    """Resolve a prediction against the candle it predicted.

    ``predicted_ohlcv`` is the predicted candle in price units (o, h, l, c, v) or None;
    ``actual`` is a Candle or (o, h, l, c, v). ``change`` is measured from the reference
    price (the last close when the prediction was made) to the actual close.

    Errors are None without a predicted candle. ``volume_error`` is relative to the actual
    volume, which can be 0 on quiet 1s candles: then it is 0 if the prediction was 0 too and
    None (undefined) otherwise, never inf.

    ``action_correct`` uses ``hold_band`` (the timeframe's band, ``hold_band()``, in the live
    loop); the reward is the seed's table with its own fixed 0.5 % HOLD band, which the DQN
    learns from unchanged. So on a 1h candle that moved 0.3 % a HOLD is wrong (beyond the
    0.2 % band) and still earns the table's +0.01: the two answer different questions (was
    the call right after fees; what did the seed's agent get paid).
    """
    o, h, lo, c, v = _ohlcv(actual)
    if c <= 0 or v < 0:
        raise ValueError(
            f"actual candle needs close > 0 and volume >= 0, got close {c!r}, volume {v!r}"
        )
    change = c / _positive("reference_price", reference_price) - 1.0  # c: finite and > 0
    price_error, volume_error = _forecast_errors(predicted_ohlcv, c, v)
    correct = action_correct(action, change, hold_band)  # raises on an unknown action
    return Resolution(
        actual_open=o,
        actual_high=h,
        actual_low=lo,
        actual_close=c,
        actual_volume=v,
        change=change,
        price_error=price_error,
        volume_error=volume_error,
        action_correct=correct,
        reward=reward(action, change, confidence),  # the seed's table, its 0.5 % band
    )


def resolve_prediction(pred: Any, actual: Any, hold_band: float = HOLD_BAND) -> Resolution:
    """:func:`resolve` for a mapping or an object (e.g. ``core.predictions.PendingPrediction``)
    with ``action``, ``confidence``, ``reference_price`` and ``predicted_ohlcv`` (optional)."""

    def get(name: str) -> Any:
        return pred.get(name) if isinstance(pred, Mapping) else getattr(pred, name, None)

    return resolve(
        get("action"),
        get("confidence"),
        get("reference_price"),
        get("predicted_ohlcv"),
        actual,
        hold_band,
    )
