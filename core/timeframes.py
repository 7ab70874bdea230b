"""Timeframe names ('1s', '1m', '1h', '1d') and bucket arithmetic, all in UTC milliseconds."""

from __future__ import annotations

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_timeframe(name: str) -> int:
    """'30m' -> 1_800_000. Raises ValueError naming the allowed form."""
    text = str(name).strip()
    unit = text[-1:]
    count = text[:-1]
    if unit not in _UNIT_MS or not count.isdigit() or int(count) <= 0:
        raise ValueError(f"{name!r} is not a timeframe; use a positive count and a unit s, m, h or d (e.g. 1s, 1m, 1h, 1d)")
    return int(count) * _UNIT_MS[unit]


def bucket_start(ts_ms: int, tf_ms: int) -> int:
    """Open time of the candle of length tf_ms containing ts_ms. Days start at 00:00 UTC."""
    return ts_ms - ts_ms % tf_ms
