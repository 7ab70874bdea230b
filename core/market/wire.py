"""Small helpers every exchange stream shares: fields and order-book levels off the wire,
reconnect delays."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any


def field(obj: Mapping[str, Any], key: str, what: str) -> Any:
    """``obj[key]``, or ValueError naming what lacks it."""
    try:
        return obj[key]
    except (KeyError, TypeError):
        raise ValueError(f"{what} has no field {key!r}") from None


def number(obj: Mapping[str, Any], key: str, what: str) -> float:
    """A finite number (exchanges send them as strings or numbers; booleans are refused)."""
    raw = field(obj, key, what)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{what} field {key!r} is not a number: {raw!r}") from None
    if not math.isfinite(value) or isinstance(raw, bool):
        raise ValueError(f"{what} field {key!r} is not a finite number: {raw!r}")
    return value


def whole_ms(obj: Mapping[str, Any], key: str, what: str) -> int:
    """A timestamp or id: a whole, non-negative number (UTC ms for times)."""
    value = number(obj, key, what)
    if not value.is_integer() or value < 0:
        raise ValueError(f"{what} field {key!r} is not whole milliseconds: {obj[key]!r}")
    return int(value)


def candle_row(row: Any) -> list:
    """A REST OHLCV row -> [int ts, o, h, l, c, v] floats. Raises ValueError."""
    if not isinstance(row, (list, tuple)) or len(row) < 6:
        raise ValueError(f"expected [ts, open, high, low, close, volume], got {row!r}")
    values = dict(zip("tohlcv", row[:6], strict=True))
    return [whole_ms(values, "t", "row")] + [number(values, key, "row") for key in "ohlcv"]


def parse_levels(levels: Any, side: str,
                 error: type[ValueError] = ValueError) -> list[tuple[float, float]]:
    """[[price, size], ...] (strings or numbers; extra columns ignored) -> [(price, size)].

    Raises ``error`` (a ValueError subclass of the caller's choice) naming the bad level."""
    if not isinstance(levels, (list, tuple)):
        raise error(f"{side} levels are not a list of [price, size]: {levels!r}")
    out = []
    for level in levels:
        try:
            price, size = float(level[0]), float(level[1])
        except (TypeError, ValueError, IndexError, KeyError):
            raise error(f"{side} level {level!r} is not [price, size]") from None
        if not (math.isfinite(price) and math.isfinite(size)) or price <= 0 or size < 0:
            raise error(f"{side} level {level!r} needs price > 0 and size >= 0")
        out.append((price, size))
    return out


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max_s, initial_s * 2**attempt)] seconds."""
    return rng.uniform(0.0, min(max_s, initial_s * 2.0 ** min(attempt, 60)))
