"""Timeframe names ('1s', '1m', '1h', '1d') and bucket arithmetic, all in UTC milliseconds."""

from __future__ import annotations

from nn.contract import parse_timeframe  # noqa: F401 - the one definition, shared with nn


def bucket_start(ts_ms: int, tf_ms: int) -> int:
    """Open time of the candle of length tf_ms containing ts_ms. Days start at 00:00 UTC."""
    return ts_ms - ts_ms % tf_ms
