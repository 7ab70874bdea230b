"""Market time. Everything reads time from a clock, never from datetime.now() directly.

WallClock is the live exchange's time; ReplayClock runs market time at ``speed`` market seconds
per wall second from a chosen start, so the same code replays history fast.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    speed: float

    def now_ms(self) -> int: ...


class WallClock:
    """UTC wall time in milliseconds; speed is 1."""

    speed = 1.0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ReplayClock:
    """Market time = start + wall time elapsed x speed. Changing speed keeps time continuous."""

    def __init__(self, start_ms: int, speed: float, monotonic=time.monotonic,
                 paused: bool = False):
        if speed <= 0:
            raise ValueError(f"clock speed must be > 0, got {speed}")
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._anchor_market_ms = float(start_ms)
        self._anchor_wall = monotonic()
        self.speed = float(speed)
        self.paused = paused  # a paused clock reads start_ms exactly until resume()

    def now_ms(self) -> int:
        with self._lock:
            if self.paused:
                return round(self._anchor_market_ms)
            elapsed = self._monotonic() - self._anchor_wall
            # Round, not truncate: 0.3 s x 15 is 4499.999... in floating point, and means 4500 ms.
            return round(self._anchor_market_ms + elapsed * 1000.0 * self.speed)

    def _reanchor(self) -> None:
        now = self._monotonic()
        if not self.paused:
            self._anchor_market_ms += (now - self._anchor_wall) * 1000.0 * self.speed
        self._anchor_wall = now

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be > 0, got {speed}")
        with self._lock:
            self._reanchor()
            self.speed = float(speed)

    def pause(self) -> None:
        with self._lock:
            self._reanchor()
            self.paused = True

    def resume(self) -> None:
        with self._lock:
            self._reanchor()
            self.paused = False


class ManualClock:
    """A clock that moves only when told to: for tests, benchmarks and as-fast-as-possible runs."""

    def __init__(self, start_ms: int = 0, speed: float = 1.0):
        self._now = int(start_ms)
        self.speed = speed

    def now_ms(self) -> int:
        return self._now

    def set(self, ts_ms: int) -> None:
        if ts_ms < self._now:
            raise ValueError(f"a clock never goes back: {ts_ms} < {self._now}")
        self._now = int(ts_ms)

    def advance(self, ms: int) -> None:
        self.set(self._now + ms)
