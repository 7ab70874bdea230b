"""Small helpers every exchange stream shares: order-book levels off the wire, reconnect delays."""

from __future__ import annotations

import math
import random
from typing import Any


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
