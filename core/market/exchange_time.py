"""The exchange's clock as seen from here, and market time that never runs backwards.

``ServerTime`` measures the skew (the exchange's server time minus the local clock, ms) with a
public call (ccxt ``fetch_time``), at start and every ``refresh_s`` after; ``now_ms`` is the
local clock plus the skew: the exchange's "now", which backfill windows, gap fills and the
closed-candle cut-off use. A failed measurement keeps the last skew (0 before the first) and is
shown in ``health`` with its reason.

``MonotonicMs`` clamps a time source so that what it returns never goes back (an exchange
restarted with an older clock, a skew corrected downwards): market time stays put until the
source catches up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from core.market.exchange_errors import ExchangeError

log = logging.getLogger(__name__)


class ServerTime:
    """The exchange's time: local clock + measured skew. ``measure()`` returns the skew in ms
    (``ExchangeRest.clock_skew_ms``) or raises an ExchangeError; None measures nothing."""

    def __init__(self, measure: Callable[[], int] | None, refresh_s: float,
                 local: Callable[[], float] = time.time):
        self.measure, self.refresh_s, self.local = measure, refresh_s, local
        self.skew_ms = 0
        self.measured = 0  # measurements that worked
        self.measured_at_s: float | None = None  # local time of the last one that worked
        self.error: str | None = None  # why the last attempt failed, None once one works

    def now_ms(self) -> int:
        return int(self.local() * 1000) + self.skew_ms

    def due(self) -> bool:
        return self.measure is not None and (
            self.measured_at_s is None or self.local() - self.measured_at_s >= self.refresh_s)

    def refresh(self) -> None:
        """Measure the skew once; a failure keeps the last one and says why in ``health``."""
        if self.measure is None:
            return
        try:
            skew = int(self.measure())
        except ExchangeError as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:200]
            self.measured_at_s = self.local()  # not again before refresh_s
            log.warning("exchange clock: skew not measured (%s); keeping %d ms", exc,
                        self.skew_ms)
            return
        if self.measured == 0 or abs(skew - self.skew_ms) > 1000:
            log.info("exchange clock: server - local = %d ms", skew)
        self.skew_ms, self.error = skew, None
        self.measured += 1
        self.measured_at_s = self.local()

    def health(self) -> dict[str, Any]:
        age = None if self.measured_at_s is None else max(0.0, self.local() - self.measured_at_s)
        return {"clock_skew_ms": self.skew_ms if self.measured else None,
                "clock_measured_s_ago": age if self.measured else None,
                "clock_error": self.error}


class MonotonicMs:
    """``source()`` clamped so that no call returns less than an earlier one (thread-safe)."""

    def __init__(self, source: Callable[[], int]):
        self.source = source
        self._floor: int | None = None
        self._lock = threading.Lock()

    def __call__(self) -> int:
        now = int(self.source())
        with self._lock:
            if self._floor is None or now > self._floor:
                self._floor = now
            return self._floor
